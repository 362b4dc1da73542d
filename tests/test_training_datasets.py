"""Training records from every data kind: the real IDRiD subset, a plain folder, a workspace
with corrected labels; targets are the masks, pixel for pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES
from training.config import DataConfig
from training.datasets import load_sample
from training.sources import records, run_classes


def test_real_idrid_subset_records_and_masks(shared_data: Path) -> None:
    root = shared_data / "idrid_subset"
    config = DataConfig(kind="idrid", root=str(root), train_split="train")
    found = records(config, FUNDUS_CLASSES, config.train_split, validation=False)
    assert [r.image.stem for r in found] == [f"IDRiD_{k:02d}" for k in range(1, 11)]
    first = found[0]
    assert set(first.masks) == {"EX", "HE", "MA"}  # no soft exudates in IDRiD_01, as in the dataset
    sample = load_sample(first, FUNDUS_CLASSES, multilabel=True)
    assert sample.image.shape == (2848, 4288, 3) and sample.target.shape == (4, 2848, 4288)
    # README pixel counts of IDRiD_01: MA 6941, HE 35430, EX 113290, SE 0
    assert [int(sample.target[k].sum()) for k in range(4)] == [113290, 35430, 0, 6941]


def write_folder_dataset(root: Path) -> np.ndarray:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "images" / "eye.png")
    masks = {}
    for k, code in enumerate(["EX", "MA"]):
        mask = np.zeros((30, 40), np.uint8)
        mask[5 + k * 10 : 12 + k * 10, 3:20] = 255
        (root / "masks" / code).mkdir(parents=True)
        Image.fromarray(mask).save(root / "masks" / code / "eye.png")
        masks[code] = mask > 0
    return np.stack([masks["EX"], np.zeros((30, 40), bool), np.zeros((30, 40), bool), masks["MA"]])


def test_plain_folder_layout(tmp_path: Path) -> None:
    expected = write_folder_dataset(tmp_path / "data")
    config = DataConfig(kind="folder", root=str(tmp_path / "data"))
    (record,) = records(config, FUNDUS_CLASSES, "", validation=False)
    assert np.array_equal(load_sample(record, FUNDUS_CLASSES, multilabel=True).target, expected)


def test_workspace_corrections_are_training_targets(tmp_path: Path) -> None:
    from napari_m2mrf.classes import label_colormap
    from napari_m2mrf.io.workspace import Workspace

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (3, 48, 64), dtype=np.uint8)
    corrected = np.zeros((48, 64), np.uint8)
    corrected[10:20, 10:30], corrected[30:40, 5:9] = 2, 4
    workspace = Workspace.create(tmp_path / "eye.m2mrf.zarr")
    workspace.write_image(image)
    workspace.write_labels(
        "corrected",
        corrected,
        colors={k: v for k, v in label_colormap().items() if k},
        names={c.label: c.code for c in FUNDUS_CLASSES},
    )
    config = DataConfig(kind="workspaces", slides=[str(workspace.path)], slide_labels="corrected", slide_level_size=64)
    classes = run_classes(config)
    assert classes == FUNDUS_CLASSES
    (record,) = records(config, classes, "", validation=False)
    sample = load_sample(record, classes, multilabel=True)
    assert np.array_equal(sample.image, np.moveaxis(image, 0, -1))
    for k, lesion in enumerate(classes):
        assert np.array_equal(sample.target[k], corrected == lesion.label)
