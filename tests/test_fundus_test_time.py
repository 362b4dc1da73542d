"""Test-time scales for the fundus recipe: every set of candidate scales scored, and the set used on a
fold's images chosen on the other folds only (per class or one for all classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from napari_m2mrf.metrics import LesionMetrics
from training.recipes.fundus_test_time import best_set, cross_fitted, main, scale_sets, scale_report


def _scored(truth: np.ndarray, good: dict[str, float], rng: np.random.Generator) -> LesionMetrics:
    """Metrics of a prediction that separates class ``code``'s lesions by ``good[code]`` (0: noise)."""
    scores = rng.random(truth.shape).astype(np.float32) * 0.5
    for k, lesion in enumerate(FUNDUS_CLASSES):
        scores[k] += truth[k] * good.get(lesion.code, 0.0)
    metrics = LesionMetrics(FUNDUS_CLASSES)
    metrics.update(np.clip(scores, 0, 1), truth)
    return metrics


def test_scale_sets_are_every_non_empty_subset_smallest_first() -> None:
    sets = scale_sets([1.5, 1.0, 1.0, 0.75])
    assert sets == [(0.75,), (1.0,), (1.5,), (0.75, 1.0), (0.75, 1.5), (1.0, 1.5), (0.75, 1.0, 1.5)]


def test_each_fold_uses_the_set_chosen_on_the_other_folds_only() -> None:
    rng = np.random.default_rng(0)
    folds = []
    # fold 1: scale 1.5 finds MA; fold 2: scale 1.0 does. A fold's own best must never decide its choice.
    for better in ((1.5,), (1.0,)):
        truth = rng.random((4, 48, 48)) < 0.1
        folds.append({
            subset: _scored(truth, {"EX": 0.5, "MA": 0.5 if subset == better else 0.0}, rng)
            for subset in [(1.0,), (1.5,), (1.0, 1.5)]
        })
    assert best_set(folds, "MA", skip=0) == (1.0,) and best_set(folds, "MA", skip=1) == (1.5,)
    report = cross_fitted(folds, per_class=True)
    assert [choice["MA"] for choice in report["chosen_per_fold"]] == [[1.0], [1.5]]
    expected = LesionMetrics(FUNDUS_CLASSES)
    for fold, subset in zip(folds, [(1.0,), (1.5,)]):
        composed = LesionMetrics(FUNDUS_CLASSES)
        composed.merge(fold[(1.0,)])
        composed.take_class("MA", fold[subset])
        expected.merge(composed)
    assert report["pooled"]["per_class"]["MA"] == pytest.approx(expected.compute()["per_class"]["MA"], nan_ok=True)
    # cross-fitting here picks, for each fold, the scale that fails on it: MA is noise on both folds
    assert report["pooled"]["per_class"]["MA"]["aupr_official_11pt"] < 0.3
    one = cross_fitted(folds, per_class=False)
    assert all(len({tuple(v) for v in choice.values()}) == 1 for choice in one["chosen_per_fold"])


def test_ties_go_to_the_smaller_set_nearest_the_official_scale() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((4, 32, 32)) < 0.1
    same = _scored(truth, {"EX": 0.5}, rng)
    folds = [{(0.75,): same, (1.0,): same, (1.25,): same, (1.0, 1.25): same}] * 2
    assert best_set(folds, "EX") == (1.0,)


def test_an_unfinished_cross_validation_or_bad_scales_are_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match="not a finished cross-validation"):
        scale_report(tmp_path, [1.0])
    (tmp_path / "fold1_data").mkdir()
    (tmp_path / "fold2_data").mkdir()
    with pytest.raises(UserError, match="fold1/last.safetensors"):
        scale_report(tmp_path, [1.0])
    for bad in ("0,1", "nan", "1,3"):
        assert main([str(tmp_path), "--scales", bad]) == 2
        assert "--scales must be factors" in capsys.readouterr().err
