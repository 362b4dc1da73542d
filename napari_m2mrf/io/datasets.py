"""Fundus dataset layouts: finding, reading and checking ground truth, from an image or from a folder.

Three layouts (``<CODE>``: EX, HE, SE, MA; a mask is named ``<stem>.<ext>`` or ``<stem>_<CODE>.<ext>``):

* **IDRiD**: ``<root>/1. Original Images/<split>/<stem>.jpg`` with masks
  ``<root>/2. All Segmentation Groundtruths/<split>/<n>. <Class>/<stem>_<CODE>.tif`` (1-bit palette
  TIFFs, read by :mod:`~napari_m2mrf.io.idrid_masks`; an image without a mask of a class has no
  lesion of that class, as SE for most IDRiD images);
* **DDR**: ``<root>[/lesion_segmentation]/<split>/image/<stem>.jpg`` with
  ``…/<split>/label/<CODE>/<stem>.tif``;
* **folder**: ``<root>/images/<stem>.<ext>`` with ``<root>/masks/<CODE>/<stem>.<ext>``.

From an image (:func:`find_ground_truth`, :func:`list_dataset`: the reader, ``convert`` and the
trainer) the layout is recognised from the image's path. From a ground-truth folder alone
(:func:`find_ground_truth_set`: ``napari-m2mrf evaluate``, which has predictions but no images) the
folder may be the dataset root, its ground-truth or ``lesion_segmentation`` folder, a split folder,
or a folder holding the class folders itself.

Per-class masks become one label map with the values of ``FUNDUS_CLASSES`` (1 EX, 2 HE, 3 SE,
4 MA); where lesions overlap the later class in that order wins (MA over SE over HE over EX).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES, IDRID_FOLDERS, LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.idrid_masks import (
    IDRID_GROUNDTRUTH_FOLDER,
    IDRID_IMAGES_FOLDER,
    read_idrid_mask,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".tif", ".tiff", ".png", ".bmp", ".gif", ".jpg")
DDR_SPLITS = ("train", "valid", "test")
DDR_SEGMENTATION = "lesion_segmentation"
DDR_IMAGES, DDR_LABELS = "image", "label"
FOLDER_IMAGES, FOLDER_MASKS = "images", "masks"
LAYOUT_NAMES = {"idrid": "IDRiD", "ddr": "DDR", "folder": "folder"}


def class_folder(layout: str, code: str) -> str:
    """The name of the folder holding the ``code`` masks in ``layout`` (``3. Hard Exudates`` or ``EX``)."""
    return IDRID_FOLDERS[code] if layout == "idrid" else code


def masks_folder(layout: str, root: Path, split: str) -> Path:
    """The folder holding the class folders of ``split`` in a dataset of ``layout`` at ``root``."""
    if layout == "idrid":
        return root / IDRID_GROUNDTRUTH_FOLDER / split
    if layout == "ddr":
        return root / split / DDR_LABELS
    return root / FOLDER_MASKS


def mask_file(folder: Path, stem: str, code: str) -> Path | None:
    """The mask of image ``stem`` in class folder ``folder`` (``<stem>.<ext>`` or ``<stem>_<CODE>.<ext>``)."""
    for name in (f"{stem}_{code}", stem):
        for suffix in MASK_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


def mask_stem(path: Path, code: str) -> str:
    """The image stem a mask file belongs to: ``IDRiD_01`` for ``IDRiD_01_EX.tif``, ``007-1789-100`` for DDR's."""
    suffix = f"_{code}"
    return path.stem[: -len(suffix)] if path.stem.upper().endswith(suffix) else path.stem


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
    """``(layout, dataset root, split)`` for an image path in a known layout, else None."""
    parent, grandparent = image.parent, image.parent.parent
    if grandparent.name == IDRID_IMAGES_FOLDER:
        return "idrid", grandparent.parent, parent.name
    if parent.name == DDR_IMAGES:
        return "ddr", grandparent.parent, grandparent.name
    if parent.name == FOLDER_IMAGES:
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
    searched = masks_folder(layout, root, split)
    masks: dict[str, Path] = {}
    for cls in classes:
        candidate = mask_file(searched / class_folder(layout, cls.code), image.stem, cls.code)
        if candidate is not None:
            masks[cls.code] = candidate
    return GroundTruthFiles(layout, image, masks, searched)


@dataclass(frozen=True)
class GroundTruthImage:
    """One image's ground truth found from the masks alone: its stem and mask file per class code."""

    stem: str
    masks: dict[str, Path]


@dataclass(frozen=True)
class GroundTruthSet:
    """The ground truth of one split: ``layout`` (idrid/ddr/folder), the split's name (None when the
    folder given was the split itself), the class folders present by code, and the images (sorted)."""

    layout: str
    split: str | None
    class_folders: dict[str, Path]
    images: list[GroundTruthImage]


def find_ground_truth_set(
    root: str | os.PathLike[str], split: str | None = None, classes: tuple[LesionClass, ...] = FUNDUS_CLASSES
) -> GroundTruthSet:
    """The ground-truth images under ``root`` (see the module docstring for where it may point).

    ``split`` chooses among several splits (a case-insensitive name or part of one, e.g. ``test``
    for ``b. Testing Set``). ``UserError`` when no layout matches, the split is ambiguous, or the
    class folders hold no masks.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such ground-truth folder")
    candidates = [
        ("idrid", [root / IDRID_GROUNDTRUTH_FOLDER, root], None),
        ("ddr", [root / DDR_SEGMENTATION, root], DDR_LABELS),
        ("folder", [root], FOLDER_MASKS),
        ("folder", [root], None),
    ]
    for layout, tops, inner in candidates:
        names = {class_folder(layout, cls.code): cls.code for cls in classes}
        for top in tops:
            splits = _splits_with_class_folders(top, names, inner)
            if splits:
                chosen = _choose_split(root, splits, split)
                folder = splits[chosen]
                folders = {code: folder / name for name, code in names.items() if (folder / name).is_dir()}
                images = _images_of_masks(folders)
                if not images:
                    raise UserError(f"{folder}: the class folders hold no masks ({', '.join(MASK_SUFFIXES)})")
                return GroundTruthSet(layout, chosen or None, folders, images)
    raise UserError(
        f"{root}: no ground truth found: expected IDRiD ('{IDRID_GROUNDTRUTH_FOLDER}/<split>/<n>. <Class>/'), "
        f"DDR ('{DDR_SEGMENTATION}/<split>/{DDR_LABELS}/<CLS>/') or '{FOLDER_MASKS}/<CLS>/' folders"
    )


def _splits_with_class_folders(top: Path, names: dict[str, str], inner: str | None) -> dict[str, Path]:
    """Split name -> folder holding the class folders; the name is "" when ``top`` itself holds them."""

    def holder(folder: Path) -> Path | None:
        candidate = folder / inner if inner else folder
        return candidate if any((candidate / name).is_dir() for name in names) else None

    if not top.is_dir():
        return {}
    direct = holder(top)
    if direct is not None:
        return {"": direct}
    found = {}
    for child in sorted(path for path in top.iterdir() if path.is_dir()):
        folder = holder(child)
        if folder is not None:
            found[child.name] = folder
    return found


def _choose_split(root: Path, splits: dict[str, Path], wanted: str | None) -> str:
    names = list(splits)
    if names == [""]:  # the folder given is the split folder itself
        if wanted and wanted.lower() not in root.name.lower():
            raise UserError(f"{root}: holds no splits (its class folders are directly inside); leave out --split {wanted!r}")
        return ""
    if wanted is None:
        if len(names) == 1:
            return names[0]
        raise UserError(f"{root}: holds several splits ({', '.join(names)}); choose one with --split")
    matches = [name for name in names if wanted.lower() == name.lower()]
    matches = matches or [name for name in names if wanted.lower() in name.lower()]
    if len(matches) != 1:
        raise UserError(f"{root}: --split {wanted!r} matches {len(matches)} of the splits ({', '.join(names)})")
    return matches[0]


def _images_of_masks(folders: dict[str, Path]) -> list[GroundTruthImage]:
    masks: dict[str, dict[str, Path]] = {}
    for code, folder in folders.items():
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in MASK_SUFFIXES:
                masks.setdefault(mask_stem(path, code), {})[code] = path
    return [GroundTruthImage(stem, masks[stem]) for stem in sorted(masks)]


def read_binary_mask(path: str | os.PathLike[str], expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """A lesion mask file as bool ``(H, W)``: True where any colour channel is non-zero (alpha ignored).

    Single-channel TIFFs (IDRiD's 1-bit masks, DDR's 8-bit ones) go through
    :func:`~napari_m2mrf.io.idrid_masks.read_idrid_mask`; everything else through Pillow at its
    own bit depth (a 16-bit mask holding 0/1 keeps its lesions). ``UserError`` names an unreadable file.
    The header passes the read-side gate first (:func:`~napari_m2mrf.io.input_gate.mask_header`):
    a size over the limits, or other than ``expected_shape`` when given, is refused before decoding.
    """
    from napari_m2mrf.io.formats import sniff_format
    from napari_m2mrf.io.input_gate import mask_header

    path = Path(path)
    mask_header(path, expected_shape)
    if sniff_format(path) == "tiff":
        try:
            return read_idrid_mask(path)
        except UserError as exc:
            if "single-channel" not in str(exc):
                raise
    values = _decoded_mask(path)
    if values.ndim == 3 and values.shape[2] in (2, 3, 4):
        colour = values[..., :1] if values.shape[2] == 2 else values[..., :3]
        return np.any(colour != 0, axis=2)
    if values.ndim != 2:
        raise UserError(f"{path}: expected a 2-D mask, found an image of shape {values.shape}")
    return values != 0


def _decoded_mask(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from napari_m2mrf.io.input_gate import pil_pixel_limit
    from napari_m2mrf.io.limits import current_limits

    try:
        with pil_pixel_limit(current_limits().max_image_pixels), Image.open(path) as image:
            if image.mode in ("P", "PA"):
                image = image.convert("RGBA")
            elif image.mode == "1":
                image = image.convert("L")
            return np.asarray(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable mask image ({exc})") from None


def load_ground_truth(
    files: GroundTruthFiles, shape: tuple[int, int], classes: tuple[LesionClass, ...] = FUNDUS_CLASSES
) -> np.ndarray:
    """The label map ``(H, W)`` uint8 of ``files``; ``UserError`` naming a mask whose size is not ``shape``."""
    labels = np.zeros(shape, np.uint8)
    for cls in classes:
        path = files.masks.get(cls.code)
        if path is None:
            continue
        declared = _header_shape(path)  # from the header: a wrong size is refused before decoding
        mask = read_binary_mask(path) if declared == tuple(shape) else np.zeros(declared, bool)
        if mask.shape != tuple(shape):
            raise UserError(
                f"{path}: the mask is {mask.shape[1]}×{mask.shape[0]} pixels but the image {files.image.name} "
                f"is {shape[1]}×{shape[0]}"
            )
        labels[mask] = cls.label
    return labels


def _header_shape(path: Path) -> tuple[int, int]:
    from napari_m2mrf.io.input_gate import mask_header

    return mask_header(path)


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
            f"{root}: no images found in an IDRiD ('{IDRID_IMAGES_FOLDER}/<split>/'), DDR "
            f"('<split>/{DDR_IMAGES}/') or folder ('{FOLDER_IMAGES}/') layout"
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
    ddr = root / DDR_SEGMENTATION if (root / DDR_SEGMENTATION).is_dir() else root
    for split in DDR_SPLITS:
        candidates += _images_in(ddr / split / DDR_IMAGES)
    candidates += _images_in(root / FOLDER_IMAGES)
    return candidates


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
