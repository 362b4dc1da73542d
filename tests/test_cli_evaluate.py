"""``napari-m2mrf evaluate``: IDRiD, DDR and folder ground truth, prediction formats, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sklearn.metrics import auc, average_precision_score

from napari_m2mrf.classes import IDRID_FOLDERS
from napari_m2mrf.cli import main
from napari_m2mrf.io.idrid_masks import idrid_mask_path, write_idrid_mask
from napari_m2mrf.metrics import OFFICIAL_THRESHOLDS

TRAIN = "a. Training Set"
CODES = ("EX", "HE", "SE", "MA")
SHAPE = (48, 72)  # H, W
STEMS = ("IDRiD_01", "IDRiD_02", "IDRiD_03")


def make_truth(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """stem -> code -> bool (H, W) mask; SE only on the last image (as in IDRiD, most have none)."""
    truth = {}
    for stem in STEMS:
        truth[stem] = {code: rng.random(SHAPE) < 0.08 for code in CODES}
        if stem != STEMS[-1]:
            truth[stem]["SE"] = np.zeros(SHAPE, dtype=bool)
    return truth


def write_idrid_truth(root: Path, truth: dict[str, dict[str, np.ndarray]]) -> None:
    for stem, masks in truth.items():
        for code, mask in masks.items():
            if mask.any():  # IDRiD has no file for a class an image lacks
                write_idrid_mask(idrid_mask_path(root, TRAIN, stem, code), mask)


def noisy_probabilities(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    logits = rng.normal(-2.0, 1.5, mask.shape) + 3.0 * mask
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def write_predictions(pred: Path, probabilities: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Writes each class in a different format and place; returns what a reader should see in [0, 1]."""
    seen: dict[str, dict[str, np.ndarray]] = {}
    for stem, maps in probabilities.items():
        seen[stem] = {}
        # EX: float32 TIFF in PRED itself.
        tifffile.imwrite(pred / f"{stem}_EX.tif", maps["EX"])
        seen[stem]["EX"] = maps["EX"]
        # HE: 8-bit PNG in PRED/HE/.
        (pred / "HE").mkdir(exist_ok=True)
        he = np.round(maps["HE"] * 255).astype(np.uint8)
        Image.fromarray(he).save(pred / "HE" / f"{stem}_HE.png")
        seen[stem]["HE"] = he / np.float32(255)
        # SE: 16-bit TIFF under the IDRiD folder name.
        (pred / IDRID_FOLDERS["SE"]).mkdir(exist_ok=True)
        se = np.round(maps["SE"] * 65535).astype(np.uint16)
        tifffile.imwrite(pred / IDRID_FOLDERS["SE"] / f"{stem}_SE.tif", se)
        seen[stem]["SE"] = se / np.float32(65535)
        # MA: a binary IDRiD-style 1-bit mask.
        ma = maps["MA"] > 0.5
        write_idrid_mask(pred / f"{stem}_MA.tif", ma)
        seen[stem]["MA"] = ma.astype(np.float32)
    return seen


def official_aupr(scores: np.ndarray, labels: np.ndarray) -> float:
    """The official protocol as the fact sheet states it (pooled pixels of all images)."""
    precisions, recalls = [], []
    for t in OFFICIAL_THRESHOLDS:
        predicted = scores > np.float32(t)
        tp, p, fn = np.sum(predicted & labels), np.sum(predicted), np.sum(~predicted & labels)
        precisions.append(tp / p if p else 1.0)
        recalls.append(tp / (tp + fn) if tp + fn else 0.0)
    return auc(recalls, precisions)


def evaluate_json(capsys, *args: str) -> dict:
    assert main(["evaluate", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def idrid_case(tmp_path: Path):
    rng = np.random.default_rng(0)
    truth = make_truth(rng)
    gt_root = tmp_path / "IDRiD"
    write_idrid_truth(gt_root, truth)
    pred = tmp_path / "pred"
    pred.mkdir()
    probabilities = {
        stem: {code: noisy_probabilities(rng, mask) for code, mask in masks.items()} for stem, masks in truth.items()
    }
    seen = write_predictions(pred, probabilities)
    return gt_root, pred, truth, seen


def test_idrid_layout_scores_every_prediction_format_like_the_reference(idrid_case, capsys):
    gt_root, pred, truth, seen = idrid_case
    report = evaluate_json(capsys, str(pred), str(gt_root))
    assert report["layout"] == "IDRiD" and report["split"] == TRAIN
    assert report["image_stems"] == list(STEMS)
    metrics = report["metrics"]
    for code in CODES:
        scores = np.concatenate([seen[stem][code].ravel() for stem in STEMS])
        labels = np.concatenate([truth[stem][code].ravel() for stem in STEMS])
        values = metrics["per_class"][code]
        assert values["aupr_official_11pt"] == pytest.approx(official_aupr(scores, labels), abs=1e-12)
        assert values["aupr_dense"] == pytest.approx(average_precision_score(labels, scores), abs=0.005)
        assert values["positive_pixels"] == labels.sum()
    assert metrics["mean"]["iou"] == pytest.approx(np.mean([metrics["per_class"][c]["iou"] for c in CODES]))


def test_table_lists_each_class_and_the_mean(idrid_case, capsys):
    gt_root, pred, _, _ = idrid_case
    assert main(["evaluate", str(pred), str(gt_root), "--classes", "ma,EX"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "IDRiD layout" in lines[0] and "3 images" in lines[0]
    header = next(line for line in lines if line.startswith("class"))
    assert "AUPR official 11-pt" in header and "AUPR dense" in header and "IoU@0.5" in header
    rows = [line.split() for line in lines[lines.index(header) + 1 :]]
    assert [row[0] for row in rows] == ["MA", "EX", "mean"]
    assert all(0.0 <= float(value) <= 1.0 for row in rows for value in row[1:])


def test_ddr_and_folder_layouts_with_perfect_predictions(tmp_path, capsys):
    rng = np.random.default_rng(1)
    masks = {stem: {code: rng.random(SHAPE) < 0.1 for code in CODES} for stem in ("007-1789-100", "007-1790-100")}
    ddr_label = tmp_path / "DDR" / "lesion_segmentation" / "test" / "label"
    plain = tmp_path / "plain" / "masks"
    pred = tmp_path / "pred"
    for stem, by_code in masks.items():
        for code, mask in by_code.items():
            for folder in (ddr_label / code, plain / code, pred / code):
                folder.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(ddr_label / code / f"{stem}.tif", mask.astype(np.uint8))  # DDR: 8-bit 0/1
            grey = mask.astype(np.uint8) * 255
            red = np.stack([grey, np.zeros_like(grey), np.zeros_like(grey)], axis=2)  # a colour mask
            Image.fromarray(grey if stem.endswith("89-100") else red).save(plain / code / f"{stem}.png")
            write_idrid_mask(pred / code / f"{stem}_{code}.tif", mask)
    (tmp_path / "DDR" / "lesion_segmentation" / "valid" / "label" / "EX").mkdir(parents=True)
    ddr = evaluate_json(capsys, str(pred), str(tmp_path / "DDR"), "--split", "test")
    folder = evaluate_json(capsys, str(pred), str(tmp_path / "plain"))
    assert (ddr["layout"], ddr["split"], folder["layout"]) == ("DDR", "test", "folder")
    for report in (ddr, folder):
        assert report["image_stems"] == sorted(masks)
        for name in ("aupr_official_11pt", "aupr_dense", "iou", "f1"):
            assert report["metrics"]["mean"][name] == 1.0


def test_real_idrid_ground_truth_against_itself_scores_one(shared_data, tmp_path, capsys):
    root = shared_data / "idrid_subset"
    pred = tmp_path / "pred"
    pred.mkdir()
    stems = [f"IDRiD_{n:02d}" for n in range(1, 11)]
    for stem in stems:
        for code in ("SE", "MA"):
            source = idrid_mask_path(root, TRAIN, stem, code)
            if source.is_file():
                (pred / source.name).symlink_to(source)
            else:  # no SE lesion in this image: the perfect prediction is an empty mask
                write_idrid_mask(pred / source.name, np.zeros((2848, 4288), dtype=bool))
    report = evaluate_json(capsys, str(pred), str(root), "--classes", "SE,MA")
    assert report["image_stems"] == stems
    for code in ("SE", "MA"):
        values = report["metrics"]["per_class"][code]
        assert values["positive_pixels"] > 0
        assert values["aupr_official_11pt"] == 1.0 and values["aupr_dense"] == 1.0
        assert values["iou"] == 1.0 and values["f1"] == 1.0
    assert report["metrics"]["mean"]["aupr_official_11pt"] == 1.0 and report["metrics"]["mean"]["iou"] == 1.0


def _error(capsys, *args: str) -> str:
    assert main(["evaluate", *args]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and message.startswith("napari-m2mrf: error: ")
    return message


def test_missing_prediction_names_the_file(idrid_case, capsys):
    gt_root, pred, _, _ = idrid_case
    (pred / "IDRiD_02_EX.tif").unlink()
    assert "IDRiD_02_EX.tif: missing prediction for image IDRiD_02, class EX" in _error(capsys, str(pred), str(gt_root))


def test_mismatched_size_names_the_prediction(idrid_case, capsys):
    gt_root, pred, _, _ = idrid_case
    tifffile.imwrite(pred / "IDRiD_03_EX.tif", np.zeros((10, 10), dtype=np.float32))
    message = _error(capsys, str(pred), str(gt_root))
    assert "IDRiD_03_EX.tif: size 10x10 differs from the ground truth" in message and "72x48" in message


def test_out_of_range_probabilities_name_the_file(idrid_case, capsys):
    gt_root, pred, _, _ = idrid_case
    tifffile.imwrite(pred / "IDRiD_01_EX.tif", np.full(SHAPE, 3.0, dtype=np.float32))
    assert "IDRiD_01_EX.tif: probabilities must lie in [0, 1]" in _error(capsys, str(pred), str(gt_root))


def test_empty_or_unrecognised_folders_are_one_line_errors(idrid_case, tmp_path, capsys):
    gt_root, pred, _, _ = idrid_case
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty: no predictions found" in _error(capsys, str(empty), str(gt_root))
    assert "empty: no ground truth found" in _error(capsys, str(pred), str(empty))
    assert "no such ground-truth folder" in _error(capsys, str(pred), str(tmp_path / "absent"))
    (gt_root / "2. All Segmentation Groundtruths" / "b. Testing Set" / "3. Hard Exudates").mkdir(parents=True)
    assert "choose one with --split" in _error(capsys, str(pred), str(gt_root))
    message = _error(capsys, str(pred), str(gt_root), "--split", "train", "--classes", "EX,OD")
    assert "unknown class code 'OD'" in message


def test_console_command_reports_bad_input_without_traceback(tmp_path):
    command = Path(sys.executable).with_name("napari-m2mrf")
    result = subprocess.run(
        [str(command), "evaluate", str(tmp_path), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    expected = "no predictions found (expected <stem>_<CLS>.tif|png files, e.g. IDRiD_01_EX.tif)"
    assert result.stderr == f"napari-m2mrf: error: {tmp_path}: {expected}\n"
