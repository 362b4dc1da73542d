"""Turn a training run into a bundled fundus checkpoint: the best model, int8 weights, calibrated
per-class thresholds, provenance.

``python -m training.recipes.bundle_checkpoint RUN_DIR NAME [--cross-validation REPORT.json]
[--test-time TEST_TIME.json]`` reads
``RUN_DIR/best.safetensors`` (or ``last.safetensors``), the run's ``config.yaml`` and ``events.jsonl``,
and writes ``sample_data/checkpoints/NAME.safetensors``:

1. the weights are stored as int8 (per output channel; see ``napari_m2mrf.models.checkpoints``) and
   read back, so every figure below is measured with the weights that ship;
2. the per-class thresholds (``meta["thresholds"]``), among 0.01, 0.02, ..., 0.99 (what the
   Segment widget offers; 0.5 for a class without positive pixels): with a cross-validation report,
   those of best F1 on its pooled held-out pixels (every real image, each predicted by a fold model
   that never saw it); without one, those of best F1 on the run's own validation images. The
   shipped model then predicts the run's validation images (the official protocol: whole image at
   the model's input size) and the metrics (official AUPR, dense AUPR, IoU at 0.5 and at the
   thresholds) go into the provenance;
3. the lesion pixel fraction the model marks on the normal ``retina`` sample at those thresholds,
   and the pooled figures of a cross-validation report (``training.recipes.fundus_cross_validation``),
   go into the provenance too;
4. with a test-time report (``training.recipes.fundus_test_time``), the per-class test-time scales and
   the thresholds calibrated on them (``meta["test_time"]``, :mod:`napari_m2mrf.models.multiscale`),
   with its cross-fitted pooled figures in the provenance.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import UserError
from napari_m2mrf.models.thresholds import DEFAULT_THRESHOLD
from training.recipes import CHECKPOINTS

THRESHOLD_CHOICES = tuple(round(0.01 * step, 2) for step in range(1, 100))
"""Calibrated thresholds are chosen among the values the Segment widget's boxes offer (0.01–0.99)."""


def bundle(run_dir: Path, name: str, cross_validation: Path | None = None, out_dir: Path = CHECKPOINTS,
           test_time: Path | None = None) -> Path:
    """Write the bundled checkpoint ``out_dir/NAME.safetensors`` from ``run_dir``; returns its path."""
    import torch
    import yaml

    from napari_m2mrf.models import load_checkpoint, save_checkpoint

    source = next((run_dir / f for f in ("best.safetensors", "last.safetensors") if (run_dir / f).is_file()), None)
    if source is None:
        raise UserError(f"{run_dir}: no best.safetensors or last.safetensors")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{run_dir}: no config.yaml (not a training run folder)")
    model, meta = load_checkpoint(source)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    evaluations = [e for e in events if e.get("event") == "evaluation"]
    steps = [e["iteration"] for e in events if e.get("event") == "iteration"]
    provenance = {
        **meta.get("provenance", {}),
        "trained_iterations": max(steps) if steps else 0,
        "selected_checkpoint": source.name,
        "trainer_validation": (max(evaluations, key=lambda e: e["score"]) if source.name.startswith("best") else evaluations[-1])
        if evaluations else None,
        "config": yaml.safe_load(config_path.read_text()),
    }
    if cross_validation is not None:
        provenance["cross_validation"] = cross_validation_summary(cross_validation)
    kept = {k: v for k, v in meta.items() if k in ("classes", "normalization", "input_size")}
    if test_time is not None:
        kept["test_time"], provenance["test_time"] = scales_to_ship(test_time)
    target = out_dir / f"{name}.safetensors"
    save_checkpoint(target, model, {**kept, "provenance": provenance}, dtype=torch.int8)
    shipped, shipped_meta = load_checkpoint(target)
    chosen = cross_validation_thresholds(cross_validation) if cross_validation is not None else None
    thresholds, validation = calibrate(shipped, shipped_meta, config_path, chosen)
    provenance["validation"] = validation
    provenance["retina_lesion_fraction"] = retina_lesion_fraction(shipped, shipped_meta, thresholds)
    save_checkpoint(target, model, {**kept, "thresholds": thresholds, "provenance": provenance}, dtype=torch.int8)
    return target


def calibrate(
    model: Any, meta: Mapping[str, Any], config_path: Path, thresholds: Mapping[str, float] | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """(per-class thresholds, validation report) of ``model`` on the validation split of the run
    whose config is ``config_path``; the thresholds are ``thresholds`` when given, else those of
    best F1 on these validation pixels."""
    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
    from napari_m2mrf.metrics import LesionMetrics
    from training.config import load_config
    from training.datasets import load_sample
    from training.sources import records as data_records

    data = load_config(config_path).data
    records = data_records(data, tuple(FUNDUS_CLASSES), data.val_split, validation=True)
    if not records:
        raise UserError(f"{config_path}: the run has no validation images to calibrate thresholds on")
    predictor = FundusPredictor(model, Preprocessing.from_meta(meta), "cpu")
    predictions = []
    metrics = LesionMetrics(FUNDUS_CLASSES)
    for record in records:
        sample = load_sample(record, FUNDUS_CLASSES, multilabel=True)
        predictions.append((predictor.predict_whole(sample.image), sample.target))
        metrics.update(*predictions[-1])
    calibrated_here = thresholds is None
    if calibrated_here:
        thresholds = usable_thresholds(metrics.best_f1_thresholds(THRESHOLD_CHOICES))
    at_thresholds = {cls.code: _iou_at(predictions, k, thresholds[cls.code]) for k, cls in enumerate(FUNDUS_CLASSES)}
    report = metrics.compute()
    return thresholds, {
        "images": [record.image.stem for record in records],
        "mean": report["mean"],
        "per_class": {
            code: {**{k: v for k, v in scores.items() if k in ("aupr_official_11pt", "aupr_dense", "iou", "f1")},
                   "iou_at_calibrated_threshold": at_thresholds[code]}
            for code, scores in report["per_class"].items()
        },
        "note": "thresholds are calibrated on these same images, so the IoU at them is optimistic"
        if calibrated_here else "thresholds from the cross-validation's pooled held-out pixels (these images among them)",
    }


def usable_thresholds(best: Mapping[str, float]) -> dict[str, float]:
    """``best`` with NaN (a class without positive pixels) replaced by the default threshold."""
    return {code: (DEFAULT_THRESHOLD if math.isnan(value) else value) for code, value in best.items()}


def cross_validation_thresholds(report_path: Path) -> dict[str, float]:
    """The thresholds a cross-validation report chose for shipping (``plain.shipping_thresholds``)."""
    report = _read_report(report_path)
    if "plain" not in report or "shipping_thresholds" not in report["plain"]:
        raise UserError(f"{report_path}: no shipping thresholds (written by an older fundus_cross_validation)")
    return usable_thresholds(report["plain"]["shipping_thresholds"])


def _read_report(report_path: Path) -> dict[str, Any]:
    if not report_path.is_file():
        raise UserError(f"{report_path}: no such cross-validation report")
    return json.loads(report_path.read_text())


def _iou_at(predictions: Sequence[tuple[np.ndarray, np.ndarray]], k: int, threshold: float) -> float:
    """Dataset-level IoU of class ``k`` when a pixel is positive at probability >= ``threshold``."""
    intersection = union = 0
    for probabilities, target in predictions:
        predicted, truth = probabilities[k] >= threshold, target[k] > 0
        intersection += int(np.count_nonzero(predicted & truth))
        union += int(np.count_nonzero(predicted | truth))
    return intersection / union if union else float("nan")


def retina_lesion_fraction(model: Any, meta: Mapping[str, Any], thresholds: Mapping[str, float]) -> dict[str, float]:
    """Per class, the fraction of the normal ``retina`` sample's pixels marked at ``thresholds``."""
    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
    from sample_data.skimage_samples import retina

    probabilities = FundusPredictor(model, Preprocessing.from_meta(meta), "cpu").predict_whole(retina())
    return {cls.code: float(np.mean(probabilities[k] >= thresholds[cls.code])) for k, cls in enumerate(FUNDUS_CLASSES)}


def scales_to_ship(report_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``test_time`` metadata, provenance summary) from a ``fundus_test_time`` report: the scales and
    thresholds it chose to ship, and its cross-fitted pooled figures per class."""
    report = _read_report(report_path)
    if "to_ship" not in report or "thresholds" not in report["to_ship"]:
        raise UserError(f"{report_path}: no test-time choice to ship (not a fundus_test_time report, or an older one)")
    pooled = report["per_class"]["pooled"]
    summary = {
        "report": report_path.name,
        "cross_fitted_aupr_official_11pt": {code: v["aupr_official_11pt"] for code, v in pooled["per_class"].items()},
        "cross_fitted_mean": pooled["mean"]["aupr_official_11pt"],
        "chosen_per_fold": report["per_class"]["chosen_per_fold"],
    }
    return {"scales": report["to_ship"]["scales"], "thresholds": report["to_ship"]["thresholds"]}, summary


def cross_validation_summary(report_path: Path) -> dict[str, Any]:
    """The pooled per-class figures of a ``fundus_cross_validation`` report (official protocol,
    and with test-time flips where the report has them), with the cross-fitted IoU."""
    report = _read_report(report_path)
    keep = ("aupr_official_11pt", "aupr_dense", "iou", "f1")
    summary: dict[str, Any] = {
        "folds": report["folds"],
        "iterations_per_fold": report["iterations_per_fold"],
        "recipe": Path(report["recipe"]).name,
        "real_images": report["real_images"],
        "extra_images": len(report.get("extra_images", [])),
    }
    for variant in ("plain", "flips"):
        if variant in report:
            pooled = report[variant]["pooled"]
            summary[variant] = {
                "mean": {k: pooled["mean"][k] for k in keep},
                "per_class": {code: {k: scores[k] for k in keep} for code, scores in pooled["per_class"].items()},
                "cross_fitted_iou": {code: entry["iou"] for code, entry in report[variant]["cross_fitted_iou"].items()},
            }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.bundle_checkpoint", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--cross-validation", type=Path, help="report.json of training.recipes.fundus_cross_validation")
    parser.add_argument("--test-time", type=Path, help="test_time.json of training.recipes.fundus_test_time")
    args = parser.parse_args(argv)
    try:
        print(bundle(args.run_dir, args.name, args.cross_validation, test_time=args.test_time))
    except UserError as error:
        print(f"error: {error}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
