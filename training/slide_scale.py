"""The physical scale a deformed-downsampling model is trained at, from its training slides.

The trainer reads each training slide whole at the level :func:`training.slide_samples.training_level`
picks, fits it into ``augment.resize`` (keep ratio), rescales it by a factor ``s`` from
``augment.scale_range``, crops ``augment.crop`` (zero padding where the image is smaller), and the
deformed sampler spreads ``deform.output_size`` ``(h, w)`` samples over that network input. A slide
of ``Y×X`` µm (level-0 pixels times its µm per pixel) fitted to ``f_y×f_x`` pixels is therefore seen at

    µm per input pixel   u = sqrt(Y·X / (f_y·f_x)) / s
    µm per sample        u · sqrt(c_y·c_x / (h·w))

where ``c`` is the crop, or the rescaled image itself without one (then the samples cover the whole
slide whatever ``s``). :func:`training_scale` gives, over the training slides, the mean of that
spacing at the geometric mean of ``scale_range`` and its range at the range's ends, with the slides'
µm per pixel: the checkpoint's ``training_scale`` (:mod:`napari_m2mrf.models.training_scale`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_m2mrf.io.slides import open_pyramid
from napari_m2mrf.models.training_scale import TrainingScale
from training.config import AugmentConfig, TrainingConfig
from training.slide_samples import training_level
from training.transforms import fit_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideGeometry:
    """What the scale of a training slide depends on: its levels' ``(Y_k, X_k)`` pixels, level 0 first,
    and its level-0 µm per pixel (None when the slide does not say)."""

    level_shapes: tuple[tuple[int, int], ...]
    pixel_size_um: float | None


def slide_geometry(path: str | os.PathLike[str]) -> SlideGeometry:
    """The geometry of the slide at ``path``, from its header (no pixels read)."""
    pyramid = open_pyramid(Path(path))
    shapes = tuple((int(level.shape[-2]), int(level.shape[-1])) for level in pyramid.levels)
    return SlideGeometry(shapes, pyramid.pixel_size_um)


def sample_spacing_um(
    geometry: SlideGeometry, level_size: int, augment: AugmentConfig, output_size: Sequence[int], rescale: float = 1.0
) -> float:
    """Mean µm between the samples the model sees of a slide of ``geometry`` (with a known pixel size),
    read at the level for ``level_size``, transformed as ``augment`` says with rescale factor
    ``rescale``, sampled at ``output_size`` ``(h, w)``; see the module docstring."""
    assert geometry.pixel_size_um is not None
    (y0, x0), pixel = geometry.level_shapes[0], geometry.pixel_size_um
    level = geometry.level_shapes[training_level([max(shape) for shape in geometry.level_shapes], level_size)]
    fitted = fit_size(*level, augment.resize) if augment.resize else level
    um_per_pixel = math.sqrt(y0 * pixel * x0 * pixel / (fitted[0] * fitted[1])) / rescale
    covered = augment.crop or (fitted[0] * rescale, fitted[1] * rescale)
    return um_per_pixel * math.sqrt(covered[0] * covered[1] / (output_size[0] * output_size[1]))


def training_scale(
    config: TrainingConfig, geometry: Callable[[Path], SlideGeometry] = slide_geometry
) -> TrainingScale | None:
    """The training scale of a deformed-downsampling run on slides (``geometry`` reads each training
    slide's; default: its header). None, with a log line, when the run is not one or a training slide
    has no pixel size."""
    data, deform = config.data, config.deform
    if not deform.enabled or data.kind != "slides" or not data.slides:
        return None
    slides = [geometry(Path(path).expanduser()) for path in data.slides]
    unknown = [path for path, slide in zip(data.slides, slides) if slide.pixel_size_um is None]
    if unknown:
        logger.warning("no training scale recorded: %d training slides have no pixel size (%s)", len(unknown),
                       unknown[0])
        return None
    low, high = (float(v) for v in config.augment.scale_range)

    def spacings(rescale: float) -> list[float]:
        return [sample_spacing_um(slide, data.slide_level_size, config.augment, deform.output_size, rescale)
                for slide in slides]

    middle, finest, coarsest = spacings(math.sqrt(low * high)), min(spacings(high)), max(spacings(low))
    scale = TrainingScale(
        pixel_size_um=(min(s.pixel_size_um for s in slides), max(s.pixel_size_um for s in slides)),
        um_per_sample=min(max(sum(middle) / len(middle), finest), coarsest),  # within the range despite rounding
        um_per_sample_range=(finest, coarsest),
        slides=len(slides),
    )
    logger.info("training scale: %.3g µm per sample (%.3g–%.3g) over %d slides of %.3g–%.3g µm per pixel",
                scale.um_per_sample, *scale.um_per_sample_range, scale.slides, *scale.pixel_size_um)
    return scale
