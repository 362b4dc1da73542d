"""The sample grid of a slide run, chosen so the model sees the slide at the scale it was trained at.

Deformed downsampling squeezes the whole slide into an ``h×w`` grid, so the mean physical spacing
between samples is ``sqrt(Y·X / (h·w))`` µm for a slide of ``Y×X`` µm (level-0 pixels times the
slide's µm per pixel). A checkpoint that records its training scale
(:class:`~napari_m2mrf.models.training_scale.TrainingScale`, mean ``S`` µm per sample) gets, on a
slide whose µm per pixel is known, the grid ``h = round(Y / S)``, ``w = round(X / S)``: the same µm
per sample along both axes as in training. Each side is clamped to between ``MIN_FACTOR`` and
``MAX_FACTOR`` times the checkpoint's own grid (``(h₀, w₀)``, the sample budget it was trained with),
so the budget, and with it the run's time and memory, stays within ``1/4…4×`` of the default.

Otherwise the checkpoint's grid is kept: an output size given by the user (or by a steered rerun of
an earlier run) wins, and a slide without a pixel size or a checkpoint without a training scale
keeps ``(h₀, w₀)`` as before. :class:`GridChoice` says which case applied, in the run's provenance
(:meth:`GridChoice.provenance`), in the log, and — only when the µm per sample used is more than
``FAR_OFF`` times off the training scale — in a one-line notice for the user (:meth:`GridChoice.notice`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from napari_m2mrf.models.training_scale import TrainingScale, mean_spacing_um

logger = logging.getLogger(__name__)

MIN_FACTOR = 0.5  # smallest grid side, times the checkpoint's
MAX_FACTOR = 2.0  # largest grid side, times the checkpoint's
FAR_OFF = 2.0  # µm per sample more than this factor off the training scale: the user is told

MATCHED, CLAMPED, EXPLICIT, DEFAULT = "matched", "clamped", "explicit", "default"


@dataclass(frozen=True)
class GridChoice:
    """The grid a run samples the slide with and why.

    ``output_size``: ``(h, w)`` samples; ``default_size``: the checkpoint's ``(h₀, w₀)``; ``choice``:
    ``"matched"`` (µm per sample matched to training), ``"clamped"`` (matched, a side held at the
    limit), ``"explicit"`` (given by the caller) or ``"default"`` (the checkpoint's; ``reason`` says
    why); ``slide_pixel_size_um``: level-0 µm per pixel (None: unknown); ``um_per_sample``: mean µm
    between samples of this grid (None: unknown); ``training``: the checkpoint's training scale.
    """

    output_size: tuple[int, int]
    default_size: tuple[int, int]
    choice: str
    reason: str
    slide_pixel_size_um: float | None
    um_per_sample: float | None
    training: TrainingScale | None

    @property
    def off_training(self) -> float | None:
        """How many times the µm per sample used is off the training scale (≥ 1), None when unknown."""
        if self.um_per_sample is None or self.training is None:
            return None
        ratio = self.um_per_sample / self.training.um_per_sample
        return max(ratio, 1.0 / ratio)

    def notice(self) -> str | None:
        """One line for the user when the scale used is more than ``FAR_OFF`` times off training, else None."""
        off = self.off_training
        if off is None or off <= FAR_OFF:
            return None
        assert self.um_per_sample is not None and self.training is not None
        side = "coarser" if self.um_per_sample > self.training.um_per_sample else "finer"
        return (f"slide sampled at {self.um_per_sample:.3g} µm per sample, {off:.1f}× {side} than the "
                f"{self.training.um_per_sample:.3g} µm the model was trained at ({self.reason}); "
                "its labels may be unreliable")

    def provenance(self) -> dict[str, Any]:
        """What a run records about its grid (JSON)."""
        training = self.training
        return {
            "slide_pixel_size_um": self.slide_pixel_size_um,
            "um_per_sample": self.um_per_sample,
            "training_um_per_sample": None if training is None else training.um_per_sample,
            "training_um_per_sample_range": None if training is None else list(training.um_per_sample_range),
            "output_size": list(self.output_size),
            "default_output_size": list(self.default_size),
            "choice": self.choice,
            "reason": self.reason,
        }


def _clamp(side: float, default: int) -> int:
    return min(max(round(side), math.ceil(MIN_FACTOR * default)), math.floor(MAX_FACTOR * default))


def choose_grid(
    default_size: tuple[int, int],
    image_shape: tuple[int, int],
    pixel_size_um: float | None,
    training: TrainingScale | None,
    requested: tuple[int, int] | None = None,
) -> GridChoice:
    """The grid for a slide of ``image_shape`` ``(Y, X)`` level-0 pixels of ``pixel_size_um`` µm, run
    with a checkpoint whose grid is ``default_size`` and whose training scale is ``training``;
    ``requested``: an output size the caller chose (it wins). See the module docstring."""
    default_size = (int(default_size[0]), int(default_size[1]))
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        logger.warning("slide pixel size %r µm is not a positive number: treated as unknown", pixel_size_um)
        pixel_size_um = None
    extent = None if pixel_size_um is None else (image_shape[0] * pixel_size_um, image_shape[1] * pixel_size_um)

    def chosen(size: tuple[int, int], choice: str, reason: str) -> GridChoice:
        spacing = None if extent is None else mean_spacing_um(extent, size)
        grid = GridChoice(size, default_size, choice, reason, pixel_size_um, spacing, training)
        logger.info("slide grid %d×%d (%s: %s); %s µm per sample, trained at %s", *size, choice, reason,
                    "unknown" if spacing is None else f"{spacing:.3g}",
                    "unknown" if training is None else f"{training.um_per_sample:.3g}")
        return grid

    if requested is not None:
        return chosen((int(requested[0]), int(requested[1])), EXPLICIT, "output size given")
    if extent is None:
        return chosen(default_size, DEFAULT, "the slide's pixel size is unknown: the checkpoint's grid")
    if training is None:
        return chosen(default_size, DEFAULT, "the checkpoint records no training scale: its own grid")
    target = training.um_per_sample
    wanted = (extent[0] / target, extent[1] / target)
    size = (_clamp(wanted[0], default_size[0]), _clamp(wanted[1], default_size[1]))
    if size != (round(wanted[0]), round(wanted[1])):
        return chosen(size, CLAMPED, f"{target:.3g} µm per sample wants {wanted[0]:.0f}×{wanted[1]:.0f} samples; "
                      f"each side kept within {MIN_FACTOR:g}–{MAX_FACTOR:g}× the checkpoint's "
                      f"{default_size[0]}×{default_size[1]}")
    return chosen(size, MATCHED, f"{target:.3g} µm per sample, as in training")
