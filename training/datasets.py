"""Training samples: records of image and mask files, read into aligned arrays and tensors.

A :class:`SampleRecord` names one image and its ground truth, either per-class binary masks
(IDRiD, DDR, plain folders: a missing class file means "no lesion of that class") or one label
image whose values are class labels (pairs exported from napari image/labels layers); a
:class:`~training.slide_samples.SlideRecord` names a slide with a label pyramid. Where the
records come from is :mod:`training.sources`; this module only reads them (masks through
``napari_m2mrf.io.datasets.read_binary_mask``).

Targets are built for the loss: multi-label (sigmoid losses) gives (K, Y, X) binary masks, one
per class in ``classes`` order, built from each class's mask directly so a pixel may belong to
several lesions; multi-class (softmax losses) gives a (1, Y, X) map of class indices, 0 =
background and ``k + 1`` = ``classes[k]`` (later classes win where masks overlap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from napari_m2mrf.classes import LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.photographs import read_image
from napari_m2mrf.io.datasets import read_binary_mask
from napari_m2mrf.models.preprocess import to_normalised_tensor
from training.slide_samples import SlideRecord, load_slide_sample
from training.transforms import Compose, ResizeToFit, Sample


@dataclass(frozen=True)
class SampleRecord:
    """One training image: ``image`` path, and ``masks`` (class code → binary mask path) or
    ``labels`` (path of an (H, W) integer label image, values = ``LesionClass.label``)."""

    image: Path
    masks: Mapping[str, Path] = field(default_factory=dict)
    labels: Path | None = None


@dataclass(frozen=True)
class SampleKey:
    """What the batch sampler hands a dataset: the record ``index`` and the entropy of the
    sample's augmentation generator (``(seed, iteration, slot)``)."""

    index: int
    entropy: tuple[int, ...]


def read_label_image(path: Path) -> np.ndarray:
    """An integer label image (H, W) from ``.npy``, TIFF or PNG/BMP/GIF; ``UserError`` otherwise."""
    if not path.is_file():
        raise UserError(f"{path}: no such label file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as picture:
                data = np.asarray(picture)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable label image ({exc})") from None
    if data.ndim != 2 or data.dtype.kind not in "uib":
        raise UserError(f"{path}: expected a 2-D integer label image, found {data.dtype} of shape {data.shape}")
    return data


def load_sample(record: SampleRecord | SlideRecord, classes: Sequence[LesionClass], multilabel: bool) -> Sample:
    """Read ``record`` at full resolution (a slide at its chosen level): image (Y, X, 3) uint8 and
    the target (see module doc)."""
    if isinstance(record, SlideRecord):
        sample = load_slide_sample(record, classes)
        if not multilabel:
            return sample
        masks = np.stack([sample.target[0] == k + 1 for k in range(len(classes))]).astype(np.uint8)
        return Sample(sample.image, masks)
    image = read_image(record.image).data
    shape = image.shape[:2]
    masks = np.zeros((len(classes), *shape), dtype=bool)
    if record.labels is not None:
        labels = read_label_image(record.labels)
        _check_shape(record.labels, labels.shape, shape, record.image)
        for k, lesion in enumerate(classes):
            masks[k] = labels == lesion.label
    for k, lesion in enumerate(classes):
        path = record.masks.get(lesion.code)
        if path is not None:
            mask = read_binary_mask(path)
            _check_shape(path, mask.shape, shape, record.image)
            masks[k] |= mask
    if multilabel:
        return Sample(image, masks.astype(np.uint8))
    indices = np.zeros((1, *shape), dtype=np.uint8)
    for k in range(len(classes)):
        indices[0][masks[k]] = k + 1
    return Sample(image, indices)


def _check_shape(path: Path, found: tuple[int, ...], expected: tuple[int, ...], image: Path) -> None:
    if tuple(found) != tuple(expected):
        raise UserError(f"{path}: mask is {found[0]}×{found[1]} but its image {image.name} is {expected[0]}×{expected[1]}")


def to_tensors(sample: Sample, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised image (3, Y, X) float32 (``(pixel - mean) / std`` on the 0-255 scale) and the
    target (K, Y, X) as uint8 (masks or class indices). The normalisation is inference's
    (``napari_m2mrf.models.preprocess.to_normalised_tensor``)."""
    image = to_normalised_tensor(sample.image, mean, std)[0]
    return image, torch.from_numpy(np.require(sample.target, requirements=["C", "W"]))


class TrainingDataset(torch.utils.data.Dataset):
    """Augmented training samples indexed by :class:`SampleKey`.

    ``dataset[key]`` → ``(image (3, h, w) float32 normalised, target (K, h, w) uint8)``. Each
    record is read once, fitted into ``fit_box`` (keep ratio) and, with ``cache``, kept in memory
    (about 4 MB per 1440×956 image); then ``transform`` runs with a generator seeded from the key.
    """

    def __init__(
        self,
        records: Sequence[SampleRecord | SlideRecord],
        classes: Sequence[LesionClass],
        transform: Compose,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        multilabel: bool = True,
        fit_box: Sequence[int] = (),
        cache: bool = True,
    ) -> None:
        if not records:
            raise UserError("the training set is empty: no images were found")
        self.records = list(records)
        self.classes = tuple(classes)
        self.transform = transform
        self.mean, self.std = list(mean), list(std)
        self.multilabel = multilabel
        self.fit = ResizeToFit(fit_box) if fit_box else None
        self.cache = cache
        self._cached: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.records)

    def base_sample(self, index: int) -> Sample:
        """Record ``index`` read and fitted (not augmented)."""
        if index in self._cached:
            return self._cached[index]
        sample = load_sample(self.records[index], self.classes, self.multilabel)
        if self.fit is not None:
            sample = self.fit(sample, np.random.default_rng(0))
        if self.cache:
            self._cached[index] = sample
        return sample

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(np.random.SeedSequence(list(key.entropy)))
        sample = self.transform(self.base_sample(key.index), rng)
        return to_tensors(sample, self.mean, self.std)
