"""Test-time scales for the fundus recipe, chosen without looking at the images they are scored on.

For a finished cross-validation (:mod:`training.recipes.fundus_cross_validation` ``OUT``), each
fold's model predicts its held-out images whole at every candidate scale (a factor on the model's
input size: 1.5 feeds a 1440×960 model 2160×1440 pixels, so lesions are 1.5× larger). Every
non-empty set of candidate scales (probabilities averaged) is scored per fold. The choice is
cross-fitted like the IoU thresholds: fold ``f``'s images are scored with the set of highest
official AUPR on the *other* folds' held-out images, pooled — for all classes at once
(``one_set``) and per class (``per_class``) — so no image helps choose what it is scored with.
Ties go to the smaller set, then to the set nearest 1.0. The report's ``to_ship`` names per class
the set best on every fold pooled and the thresholds calibrated on it: the ``test_time`` metadata
of a model trained on everything (``bundle_checkpoint --test-time``).

``python -m training.recipes.fundus_test_time CV_OUT [--scales 0.75,1,1.25,1.5] [--flips]`` writes
``CV_OUT/test_time.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from napari_m2mrf.models.multiscale import SCALE_RANGE
from training.recipes import IMAGES, VALIDATION

logger = logging.getLogger(__name__)

ScaleSet = tuple[float, ...]
AUPR = "aupr_official_11pt"


def scale_sets(scales: Sequence[float]) -> list[ScaleSet]:
    """Every non-empty subset of ``scales`` (sorted), smallest sets first."""
    ordered = sorted(set(scales))
    return [subset for size in range(1, len(ordered) + 1) for subset in itertools.combinations(ordered, size)]


def _preference(subset: ScaleSet) -> tuple[int, float]:
    """Tie-break key: fewer scales first, then the set whose scales lie nearest the official 1.0."""
    return len(subset), float(np.mean([abs(np.log(scale)) for scale in subset]))


def fold_scores(checkpoint: Path, data_root: Path, scales: Sequence[float], flips: bool) -> dict[ScaleSet, object]:
    """Per scale set, the ``LesionMetrics`` of ``checkpoint`` on the testing split of ``data_root``
    (probabilities of the set's scales averaged; every scale predicted once per image)."""
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
    from napari_m2mrf.metrics import LesionMetrics
    from napari_m2mrf.models import load_checkpoint
    from training.datasets import load_sample
    from training.sources import layout_records

    model, meta = load_checkpoint(checkpoint)
    predictor = FundusPredictor(model.float(), Preprocessing.from_meta(meta), "cpu")
    subsets = scale_sets(scales)
    metrics = {subset: LesionMetrics(FUNDUS_CLASSES) for subset in subsets}
    for record in layout_records(data_root, VALIDATION, tuple(FUNDUS_CLASSES)):
        sample = load_sample(record, FUNDUS_CLASSES, multilabel=True)
        by_scale = {scale: predictor.predict_whole(sample.image, flips=flips, scales=(scale,)) for scale in sorted(set(scales))}
        for subset in subsets:
            metrics[subset].update(np.mean([by_scale[scale] for scale in subset], axis=0), sample.target)
        logger.info("%s: %s scored at scales %s", checkpoint.parent.name, Path(record.image).stem, sorted(by_scale))
    return metrics


def _pooled(folds: Sequence[dict[ScaleSet, object]], subset: ScaleSet, skip: int | None = None):
    """Every fold's held-out pixels but fold ``skip``'s pooled, all classes scored with ``subset``."""
    kept = [fold for number, fold in enumerate(folds) if number != skip]
    return composed(kept, [{cls.code: subset for cls in FUNDUS_CLASSES}] * len(kept))


def best_set(folds: Sequence[dict[ScaleSet, object]], code: str | None, skip: int | None = None) -> ScaleSet:
    """The scale set of highest official AUPR (class ``code``, or the class mean when ``None``) on
    every fold's held-out images pooled, fold ``skip`` left out."""
    def score(subset: ScaleSet) -> float:
        result = _pooled(folds, subset, skip).compute()
        value = result["mean"][AUPR] if code is None else result["per_class"][code][AUPR]
        return float(value) if np.isfinite(value) else -1.0

    return max(folds[0], key=lambda subset: (score(subset), [-part for part in _preference(subset)]))


def composed(folds: Sequence[dict[ScaleSet, object]], choices: Sequence[dict[str, ScaleSet]]):
    """Every fold's held-out pixels pooled, each class of fold ``f`` scored with ``choices[f][code]``."""
    from napari_m2mrf.metrics import LesionMetrics

    pooled = LesionMetrics(FUNDUS_CLASSES)
    for fold, choice in zip(folds, choices):
        mixed = LesionMetrics(FUNDUS_CLASSES)
        mixed.merge(fold[choice[FUNDUS_CLASSES[0].code]])
        for code, subset in choice.items():
            mixed.take_class(code, fold[subset])
        pooled.merge(mixed)
    return pooled


def cross_fitted(folds: Sequence[dict[ScaleSet, object]], per_class: bool) -> dict:
    """Pooled scores when each fold uses the scale set(s) chosen on the other folds, and those choices."""
    choices = []
    for number in range(len(folds)):
        if per_class:
            choices.append({cls.code: best_set(folds, cls.code, skip=number) for cls in FUNDUS_CLASSES})
        else:
            common = best_set(folds, None, skip=number)
            choices.append({cls.code: common for cls in FUNDUS_CLASSES})
    return {
        "pooled": composed(folds, choices).compute(),
        "chosen_per_fold": [{code: list(subset) for code, subset in choice.items()} for choice in choices],
    }


def shipping_choice(folds: Sequence[dict[ScaleSet, object]]) -> dict:
    """Per class the scale set best on every fold pooled, and the thresholds of best F1 (among the
    Segment widget's 0.01 steps) on those probabilities: the ``test_time`` metadata of a model trained
    on everything (:mod:`napari_m2mrf.models.multiscale`)."""
    from training.recipes.bundle_checkpoint import THRESHOLD_CHOICES, usable_thresholds

    choice = {cls.code: best_set(folds, cls.code) for cls in FUNDUS_CLASSES}
    thresholds = composed(folds, [choice] * len(folds)).best_f1_thresholds(THRESHOLD_CHOICES)
    return {"scales": {code: list(subset) for code, subset in choice.items()}, "thresholds": usable_thresholds(thresholds)}


def scale_report(cv_out: Path, scales: Sequence[float], flips: bool = False) -> dict:
    """Score every fold of the cross-validation ``cv_out`` at ``scales``; writes ``cv_out/test_time.json``."""
    low, high = SCALE_RANGE
    if not scales or any(not np.isfinite(scale) or not low <= scale <= high for scale in scales):
        raise UserError(f"--scales must be factors between {low} and {high} (what a checkpoint may record), not {list(scales)}")
    roots = sorted(cv_out.glob("fold*_data"), key=lambda path: int(path.name[4:-5]))
    checkpoints = [cv_out / root.name[: -len("_data")] / "last.safetensors" for root in roots]
    missing = [str(path) for path in checkpoints if not path.is_file()]
    if len(roots) < 2 or missing:
        raise UserError(f"{cv_out}: not a finished cross-validation ({', '.join(missing) or 'fewer than two folds'})")
    folds = [fold_scores(checkpoint, root, scales, flips) for root, checkpoint in zip(roots, checkpoints)]
    every = {
        ",".join(f"{scale:g}" for scale in subset): _pooled(folds, subset).compute()
        for subset in folds[0]
    }
    report = {
        "cross_validation": str(cv_out),
        "scales": sorted(set(scales)),
        "flips": flips,
        "held_out": [sorted(path.stem for path in (root / IMAGES / VALIDATION).glob("*")) for root in roots],
        "one_set": cross_fitted(folds, per_class=False),
        "per_class": cross_fitted(folds, per_class=True),
        "to_ship": shipping_choice(folds),
        "every_set_pooled": every,
    }
    (cv_out / "test_time.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def _factors(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.fundus_test_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv_out", type=Path, help="the output folder of a finished fundus_cross_validation")
    parser.add_argument("--scales", type=_factors, default=[0.75, 1.0, 1.25, 1.5], help="candidate factors on the input size")
    parser.add_argument("--flips", action="store_true", help="each scale also mirrored (four passes per scale)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        report = scale_report(args.cv_out, args.scales, args.flips)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name in ("one_set", "per_class"):
        scores = report[name]["pooled"]
        line = " ".join(f"{code} {values[AUPR]:.3f}" for code, values in scores["per_class"].items())
        print(f"{name} (cross-fitted): {line} mean {scores['mean'][AUPR]:.3f}")
    print(f"to ship: {report['to_ship']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
