"""Lesion metrics: the official 11-threshold protocol, the dense AUPR against scikit-learn, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.metrics import (
    DENSE_BINS,
    OFFICIAL_THRESHOLDS,
    LesionMetrics,
    as_probability,
)

PREVALENCE = np.array([0.05, 0.02, 0.01, 0.002])  # EX, HE, SE, MA: MA is the rarest, as in IDRiD


def synthetic_image(rng: np.random.Generator, shape=(120, 180), separation=3.0):
    """(probabilities (4, H, W) float32 sigmoid outputs, masks (4, H, W) bool)."""
    masks = rng.random((4, *shape)) < PREVALENCE[:, None, None]
    logits = rng.normal(-4.0, 2.0, masks.shape) + masks * rng.normal(separation, 2.0, masks.shape)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32), masks


def official_reference(images, k: int) -> tuple[float, float]:
    """The official protocol written out as the fact sheet states it: (AUPR, IoU at 0.5) of class k."""
    precisions, recalls, iou = [], [], None
    for t in OFFICIAL_THRESHOLDS:
        tp = p = fn = 0
        for probabilities, masks in images:
            predicted = probabilities[k] > t
            tp += np.sum(predicted & masks[k])
            p += np.sum(predicted)
            fn += np.sum(~predicted & masks[k])
        with np.errstate(divide="ignore", invalid="ignore"):
            precision, recall = np.float64(tp) / p, np.float64(tp) / (tp + fn)
        precisions.append(1.0 if np.isnan(precision) else precision)
        recalls.append(0.0 if np.isnan(recall) else recall)
        if t == 0.5:
            iou = tp / (p + fn)
    return auc(recalls, precisions), iou


def test_official_protocol_pools_counts_over_images_like_the_reference():
    rng = np.random.default_rng(0)
    images = [synthetic_image(rng, separation=s) for s in (2.0, 4.0, 6.0)]
    metrics = LesionMetrics()
    for probabilities, masks in images:
        metrics.update(probabilities, masks)
    result = metrics.compute()
    assert result["images"] == 3
    for k, code in enumerate(result["classes"]):
        expected_aupr, expected_iou = official_reference(images, k)
        assert result["per_class"][code]["aupr_official_11pt"] == pytest.approx(expected_aupr, abs=1e-12)
        assert result["per_class"][code]["iou"] == pytest.approx(expected_iou, abs=1e-12)
    per_class = result["per_class"].values()
    assert result["mean"]["aupr_official_11pt"] == pytest.approx(np.mean([c["aupr_official_11pt"] for c in per_class]))
    assert result["mean"]["iou"] == pytest.approx(np.mean([c["iou"] for c in per_class]))


def test_pooled_counts_differ_from_a_mean_of_per_image_scores():
    rng = np.random.default_rng(1)
    images = [synthetic_image(rng, separation=1.0), synthetic_image(rng, separation=8.0)]
    pooled = LesionMetrics()
    per_image = []
    for probabilities, masks in images:
        pooled.update(probabilities, masks)
        single = LesionMetrics()
        single.update(probabilities, masks)
        per_image.append(single.compute()["mean"]["aupr_official_11pt"])
    concatenated = LesionMetrics()
    concatenated.update(np.concatenate([i[0] for i in images], axis=1), np.concatenate([i[1] for i in images], axis=1))
    assert pooled.compute()["per_class"] == concatenated.compute()["per_class"]
    assert abs(pooled.compute()["mean"]["aupr_official_11pt"] - np.mean(per_image)) > 1e-3


def test_threshold_is_strict_and_iou_f1_precision_sensitivity_at_one_half():
    probabilities = np.array([[[0.5, 0.51, 0.2, 0.9]]], dtype=np.float32)  # 1 class, 1 x 4 image
    masks = np.array([[[True, True, True, False]]])
    metrics = LesionMetrics(FUNDUS_CLASSES[:1])
    metrics.update(probabilities, masks)
    ex = metrics.compute()["per_class"]["EX"]
    # At t = 0.5 only 0.51 and 0.9 are positive (0.5 is not > 0.5): TP 1, P 2, FN 2.
    assert ex["iou"] == pytest.approx(1 / 4)
    assert ex["f1"] == pytest.approx(2 * 1 / (2 + 1 + 2))
    assert ex["precision"] == pytest.approx(1 / 2)
    assert ex["sensitivity"] == pytest.approx(1 / 3)


def test_eight_bit_maps_compare_strictly_at_their_own_value():
    # 51 / 255 is 0.2 exactly in float32: it is not above the 0.2 threshold.
    metrics = LesionMetrics(FUNDUS_CLASSES[:1])
    metrics.update(np.array([[[51, 52]]], dtype=np.uint8), np.array([[[True, True]]]))
    curve = metrics.precision_recall_curves()["EX"]
    assert curve.recall[2] == pytest.approx(0.5)  # t = 0.2: only 52 / 255 counts
    assert curve.recall[1] == pytest.approx(1.0)


def test_perfect_prediction_scores_one_and_the_official_curve_ends_at_precision_one():
    rng = np.random.default_rng(2)
    _, masks = synthetic_image(rng)
    metrics = LesionMetrics()
    metrics.update(masks.astype(np.float32), masks)
    result = metrics.compute()
    for code in result["classes"]:
        values = result["per_class"][code]
        assert values["aupr_official_11pt"] == 1.0
        assert values["aupr_dense"] == 1.0
        assert values["iou"] == 1.0 and values["f1"] == 1.0
    curve = metrics.precision_recall_curves()["MA"]
    assert curve.recall[-1] == 0.0 and curve.precision[-1] == 1.0  # nothing is > 1: 0/0 -> 1


def test_class_without_positive_pixels_follows_the_official_nan_rules():
    metrics = LesionMetrics(FUNDUS_CLASSES[:2])
    probabilities = np.zeros((2, 8, 8), dtype=np.float32)
    probabilities[0, :2] = 0.7  # EX: predicted somewhere, never present
    metrics.update(probabilities, np.zeros((2, 8, 8), dtype=bool))
    result = metrics.compute()
    ex, he = result["per_class"]["EX"], result["per_class"]["HE"]
    assert ex["aupr_official_11pt"] == 0.0  # recall 0/0 -> 0 at every threshold
    assert np.isnan(ex["aupr_dense"])  # average precision is undefined without positives
    assert ex["iou"] == 0.0 and ex["precision"] == 0.0
    assert np.isnan(he["iou"]) and he["precision"] == 1.0  # nothing predicted, nothing present
    assert np.isnan(result["mean"]["aupr_dense"])
    assert result["mean"]["iou"] == 0.0  # NaN classes are left out of the means


@pytest.mark.parametrize("background_logit, lesion_logit, spread", [(-4.0, 0.0, 2.0), (-14.0, -6.0, 5.0)])
def test_dense_aupr_matches_scikit_learn_within_its_bound(background_logit, lesion_logit, spread):
    # The second case puts ~15 % of the positives below 2**-16 with most of the background.
    rng = np.random.default_rng(3)
    metrics = LesionMetrics()
    all_probabilities, all_masks = [], []
    for _ in range(2):
        masks = rng.random((4, 300, 400)) < PREVALENCE[:, None, None]
        lesion = rng.normal(lesion_logit, spread, masks.shape)
        logits = np.where(masks, lesion, rng.normal(background_logit, spread, masks.shape))
        probabilities = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        metrics.update(probabilities, masks)
        all_probabilities.append(probabilities)
        all_masks.append(masks)
    result = metrics.compute()
    for k, code in enumerate(result["classes"]):
        expected = average_precision_score(
            np.concatenate([m[k].ravel() for m in all_masks]),
            np.concatenate([p[k].ravel() for p in all_probabilities]),
        )
        values = result["per_class"][code]
        assert abs(values["aupr_dense"] - expected) <= values["aupr_dense_error_bound"] + 1e-12
        assert abs(values["aupr_dense"] - expected) < 0.005
        assert values["aupr_dense_error_bound"] < 0.005


def test_dense_aupr_is_exact_for_quantised_maps_and_its_curve_matches_scikit_learn():
    rng = np.random.default_rng(4)
    masks = rng.random((1, 200, 300)) < 0.03
    scores = np.clip(rng.normal(60, 40, masks.shape) + masks * 70, 0, 255).astype(np.uint8)
    metrics = LesionMetrics(FUNDUS_CLASSES[:1])
    metrics.update(scores, masks)
    expected = average_precision_score(masks.ravel(), scores.ravel() / 255.0)
    assert metrics.compute()["per_class"]["EX"]["aupr_dense"] == pytest.approx(expected, abs=1e-12)
    precision, recall, thresholds = precision_recall_curve(masks.ravel(), scores.ravel())
    curve = metrics.precision_recall_curves(dense=True)["EX"]
    np.testing.assert_allclose(curve.thresholds * 255, thresholds, atol=0.01)
    np.testing.assert_allclose(curve.precision, precision[:-1])
    np.testing.assert_allclose(curve.recall, recall[:-1])


def test_error_bound_covers_scores_merged_into_one_bin():
    # Every score is below 2**-40 (bin 0), positives above negatives: the exact AP is 1, the
    # histogram sees one tied score (AP = prevalence); the bound must cover the whole gap.
    positives = np.full(50, 1e-13)
    negatives = np.full(950, 1e-14)
    probabilities = np.concatenate([positives, negatives]).astype(np.float32)[None, None, :]
    masks = (np.arange(1000) < 50)[None, None, :]
    metrics = LesionMetrics(FUNDUS_CLASSES[:1])
    metrics.update(probabilities, masks)
    ex = metrics.compute()["per_class"]["EX"]
    exact = average_precision_score(masks.ravel(), probabilities.ravel())
    assert exact == pytest.approx(1.0)
    assert ex["aupr_dense"] == pytest.approx(0.05)
    assert abs(ex["aupr_dense"] - exact) <= ex["aupr_dense_error_bound"] + 1e-12


def test_label_image_gives_the_same_result_as_per_class_masks():
    rng = np.random.default_rng(5)
    probabilities, masks = synthetic_image(rng)
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for cls in FUNDUS_CLASSES:  # one label per pixel: later classes win
        labels[masks[cls.label - 1]] = cls.label
    exclusive = np.stack([labels == cls.label for cls in FUNDUS_CLASSES])
    from_masks, from_labels = LesionMetrics(), LesionMetrics()
    from_masks.update(probabilities, exclusive)
    from_labels.update(probabilities, labels)
    expected, got = from_masks.compute()["per_class"], from_labels.compute()["per_class"]
    for code in expected:
        assert got[code] == pytest.approx(expected[code])


def test_streams_a_zarr_store_in_bands_with_constant_memory(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    probabilities, masks = synthetic_image(rng, shape=(90, 70))
    store = zarr.open_array(tmp_path / "p.zarr", mode="w", shape=probabilities.shape, chunks=(1, 32, 32), dtype="f4")
    store[:] = probabilities
    in_memory, streamed = LesionMetrics(), LesionMetrics()
    in_memory.update(probabilities, masks)
    monkeypatch.setattr("napari_m2mrf.metrics._PIXELS_PER_BAND", 7 * 70)  # bands of 7 rows
    for _ in range(3):
        streamed.update(store, masks)
    assert streamed._counts.shape == (4, 2, DENSE_BINS)  # the whole state, whatever the image count
    expected, got = in_memory.compute(), streamed.compute()
    assert got["images"] == 3
    he, expected_he = got["per_class"]["HE"], expected["per_class"]["HE"]
    assert he["aupr_official_11pt"] == pytest.approx(expected_he["aupr_official_11pt"])
    assert he["pixels"] == 3 * expected_he["pixels"]


def test_bad_input_is_refused_and_leaves_the_counts_unchanged():
    metrics = LesionMetrics()
    good = np.random.default_rng(7).random((4, 6, 6), dtype=np.float32)
    labels = np.arange(36).reshape(6, 6) % 5  # every class present
    metrics.update(good, labels)
    before = metrics.compute()
    with pytest.raises(ValueError, match=r"shape \(4, H, W\)"):
        metrics.update(np.zeros((3, 6, 6), dtype=np.float32), np.zeros((6, 6)))
    with pytest.raises(ValueError, match="ground truth must have shape"):
        metrics.update(good, np.zeros((5, 6)))
    bad = good.copy()
    bad[3, 5, 5] = 1.5  # last class, last band: the earlier classes were already counted
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.update(bad, np.zeros((6, 6)))
    bad[3, 5, 5] = np.nan
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.update(bad, np.zeros((6, 6)))
    assert metrics.compute() == before


def test_as_probability_scales_by_dtype():
    np.testing.assert_array_equal(as_probability(np.array([True, False])), [1.0, 0.0])
    np.testing.assert_allclose(as_probability(np.array([0, 51, 255], dtype=np.uint8)), [0.0, 0.2, 1.0])
    np.testing.assert_allclose(as_probability(np.array([0, 65535], dtype=np.uint16)), [0.0, 1.0])
    np.testing.assert_array_equal(as_probability(np.array([0, 1], dtype=np.int32)), [0.0, 1.0])
    assert as_probability(np.array([0.25], dtype=np.float64)).dtype == np.float32
    with pytest.raises(ValueError, match="int32"):
        as_probability(np.array([0, 7], dtype=np.int32))
    with pytest.raises(ValueError, match="unsupported"):
        as_probability(np.array(["a"]))


def test_every_score_lands_in_the_bin_its_edges_give_and_above_the_right_thresholds():
    from napari_m2mrf.metrics import DENSE_BIN_EDGES, _bin_index, _OFFICIAL_BIN

    edges = DENSE_BIN_EDGES
    thresholds = OFFICIAL_THRESHOLDS.astype(np.float32)
    rng = np.random.default_rng(8)
    near = np.concatenate([edges, thresholds])
    scores = np.concatenate(
        [
            near,
            np.nextafter(near, np.float32(2)),
            np.nextafter(near, np.float32(-1)),
            rng.random(200_000, dtype=np.float32),
            (rng.random(200_000) ** 30).astype(np.float32),  # crowded near 0
            (1 - rng.random(200_000) ** 8).astype(np.float32),  # crowded near 1
        ]
    )
    scores = scores[(scores >= 0) & (scores <= 1)]
    assert np.all(np.diff(edges.astype(np.float64)) > 0)
    index = _bin_index(scores)
    np.testing.assert_array_equal(index, np.searchsorted(edges, scores, side="right") - 1)
    above = sum((scores > t).astype(np.intp) for t in thresholds)
    np.testing.assert_array_equal(_OFFICIAL_BIN[index], above)


def test_best_f1_threshold_is_the_threshold_of_highest_f1_over_the_pixels():
    rng = np.random.default_rng(5)
    images = [synthetic_image(rng, shape=(60, 90)) for _ in range(3)]
    metrics = LesionMetrics(FUNDUS_CLASSES)
    for probabilities, masks in images:
        metrics.update(probabilities, masks)
    best = metrics.best_f1_thresholds()
    for k, cls in enumerate(FUNDUS_CLASSES):
        scores = np.concatenate([p[k].ravel() for p, _ in images])
        truth = np.concatenate([m[k].ravel() for _, m in images])

        def f1(threshold, scores=scores, truth=truth):
            predicted = scores >= threshold
            tp = np.sum(predicted & truth)
            return 2 * tp / (predicted.sum() + truth.sum())

        candidates = np.unique(scores)
        exact_best = max(f1(t) for t in candidates[:: max(1, len(candidates) // 2000)])
        assert f1(best[cls.code]) >= exact_best - 0.01
        assert 0.0 < best[cls.code] < 1.0


def test_best_f1_threshold_among_candidates_is_the_best_candidate():
    rng = np.random.default_rng(6)
    probabilities, masks = synthetic_image(rng, shape=(80, 100))
    metrics = LesionMetrics(FUNDUS_CLASSES)
    metrics.update(probabilities, masks)
    candidates = [0.1, 0.25, 0.5, 0.75, 0.9]
    best = metrics.best_f1_thresholds(candidates)
    for k, cls in enumerate(FUNDUS_CLASSES):
        def f1(threshold, k=k):
            predicted = probabilities[k] >= threshold
            return 2 * np.sum(predicted & masks[k]) / (predicted.sum() + masks[k].sum())

        assert best[cls.code] in candidates
        assert f1(best[cls.code]) == pytest.approx(max(f1(t) for t in candidates), abs=1e-3)


def test_best_f1_threshold_is_nan_without_positives():
    metrics = LesionMetrics(FUNDUS_CLASSES)
    metrics.update(np.full((4, 8, 8), 0.3, np.float32), np.zeros((4, 8, 8), bool))
    assert all(np.isnan(value) for value in metrics.best_f1_thresholds().values())
