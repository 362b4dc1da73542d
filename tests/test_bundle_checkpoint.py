"""Bundling a training run: int8 weights, thresholds from a cross-validation report or calibrated on
the run's validation images with the shipped weights, and the provenance the README's figures come
from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_m2mrf.models import load_checkpoint
from training.config import TrainingConfig
from training.loop import Trainer
from training.recipes.bundle_checkpoint import bundle, cross_validation_summary, cross_validation_thresholds, main, scales_to_ship


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-iteration run of the W18-small M2MRF model on generated fundus images."""
    root = tmp_path_factory.mktemp("bundle")
    config = TrainingConfig.from_dict({
        "data": {"kind": "generated", "root": str(root / "data"), "generated_train": 2, "generated_val": 1},
        "augment": {"resize": [64, 96], "crop": [48, 48]},
        "model": {"name": "m2mrf_hrnetv2_w18s", "options": {"variant": "A"}},
        "run": {"iterations": 3, "batch_size": 2, "device": "cpu", "threads": 1, "eval_every": 3,
                "output_dir": str(root / "run")},
    })
    for _ in Trainer(config).run():
        pass
    return root / "run"


SHIPPING_THRESHOLDS = {"EX": 0.37, "HE": 0.12, "SE": float("nan"), "MA": 0.05}


@pytest.fixture(scope="module")
def bundled(run_dir: Path) -> Path:
    """The run bundled with a (hand-written) cross-validation report, which also gives the thresholds."""
    report = run_dir.parent / "report.json"
    pooled = {"aupr_official_11pt": 0.5, "aupr_dense": 0.4, "iou": 0.3, "f1": 0.45}
    scored = {"pooled": {"mean": pooled, "per_class": {"EX": pooled}}, "cross_fitted_iou": {"EX": {"iou": 0.25, "thresholds": [0.3, 0.4]}}}
    report.write_text(json.dumps({
        "folds": 2, "iterations_per_fold": 300, "recipe": "/x/fundus_m2mrf_w18s.yaml", "real_images": ["IDRiD_01"],
        "extra_images": ["IDRiD_21", "IDRiD_22"],
        "plain": {**scored, "shipping_thresholds": SHIPPING_THRESHOLDS}, "flips": scored,
    }))
    return bundle(run_dir, "bundled", cross_validation=report, out_dir=run_dir.parent)


@pytest.fixture(scope="module")
def calibrated(run_dir: Path) -> Path:
    """The run bundled without a report: thresholds calibrated on its validation images."""
    return bundle(run_dir, "calibrated", out_dir=run_dir.parent)


def test_bundle_stores_int8_weights_the_reports_thresholds_and_provenance(run_dir: Path, bundled: Path) -> None:
    model, meta = load_checkpoint(bundled)
    assert meta["weights_dtype"] == "int8"
    assert meta["thresholds"] == {**SHIPPING_THRESHOLDS, "SE": 0.5}  # NaN: no positives anywhere → default
    provenance = meta["provenance"]
    assert provenance["trained_iterations"] == 3 and provenance["selected_checkpoint"] == "best.safetensors"
    assert provenance["validation"]["images"] and "iou_at_calibrated_threshold" in provenance["validation"]["per_class"]["EX"]
    fractions = provenance["retina_lesion_fraction"]
    assert set(fractions) == {"EX", "HE", "SE", "MA"} and all(0.0 <= f <= 1.0 for f in fractions.values())
    summary = provenance["cross_validation"]
    assert summary["plain"]["per_class"]["EX"]["iou"] == 0.3 and summary["flips"]["cross_fitted_iou"] == {"EX": 0.25}
    assert summary["extra_images"] == 2 and "cross-validation" in provenance["validation"]["note"]
    trained, _ = load_checkpoint(run_dir / "best.safetensors")
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        difference = (torch.sigmoid(trained(x)) - torch.sigmoid(model(x))).abs().max()
    assert difference < 0.05


def test_without_a_report_thresholds_are_those_of_best_f1_on_the_validation_images(run_dir: Path, calibrated: Path) -> None:
    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
    from training.config import load_config
    from training.datasets import load_sample
    from training.sources import records

    model, meta = load_checkpoint(calibrated)
    assert "optimistic" in meta["provenance"]["validation"]["note"]
    data = load_config(run_dir / "config.yaml").data
    (record,) = records(data, tuple(FUNDUS_CLASSES), data.val_split, validation=True)
    sample = load_sample(record, FUNDUS_CLASSES, multilabel=True)
    probabilities = FundusPredictor(model, Preprocessing.from_meta(meta), "cpu").predict_whole(sample.image)
    for k, cls in enumerate(FUNDUS_CLASSES):
        truth = sample.target[k] > 0
        if not truth.any():
            assert meta["thresholds"][cls.code] == 0.5
            continue

        chosen = f1_score(probabilities[k], truth, meta["thresholds"][cls.code])
        assert all(chosen >= f1_score(probabilities[k], truth, t) - 0.02 for t in np.linspace(0.0, 1.0, 21)), cls.code
        assert not math.isnan(chosen)


def f1_score(probability: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    predicted = probability >= threshold
    return 2 * np.count_nonzero(predicted & truth) / (np.count_nonzero(predicted) + np.count_nonzero(truth))


def test_bad_run_folder_and_report_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "x"]) == 2
    assert "no best.safetensors" in capsys.readouterr().out
    with pytest.raises(Exception, match="no such cross-validation report"):
        cross_validation_summary(tmp_path / "missing.json")
    old_report = tmp_path / "old.json"
    old_report.write_text(json.dumps({"pooled": {}}))
    with pytest.raises(Exception, match="no shipping thresholds"):
        cross_validation_thresholds(old_report)


def test_a_test_time_report_gives_the_scales_and_their_thresholds(run_dir: Path, tmp_path: Path) -> None:
    scales = {"EX": [1.0, 1.5], "HE": [0.75], "SE": [1.0], "MA": [1.5]}
    pooled = {"per_class": {"EX": {"aupr_official_11pt": 0.6}, "MA": {"aupr_official_11pt": 0.3}},
              "mean": {"aupr_official_11pt": 0.45}}
    report = tmp_path / "test_time.json"
    report.write_text(json.dumps({
        "to_ship": {"scales": scales, "thresholds": {"EX": 0.2, "HE": 0.5, "SE": 0.5, "MA": 0.1}},
        "per_class": {"pooled": pooled, "chosen_per_fold": [scales, scales]},
    }))
    metadata, summary = scales_to_ship(report)
    assert metadata == {"scales": scales, "thresholds": {"EX": 0.2, "HE": 0.5, "SE": 0.5, "MA": 0.1}}
    assert summary["cross_fitted_mean"] == 0.45 and summary["cross_fitted_aupr_official_11pt"]["MA"] == 0.3
    _, meta = load_checkpoint(bundle(run_dir, "scaled", out_dir=tmp_path, test_time=report))
    assert meta["test_time"] == metadata and meta["provenance"]["test_time"]["report"] == "test_time.json"
    report.write_text(json.dumps({"to_ship": {"scales": scales}}))
    with pytest.raises(Exception, match="no test-time choice to ship"):
        scales_to_ship(report)
