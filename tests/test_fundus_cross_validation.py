"""The cross-validation driver's folds: every real image held out exactly once, training data linked
(never copied) in IDRiD's layout, generated and idrid_extra images in every fold's training split,
thresholds cross-fitted; the idrid_extra masks land on their photographs' pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from napari_m2mrf.metrics import LesionMetrics
from training.config import load_config
from training.recipes import IMAGES, MASKS, TRAIN, VALIDATION
from training.recipes.fundus_cross_validation import build_fold, cross_fitted_iou, fine_tune_recipe, fold_ids
from training.recipes.idrid_extra import assemble_extra, upsample_mask
from training.sources import layout_records

REAL_EXTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "idrid_extra"


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


def _extra_folder(root: Path) -> Path:
    """A small idrid_extra-like folder: one 100 × 120 photograph whose 512 grid spans s = 128
    full-resolution pixels (4 grid pixels per full-resolution pixel), offset by x0 = 4, pad_y = 14."""
    from PIL import Image

    (root / "fullres_images").mkdir(parents=True)
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(root / "fullres_images" / "IDRiD_21.jpg")
    grid = np.zeros((512, 512), np.uint8)
    grid[200:212, 100:112] = 255  # full-res rows 36–38 (from 200/4 - 14), cols 29–31 (from 100/4 + 4)
    (root / "masks" / "HE").mkdir(parents=True)
    Image.fromarray(grid).save(root / "masks" / "HE" / "IDRiD_21.png")
    frames = {"IDRiD_21": {"fullres_w": 120, "fullres_h": 100, "s": 128, "x0": 4, "pad_y": 14.0}}
    (root / "frame_map.json").write_text(json.dumps(frames))
    return root


def test_extra_masks_are_upsampled_into_the_photographs_frame(tmp_path: Path) -> None:
    from PIL import Image

    extra = _extra_folder(tmp_path / "extra")
    out = tmp_path / "assembled"
    assert assemble_extra(out, extra) == ["IDRiD_21"]
    mask = np.asarray(Image.open(out / MASKS / TRAIN / "2. Haemorrhages" / "IDRiD_21_HE.png")) > 0
    assert mask.shape == (100, 120) and np.argwhere(mask).tolist() == [[r, c] for r in (36, 37, 38) for c in (29, 30, 31)]
    assert (out / IMAGES / TRAIN / "IDRiD_21.jpg").is_symlink()
    assert not (out / MASKS / TRAIN / "1. Microaneurysms").exists()  # no file = class absent, as in IDRiD
    records = layout_records(out, TRAIN, tuple(FUNDUS_CLASSES))
    assert len(records) == 1 and set(records[0].masks) == {"HE"}
    fitted = tmp_path / "fitted"
    assemble_extra(fitted, extra, fit=(50, 1000))  # half size: pixel (y, x) has its centre at full-res (2y + 0.5, 2x + 0.5)
    photograph = Image.open(fitted / IMAGES / TRAIN / "IDRiD_21.jpg")
    small = np.asarray(Image.open(fitted / MASKS / TRAIN / "2. Haemorrhages" / "IDRiD_21_HE.png")) > 0
    assert photograph.size == (60, 50) and not (fitted / IMAGES / TRAIN / "IDRiD_21.jpg").is_symlink()
    assert small.shape == (50, 60) and np.argwhere(small).tolist() == [[18, 14], [18, 15]]
    (extra / "frame_map.json").unlink()
    with pytest.raises(UserError, match="frame_map.json"):
        assemble_extra(tmp_path / "again", extra)


@pytest.mark.skipif(not REAL_EXTRA.is_dir(), reason="idrid_extra is not in ../shared/data")
def test_real_extra_masks_keep_their_lesions_at_full_resolution() -> None:
    from PIL import Image

    frames = json.loads((REAL_EXTRA / "frame_map.json").read_text())
    grid = np.asarray(Image.open(REAL_EXTRA / "masks" / "MA" / "IDRiD_21.png").convert("L")) > 0
    full = upsample_mask(grid, frames["IDRiD_21"])
    with Image.open(REAL_EXTRA / "fullres_images" / "IDRiD_21.jpg") as photograph:
        assert full.shape == (photograph.height, photograph.width)
    from scipy import ndimage

    assert ndimage.label(full)[1] == ndimage.label(grid)[1]  # every microaneurysm survives
    scale = frames["IDRiD_21"]["s"] / 512
    assert full.sum() == pytest.approx(grid.sum() * scale**2, rel=0.1)


def test_thresholds_are_cross_fitted_from_the_other_folds() -> None:
    rng = np.random.default_rng(0)
    folds = []
    for shift in (0.0, 0.3):  # fold 2's lesions score higher: its own best threshold would be higher
        truth = rng.random((4, 40, 40)) < 0.1
        scores = np.clip(truth * (0.4 + shift) + rng.random((4, 40, 40)) * 0.3, 0, 1).astype(np.float32)
        fold = LesionMetrics(FUNDUS_CLASSES)
        fold.update(scores, truth)
        folds.append(fold)
    report = cross_fitted_iou(folds)
    for code in ("EX", "MA"):
        first, second = report[code]["thresholds"]
        assert first == folds[1].best_f1_thresholds()[code] and second == folds[0].best_f1_thresholds()[code]
        overlaps = [fold.overlap_at(code, t) for fold, t in zip(folds, (first, second))]
        assert report[code]["iou"] == pytest.approx(sum(o[0] for o in overlaps) / sum(o[1] for o in overlaps))


def test_a_second_stage_starts_each_fold_from_the_same_folds_weights_only(tmp_path: Path) -> None:
    recipe = Path(__file__).resolve().parents[1] / "sample_data" / "checkpoints" / "fundus_m2mrf_w18s.yaml"
    earlier = tmp_path / "stage1"
    _touch(earlier / "fold2_data" / IMAGES / VALIDATION / "IDRiD_03.jpg")
    _touch(earlier / "fold2_data" / IMAGES / VALIDATION / "IDRiD_04.jpg")
    _touch(earlier / "fold2" / "last.safetensors")
    made = fine_tune_recipe(recipe, earlier, 2, ["IDRiD_03", "IDRiD_04"], tmp_path / "stage2")
    assert load_config(made).model.init_checkpoint == str((earlier / "fold2" / "last.safetensors").resolve())
    with pytest.raises(UserError, match="held out IDRiD_03, IDRiD_04, not IDRiD_01, IDRiD_02"):
        fine_tune_recipe(recipe, earlier, 2, ["IDRiD_01", "IDRiD_02"], tmp_path / "stage2")
    with pytest.raises(UserError, match="held out nothing"):
        fine_tune_recipe(recipe, earlier, 1, ["IDRiD_01"], tmp_path / "stage2")


def test_a_recipe_with_fixed_initial_weights_is_refused_without_init_from(tmp_path: Path) -> None:
    from training.config import save_config
    from training.recipes.fundus_cross_validation import cross_validate

    recipe = Path(__file__).resolve().parents[1] / "sample_data" / "checkpoints" / "fundus_m2mrf_w18s_stage1.yaml"
    config = load_config(recipe)
    tuned = config.model_copy(update={"model": config.model.model_copy(update={"init_checkpoint": "w.safetensors"})})
    path = save_config(tuned, tmp_path / "tuned.yaml")
    with pytest.raises(UserError, match="fine-tunes w.safetensors: one set of weights for every fold"):
        cross_validate(tmp_path / "out", tmp_path / "idrid", 2, 10, path, 0, 1)
    assert not (tmp_path / "out").exists()
