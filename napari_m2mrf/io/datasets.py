"""Fundus dataset layouts: finding, reading and checking the ground truth of an image.

Three layouts are recognised from an image's path:

* **IDRiD**: ``<root>/1. Original Images/<split>/<stem>.jpg`` with masks
  ``<root>/2. All Segmentation Groundtruths/<split>/<n>. <Class>/<stem>_<CODE>.tif`` (1-bit palette
  TIFFs, read by :mod:`~napari_m2mrf.io.idrid_masks`; SE exists only for some images);
* **DDR**: ``<root>/<split>/image/<stem>.jpg`` with ``<root>/<split>/label/<CODE>/<stem>.tif``;
* **folder**: ``<root>/images/<stem>.<ext>`` with ``<root>/masks/<CODE>/<stem>.<ext>``.

Per-class masks become one label map with the values of ``FUNDUS_CLASSES`` (1 EX, 2 HE, 3 SE,
4 MA); where lesions overlap the later class in that order wins (MA over SE over HE over EX).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES, LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.idrid_masks import IDRID_GROUNDTRUTH_FOLDER, IDRID_IMAGES_FOLDER, idrid_mask_path, read_idrid_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DDR_SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class GroundTruthFiles:
    """Where an image's ground truth lives: ``layout`` (idrid/ddr/folder), mask file per class code.

    ``masks`` lists only the files that exist; ``searched`` the folder(s) that were looked in.
    """

    layout: str
    image: Path
    masks: dict[str, Path]
    searched: Path


def _layout_of(image: Path) -> tuple[str, Path, str] | None:
    """``(layout, root, split)`` for an image path in a known layout, else None."""
    parent, grandparent = image.parent, image.parent.parent
    if grandparent.name == IDRID_IMAGES_FOLDER:
        return "idrid", grandparent.parent, parent.name
    if parent.name == "image":
        return "ddr", grandparent, grandparent.name
    if parent.name == "images":
        return "folder", grandparent, ""
    return None


def find_ground_truth(
    image: str | os.PathLike[str], classes: tuple[LesionClass, ...] = FUNDUS_CLASSES
) -> GroundTruthFiles | None:
    """The ground-truth files of ``image`` if it sits in a known layout (None otherwise)."""
    image = Path(image)
    found = _layout_of(image)
    if found is None:
        return None
    layout, root, split = found
    masks: dict[str, Path] = {}
    for cls in classes:
        candidate = _mask_candidate(layout, root, split, image.stem, cls.code)
        if candidate is not None:
            masks[cls.code] = candidate
    searched = {
        "idrid": root / IDRID_GROUNDTRUTH_FOLDER / split,
        "ddr": root / "label",
        "folder": root / "masks",
    }[layout]
    return GroundTruthFiles(layout, image, masks, searched)


def _mask_candidate(layout: str, root: Path, split: str, stem: str, code: str) -> Path | None:
    if layout == "idrid":
        path = idrid_mask_path(root, split, stem, code)
        return path if path.is_file() else None
    folder = root / ("label" if layout == "ddr" else "masks") / code
    for suffix in (".tif", ".tiff", ".png", ".bmp", ".gif", ".jpg"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def read_binary_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A lesion mask file as bool ``(H, W)`` (non-zero = lesion); any image format, any channels."""
    from napari_m2mrf.io.formats import sniff_format

    path = Path(path)
    if sniff_format(path) == "tiff":
        try:
            return read_idrid_mask(path)
        except UserError as exc:
            if "single-channel" not in str(exc):
                raise
    from napari_m2mrf.io.fundus import read_image

    return read_image(path, min_side=1).data.max(axis=2) > 0


def load_ground_truth(
    files: GroundTruthFiles, shape: tuple[int, int], classes: tuple[LesionClass, ...] = FUNDUS_CLASSES
) -> np.ndarray:
    """The label map ``(H, W)`` uint8 of ``files``; ``UserError`` naming a mask whose size is not ``shape``."""
    labels = np.zeros(shape, np.uint8)
    for cls in classes:
        path = files.masks.get(cls.code)
        if path is None:
            continue
        mask = read_binary_mask(path)
        if mask.shape != tuple(shape):
            raise UserError(
                f"{path}: the mask is {mask.shape[1]}×{mask.shape[0]} pixels but the image {files.image.name} "
                f"is {shape[1]}×{shape[0]}"
            )
        labels[mask] = cls.label
    return labels


def labels_to_masks(labels: np.ndarray, classes: tuple[LesionClass, ...] = FUNDUS_CLASSES) -> dict[str, np.ndarray]:
    """Per class code, the bool mask ``labels == class.label``."""
    return {cls.code: np.asarray(labels) == cls.label for cls in classes}


@dataclass(frozen=True)
class DatasetSample:
    """One image of a dataset with its ground-truth files and split name."""

    image: Path
    split: str
    ground_truth: GroundTruthFiles


def list_dataset(root: str | os.PathLike[str], classes: tuple[LesionClass, ...] = FUNDUS_CLASSES) -> list[DatasetSample]:
    """Every image of an IDRiD, DDR or plain-folder dataset under ``root`` with its masks.

    Raises ``UserError`` when ``root`` is in none of the layouts, holds no images, or an image has
    no mask of any class (naming the image and where masks were looked for).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such dataset folder")
    images = _dataset_images(root)
    if not images:
        raise UserError(
            f"{root}: no images found in an IDRiD ('{IDRID_IMAGES_FOLDER}/<split>/'), DDR ('<split>/image/') "
            "or folder ('images/') layout"
        )
    samples = []
    for image in images:
        files = find_ground_truth(image, classes)
        assert files is not None  # images come from a recognised layout
        if not files.masks:
            raise UserError(f"{image}: no ground-truth mask of any class ({', '.join(c.code for c in classes)}) "
                            f"found under {files.searched}")
        samples.append(DatasetSample(image, _layout_of(image)[2], files))  # type: ignore[index]
    return samples


def _dataset_images(root: Path) -> list[Path]:
    candidates: list[Path] = []
    idrid = root / IDRID_IMAGES_FOLDER
    if idrid.is_dir():
        candidates += [p for split in sorted(idrid.iterdir()) if split.is_dir() for p in _images_in(split)]
    ddr = root / "lesion_segmentation" if (root / "lesion_segmentation").is_dir() else root
    for split in DDR_SPLITS:
        candidates += _images_in(ddr / split / "image")
    candidates += _images_in(root / "images")
    return candidates


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
