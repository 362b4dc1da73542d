"""Training transforms that move an image and its masks together (numpy + Pillow, no torch).

A :class:`Sample` holds ``image`` (Y, X, 3) uint8 RGB and ``target`` (K, Y, X) uint8: K binary
lesion masks (multi-label), or K = 1 class-index map (multi-class). Geometric transforms resample
the image bilinearly and the target by nearest neighbour on the same pixel-centre grid, so masks
stay on their lesions. Every random transform draws from the ``numpy.random.Generator`` it is
given, so a sample's augmentation is a pure function of its seed (exact resume, DDP equivalence).

Pipeline from the M2MRF paper (§4.1) and its official code: rotation by 90/180/270°, horizontal
and vertical flips, keep-ratio resize to 1440×960, random rescale 0.5-2.0, random crop 960×1440
(zero padded), photometric jitter. Jin et al.: left-right flips only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from training.config import AugmentConfig


@dataclass
class Sample:
    """``image`` (Y, X, 3) uint8 RGB; ``target`` (K, Y, X) uint8 masks or class indices."""

    image: np.ndarray
    target: np.ndarray


class Transform(Protocol):
    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample: ...


def resize_sample(sample: Sample, height: int, width: int) -> Sample:
    """Resize to ``height`` × ``width`` pixels: image bilinear, target nearest."""
    if sample.image.shape[:2] == (height, width):
        return sample
    image = np.array(Image.fromarray(sample.image).resize((width, height), Image.Resampling.BILINEAR))
    target = np.stack(
        [np.array(Image.fromarray(channel).resize((width, height), Image.Resampling.NEAREST)) for channel in sample.target]
    )
    return Sample(image, target)


def fit_size(height: int, width: int, box: Sequence[int]) -> tuple[int, int]:
    """Keep-ratio size that fits ``height`` × ``width`` into ``box`` = (h, w), rounded as mmcv
    does (``int(side · scale + 0.5)``): 2848×4288 into 960×1440 → 956×1440."""
    scale = min(box[0] / height, box[1] / width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclass
class ResizeToFit:
    """Keep-ratio resize into ``box`` = (h, w) (deterministic)."""

    box: Sequence[int]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return resize_sample(sample, *fit_size(*sample.image.shape[:2], self.box))


@dataclass
class RandomRescale:
    """Rescale both sides by one factor drawn uniformly from [``low``, ``high``]."""

    low: float
    high: float

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        factor = rng.uniform(self.low, self.high)
        height, width = sample.image.shape[:2]
        return resize_sample(sample, max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5)))


@dataclass
class RandomCrop:
    """A random ``height`` × ``width`` window; smaller images are zero-padded at the bottom/right
    (image 0, target 0 = background), as the official pipeline pads to the crop size."""

    height: int
    width: int

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        rows, cols = sample.image.shape[:2]
        top = int(rng.integers(0, max(rows - self.height, 0) + 1))
        left = int(rng.integers(0, max(cols - self.width, 0) + 1))
        return cut_window(sample, top, left, self.height, self.width)


def cut_window(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """The ``height`` × ``width`` window at (``top``, ``left``), zero-padded at the bottom/right
    where it passes the image's edge (image 0, target 0 = background)."""
    image = sample.image[top : top + height, left : left + width]
    target = sample.target[:, top : top + height, left : left + width]
    pad_rows, pad_cols = height - image.shape[0], width - image.shape[1]
    if pad_rows or pad_cols:
        image = np.pad(image, ((0, pad_rows), (0, pad_cols), (0, 0)))
        target = np.pad(target, ((0, 0), (0, pad_rows), (0, pad_cols)))
    return Sample(np.ascontiguousarray(image), np.ascontiguousarray(target))


@dataclass
class LesionCentredCrop:
    """A ``height`` × ``width`` window that, with probability ``probability``, contains a lesion
    pixel; otherwise a :class:`RandomCrop`.

    The lesion class is drawn uniformly among the classes present in the sample (so a
    microaneurysm, a few dozen pixels of a 1440×956 image, is aimed at as often as exudates that
    cover thousands), then one of its pixels uniformly, and the window is placed so that this
    pixel falls anywhere inside it (uniform offset: the network does not learn that lesions sit
    in the middle). Works on (K, Y, X) masks and on (1, Y, X) class-index maps (class ``k`` is
    value ``k + 1``).
    """

    height: int
    width: int
    probability: float

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        crop = RandomCrop(self.height, self.width)
        if rng.random() >= self.probability:
            return crop(sample, rng)
        target = sample.target
        per_class = list(target) if target.shape[0] > 1 else [target[0] == k for k in np.unique(target[0]) if k]
        present = [mask for mask in per_class if mask.any()]
        if not present:
            return crop(sample, rng)
        positives = np.flatnonzero(present[int(rng.integers(len(present)))])
        row, col = np.unravel_index(positives[int(rng.integers(positives.size))], target.shape[1:])
        rows, cols = target.shape[1:]
        top = _window_start(int(row), self.height, rows, rng)
        left = _window_start(int(col), self.width, cols, rng)
        return cut_window(sample, top, left, self.height, self.width)


def _window_start(position: int, size: int, extent: int, rng: np.random.Generator) -> int:
    """First index of a ``size``-long window inside ``[0, extent)`` that contains ``position``,
    uniformly among those possible (0 when the extent is shorter than the window)."""
    low, high = max(position - size + 1, 0), min(position, max(extent - size, 0))
    return int(rng.integers(low, high + 1)) if high >= low else 0


class RandomRotate90:
    """Rotate by 0, 90, 180 or 270 degrees (counter-clockwise), each with probability 1/4."""

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        turns = int(rng.integers(0, 4))
        if turns == 0:
            return sample
        return Sample(
            np.ascontiguousarray(np.rot90(sample.image, turns, axes=(0, 1))),
            np.ascontiguousarray(np.rot90(sample.target, turns, axes=(1, 2))),
        )


@dataclass
class RandomFlip:
    """Mirror left-right with probability ``horizontal`` and top-bottom with ``vertical``."""

    horizontal: float
    vertical: float

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        image, target = sample.image, sample.target
        if rng.random() < self.horizontal:
            image, target = image[:, ::-1], target[:, :, ::-1]
        if rng.random() < self.vertical:
            image, target = image[::-1], target[:, ::-1]
        return Sample(np.ascontiguousarray(image), np.ascontiguousarray(target))


# RGB -> YIQ and back: a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


@dataclass
class PhotometricJitter:
    """Colour jitter of the image only, each step applied with probability 1/2 (the ranges of
    mmseg's photometric distortion used by the official M2MRF code): brightness ± ``brightness``
    (0-255 scale), contrast × U(``contrast``), saturation × U(``saturation``) about the luma,
    hue rotated by ± ``hue_degrees``. The target is untouched."""

    brightness: float = 32.0
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue_degrees: float = 36.0

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        pixels = sample.image.astype(np.float32)
        if rng.random() < 0.5:
            pixels += rng.uniform(-self.brightness, self.brightness)
        if rng.random() < 0.5:
            pixels *= rng.uniform(*self.contrast)
        if rng.random() < 0.5:
            luma = pixels @ _RGB_TO_YIQ[0]
            pixels = luma[..., None] + rng.uniform(*self.saturation) * (pixels - luma[..., None])
        if rng.random() < 0.5:
            angle = math.radians(rng.uniform(-self.hue_degrees, self.hue_degrees))
            cos, sin = math.cos(angle), math.sin(angle)
            rotation = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], dtype=np.float32)
            pixels = pixels @ (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).T
        image = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
        return Sample(image, sample.target)


@dataclass
class Compose:
    """Apply ``transforms`` in order with one shared generator."""

    transforms: Sequence[Transform]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample


def training_transform(config: AugmentConfig) -> Compose:
    """The random training pipeline, each step only when the config turns it on: rotation and
    flips first (the official code augments orientation offline, before resizing, so a rotated
    image is fitted into the box in its new orientation), then keep-ratio fit into
    ``config.resize`` (a no-op for an image a dataset has already fitted), rescale, crop, jitter."""
    steps: list[Transform] = []
    if config.rotate90:
        steps.append(RandomRotate90())
    if config.hflip or config.vflip:
        steps.append(RandomFlip(config.hflip, config.vflip))
    if config.resize:
        steps.append(ResizeToFit(config.resize))
    if tuple(config.scale_range) != (1.0, 1.0):
        steps.append(RandomRescale(*config.scale_range))
    if config.crop and config.lesion_crop:
        steps.append(LesionCentredCrop(*config.crop, config.lesion_crop))
    elif config.crop:
        steps.append(RandomCrop(*config.crop))
    if config.photometric:
        steps.append(PhotometricJitter())
    return Compose(steps)
