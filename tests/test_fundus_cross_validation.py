"""The cross-validation driver's folds: every real image held out exactly once, training data linked
(never copied) in IDRiD's layout, generated images in every fold's training split."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_m2mrf.errors import UserError
from training.recipes.fundus_cross_validation import IMAGES, MASKS, build_fold, fold_ids
from training.recipes.fundus_training_set import TRAIN, VALIDATION


def test_folds_hold_out_every_image_exactly_once() -> None:
    stems = [f"IDRiD_{n:02d}" for n in range(1, 11)]
    folds = fold_ids(stems, 5)
    assert folds == [stems[i : i + 2] for i in range(0, 10, 2)]
    uneven = fold_ids(stems, 3)
    assert sorted(stem for fold in uneven for stem in fold) == stems and [len(f) for f in uneven] == [3, 4, 3]
    for bad in (1, 11):
        with pytest.raises(UserError, match="--folds"):
            fold_ids(stems, bad)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_a_fold_links_its_held_out_pair_into_the_testing_split(tmp_path: Path) -> None:
    idrid, generated = tmp_path / "idrid", tmp_path / "generated"
    for n in (1, 2, 3):
        _touch(idrid / IMAGES / TRAIN / f"IDRiD_0{n}.jpg")
        _touch(idrid / MASKS / TRAIN / "1. Microaneurysms" / f"IDRiD_0{n}_MA.tif")
    _touch(generated / IMAGES / TRAIN / "fundus_lesions_100_000.jpg")
    _touch(generated / MASKS / TRAIN / "3. Hard Exudates" / "fundus_lesions_100_000_EX.tif")
    fold = build_fold(tmp_path / "fold", idrid, generated, ["IDRiD_02"])
    held_out = sorted(p.relative_to(fold).as_posix() for p in fold.rglob("*") if VALIDATION in p.as_posix() and p.is_file())
    assert held_out == [f"{IMAGES}/{VALIDATION}/IDRiD_02.jpg", f"{MASKS}/{VALIDATION}/1. Microaneurysms/IDRiD_02_MA.tif"]
    training = sorted(p.name for p in (fold / IMAGES / TRAIN).iterdir())
    assert training == ["IDRiD_01.jpg", "IDRiD_03.jpg", "fundus_lesions_100_000.jpg"]
    assert (fold / MASKS / TRAIN / "3. Hard Exudates" / "fundus_lesions_100_000_EX.tif").is_symlink()
    assert all(p.is_symlink() for p in fold.rglob("*") if p.is_file())
