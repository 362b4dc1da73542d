"""The physical scale a slide model was trained at: checkpoint metadata ``"training_scale"``.

A deformed-downsampling model (Jin et al.) squeezes a whole slide into an ``h×w`` grid of samples,
so the tissue it learned to read is seen at a physical spacing between samples, in µm per sample,
that depends on the slide's physical size and the grid, not on its pixels. A slide checkpoint
records that spacing so inference can choose a grid that shows a new slide at the same scale
(:mod:`napari_m2mrf.inference.slide_scale`)::

    "training_scale": {
      "pixel_size_um": [min, max],        # µm per level-0 pixel of the training slides
      "um_per_sample": S,                 # mean spacing between samples (µm), mean over the slides
      "um_per_sample_range": [min, max],  # over the slides (widened by a random-rescale augmentation)
      "slides": n                         # how many training slides it was measured on
    }

The mean spacing of an ``h×w`` grid over a ``Y×X`` µm region is ``sqrt(Y·X / (h·w))`` µm (the
geometric mean of the spacings along y and x; :func:`mean_spacing_um`). A checkpoint without the
entry (trained before it existed, or on slides without a pixel size) loads as before; inference then
keeps the checkpoint's own grid. Light to import (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METADATA_KEY = "training_scale"
MAX_UM = 1e6  # plausibility limit for every length in the entry (1 m)


@dataclass(frozen=True)
class TrainingScale:
    """The entry above: ``pixel_size_um`` and ``um_per_sample_range`` as ``(min, max)`` µm,
    ``um_per_sample`` µm, ``slides`` a count."""

    pixel_size_um: tuple[float, float]
    um_per_sample: float
    um_per_sample_range: tuple[float, float]
    slides: int

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored under :data:`METADATA_KEY`."""
        return {"pixel_size_um": list(self.pixel_size_um), "um_per_sample": self.um_per_sample,
                "um_per_sample_range": list(self.um_per_sample_range), "slides": self.slides}

    @classmethod
    def from_json(cls, value: Any) -> TrainingScale:
        """Parse the stored entry; ``ValueError`` naming the field when it is malformed."""
        if not isinstance(value, Mapping):
            raise ValueError(f"must be an object, got {value!r}")
        pixel = _span(value.get("pixel_size_um"), "pixel_size_um")
        spread = _span(value.get("um_per_sample_range"), "um_per_sample_range")
        mean = value.get("um_per_sample")
        if not _length(mean) or not spread[0] <= mean <= spread[1]:
            raise ValueError(f"um_per_sample must be a length in µm within um_per_sample_range, got {mean!r}")
        slides = value.get("slides")
        if not isinstance(slides, int) or isinstance(slides, bool) or slides < 1:
            raise ValueError(f"slides must be a count ≥ 1, got {slides!r}")
        return cls(pixel, float(mean), spread, slides)


def _length(value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and 0 < value <= MAX_UM


def _span(value: Any, key: str) -> tuple[float, float]:
    pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(_length(v) for v in value)
    if not pair or value[0] > value[1]:
        raise ValueError(f"{key} must be [min, max] lengths in µm, got {value!r}")
    return float(value[0]), float(value[1])


def training_scale(meta: Mapping[str, Any]) -> TrainingScale | None:
    """The training scale recorded in checkpoint metadata ``meta`` (validated on load), None when absent."""
    value = meta.get(METADATA_KEY)
    return None if value is None else TrainingScale.from_json(value)


def mean_spacing_um(extent_um: tuple[float, float], grid: tuple[int, int]) -> float:
    """Mean spacing in µm between the samples of a ``grid`` ``(h, w)`` spread over ``extent_um`` ``(Y, X)`` µm."""
    return math.sqrt(extent_um[0] * extent_um[1] / (grid[0] * grid[1]))
