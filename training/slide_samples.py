"""Slides with label pyramids as training samples for deformed-downsampling models (Jin et al.).

A slide is read whole at one pyramid level (the paper feeds the whole image to the deformation
module): the coarsest level whose long side is at least ``level_size`` pixels, through
``napari_m2mrf.io.slides`` (OME-Zarr, OME-TIFF, SVS, ...). Its label pyramid gives the class map
at the same level (resized by nearest neighbour if the label pyramid has no level of that size)
and the classes' names and colours.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from napari_m2mrf.classes import LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.pyramid import LabelPyramid
from napari_m2mrf.io.slides import open_label_pyramids, open_pyramid
from training.transforms import Sample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideRecord:
    """A slide file, the name of its label pyramid, and the long side of the level to read."""

    path: Path
    labels: str
    level_size: int


def label_pyramid(path: Path, name: str) -> LabelPyramid:
    """The label pyramid ``name`` stored with the slide at ``path``; ``UserError`` if absent."""
    if not path.exists():
        raise UserError(f"{path}: no such slide")
    pyramids = {p.name: p for p in open_label_pyramids(path)}
    if name not in pyramids:
        found = ", ".join(pyramids) or "none"
        raise UserError(f"{path}: no label pyramid {name!r} (found: {found})")
    return pyramids[name]


def slide_classes(record: SlideRecord, names: Sequence[str]) -> tuple[LesionClass, ...]:
    """The classes ``names`` (channel order) with label values and colours from the label pyramid."""
    pyramid = label_pyramid(record.path, record.labels)
    by_name = {name: label for label, name in pyramid.names.items()}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise UserError(
            f"{record.path}: label pyramid {record.labels!r} has no class {missing[0]!r} "
            f"(classes: {', '.join(pyramid.names.values())})"
        )
    return tuple(
        LesionClass(by_name[name], name, name, tuple(pyramid.colors.get(by_name[name], (1.0, 1.0, 1.0, 1.0))))
        for name in names
    )


def training_level(long_sides: Sequence[int], level_size: int) -> int:
    """The level read for training: the coarsest whose long side (``long_sides``, px, level 0 first) is at
    least ``level_size`` px (level 0 when none is)."""
    return max((k for k, side in enumerate(long_sides) if side >= level_size), default=0)


def load_slide_sample(record: SlideRecord, classes: Sequence[LesionClass]) -> Sample:
    """The slide at the chosen level: image (Y, X, 3) uint8, target (1, Y, X) class indices
    (0 background, ``k + 1`` = ``classes[k]``; other label values become background)."""
    pyramid = open_pyramid(record.path)
    sides = [max(level.shape[1:]) for level in pyramid.levels]
    index = training_level(sides, record.level_size)
    logger.info(
        "%s: training on level %d of %d (%s px, downsample %g; wanted a long side >= %d)",
        record.path, index, len(sides), "×".join(map(str, pyramid.levels[index].shape[1:])),
        pyramid.downsamples[index], record.level_size,
    )
    image = np.moveaxis(np.asarray(pyramid.levels[index][:]), 0, -1)
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise UserError(f"{record.path}: expected an 8-bit RGB slide, found {image.dtype} with {image.shape[-1]} channels")
    labels = _labels_at(label_pyramid(record.path, record.labels), pyramid.downsamples[index], image.shape[:2])
    indices = np.zeros(labels.shape, np.uint8)
    for k, lesion in enumerate(classes):
        indices[labels == lesion.label] = k + 1
    return Sample(np.ascontiguousarray(image), indices[None])


def _labels_at(pyramid: LabelPyramid, downsample: float, shape: tuple[int, int]) -> np.ndarray:
    level = min(range(len(pyramid.levels)), key=lambda k: abs(pyramid.downsamples[k] - downsample))
    labels = np.asarray(pyramid.levels[level][:])
    if labels.shape != tuple(shape):
        resized = Image.fromarray(labels).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
        labels = np.asarray(resized)
    return labels
