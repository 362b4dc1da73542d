"""Where a run's images come from: :class:`~training.datasets.SampleRecord` lists per data kind.

``idrid``: the dataset's own layout under ``root`` (split ``train`` = ``a. Training Set``,
``test`` = ``b. Testing Set``); a class without a mask file for an image has no lesion there (IDRiD
has soft-exudate masks for only some images). ``pairs``: explicit image/label-image files, as the
training widget exports napari layers. ``generated``: semi-synthetic fundus images with exact
masks, written once into the sample-data cache.
"""

from __future__ import annotations

from pathlib import Path

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.idrid_masks import IDRID_IMAGES_FOLDER, IDRID_SPLITS, idrid_mask_path
from training.config import DataConfig
from training.datasets import SampleRecord

_IDRID_SPLIT_NAMES = {"train": IDRID_SPLITS[0], "test": IDRID_SPLITS[1]}


def records(config: DataConfig, split: str) -> list[SampleRecord]:
    """The records of ``split`` (``config.train_split`` or ``config.val_split``; for ``pairs`` the
    training split is ``pairs`` and any other is ``val_pairs``)."""
    if config.kind == "pairs":
        return pair_records(config.pairs if split == config.train_split else config.val_pairs)
    if config.kind == "idrid":
        return idrid_records(Path(config.root), split, config.classes)
    raise UserError(f"data.kind {config.kind!r} is not available in this version of the trainer")


def pair_records(pairs: list[dict[str, str]]) -> list[SampleRecord]:
    """Records of ``[{image: path, labels: path}, ...]``; ``UserError`` for a missing file."""
    found = []
    for pair in pairs:
        image, labels = Path(pair["image"]).expanduser(), Path(pair["labels"]).expanduser()
        for path in (image, labels):
            if not path.is_file():
                raise UserError(f"{path}: no such file (listed in data pairs)")
        found.append(SampleRecord(image=image, labels=labels))
    return found


def idrid_records(root: Path, split: str, codes: list[str]) -> list[SampleRecord]:
    """IDRiD segmentation images of ``split`` with their existing ``codes`` masks."""
    folder_split = _IDRID_SPLIT_NAMES.get(split, split)
    images_folder = root / IDRID_IMAGES_FOLDER / folder_split
    if not images_folder.is_dir():
        raise UserError(f"{images_folder}: no such IDRiD images folder (data.root {root}, split {split!r})")
    found = []
    for image in sorted(images_folder.glob("*.jpg")):
        masks = {code: idrid_mask_path(root, folder_split, image.stem, code) for code in codes}
        found.append(SampleRecord(image=image, masks={code: path for code, path in masks.items() if path.is_file()}))
    if not found:
        raise UserError(f"{images_folder}: no .jpg images")
    return found
