"""Lesion segmentation metrics: AUPR and IoU per class, streamed over a whole dataset.

Two precision-recall summaries are reported side by side, each named for what it is:

``aupr_official_11pt``
    The IDRiD / official M2MRF protocol. Pixel counts are pooled over every image of the set
    (dataset level, not a mean of per-image scores). For each of the 11 thresholds
    ``t = 0.0, 0.1, ..., 1.0`` a pixel is predicted positive when ``probability > t`` (strict).
    Precision = TP / P (P = predicted positives), 0/0 -> 1; recall = TP / (TP + FN), 0/0 -> 0.
    AUPR = the trapezoid rule over the 11 (recall, precision) points, as ``sklearn.metrics.auc``
    computes it. IoU, F1, precision and sensitivity are taken at ``t = 0.5`` with
    IoU = TP / (P + FN) and F1 = 2 TP / (P + TP + FN).

``aupr_dense``
    Average precision over all thresholds, the quantity scikit-learn's
    ``average_precision_score`` computes (``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct
    scores, a pixel being positive when ``probability >= score``), from a fixed histogram of
    ``DENSE_BINS`` bins; see :class:`LesionMetrics` for its error bound, which is reported with
    it as ``aupr_dense_error_bound``.

Both come from one histogram per class of positive and negative pixels, whose bins are split at
the official thresholds, so the official counts are exact sums of its bins. Probabilities are
compared in float32, as the official float32 probability maps were. The accumulator's memory
does not depend on the number or size of the images (4.6 MB for four classes), and images are
read one class and one band of rows at a time, so zarr or dask arrays are never loaded whole.
numpy only: shared by the trainer and the widgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES, LesionClass

OFFICIAL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.0, 11)
"""The official protocol's thresholds 0.0, 0.1, ..., 1.0 (``np.linspace(0, 1, 11)``)."""

IOU_THRESHOLD: float = 0.5
"""Threshold of the official IoU / F1 / precision / sensitivity (one of the 11 thresholds)."""

# Histogram layout (see LesionMetrics). Base bins: [0, 2**-40) | 256 bins per octave up to
# 2**-16 | bins of width 2**-16 up to 1 - 2**-16 | one bin per float32 value up to 1.0. Then each
# base bin holding one of the thresholds 0.0 .. 0.9 is split into (<= threshold, > threshold).
_UNIFORM_STEPS = 2**16
_TAIL_SHIFT = 23 - 8  # keep 8 of float32's 23 mantissa bits: 256 bins per octave
_TAIL_KEY_FLOOR = int(np.float32(2.0**-40).view(np.int32)) >> _TAIL_SHIFT
_UNIFORM_START_BITS = int(np.float32(2.0**-16).view(np.int32))
_TAIL_BINS = (_UNIFORM_START_BITS >> _TAIL_SHIFT) - _TAIL_KEY_FLOOR  # 24 octaves x 256
_TOP_START = np.float32(1.0 - 2.0**-16)
_TOP_START_BITS = int(_TOP_START.view(np.int32))
_TOP_OFFSET = _TAIL_BINS + _UNIFORM_STEPS - 1
_THRESHOLDS_F32 = OFFICIAL_THRESHOLDS.astype(np.float32)


def _base_lower_edges() -> np.ndarray:
    """Lower edge of every base bin (float32, ascending): 0, the low-tail bins, the uniform bins
    1..2**16 - 2 (times 2**-16), then each float32 value from 1 - 2**-16 to 1."""
    tail_keys = (np.arange(_TAIL_BINS, dtype=np.int64) + _TAIL_KEY_FLOOR) << _TAIL_SHIFT
    return np.concatenate(
        [
            [0.0],
            tail_keys.astype(np.int32).view(np.float32),
            np.arange(1, _UNIFORM_STEPS - 1) / _UNIFORM_STEPS,
            _TOP_START + np.arange(2**8 + 1) * 2.0**-24,
        ]
    ).astype(np.float32)


def _split_at_thresholds(base_edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(final lower edges, final bin of each base bin's lower part, split threshold per base bin).

    A score in base bin ``b`` lands in final bin ``first[b] + (score > split[b])``; ``split`` is
    +inf except in the bins holding a threshold (no score is above 1.0, so it splits nothing).
    """
    splits = _THRESHOLDS_F32[:-1]
    holders = np.searchsorted(base_edges, splits, side="right") - 1
    split = np.full(base_edges.shape, np.inf, dtype=np.float32)
    split[holders] = splits
    inserted = np.zeros(base_edges.shape, dtype=np.intp)
    inserted[holders + 1] = 1
    first = np.arange(len(base_edges)) + np.cumsum(inserted)
    edges = np.insert(base_edges, holders + 1, np.nextafter(splits, np.float32(2)))
    return edges, first, split


DENSE_BIN_EDGES, _FIRST_BIN, _SPLIT_AT = _split_at_thresholds(_base_lower_edges())
"""Lower edges (float32) of the histogram bins: a score is in the last bin whose edge is <= it."""

DENSE_BINS: int = len(DENSE_BIN_EDGES)
"""Number of histogram bins (71,946): fine at both ends of [0, 1], where sigmoid scores crowd."""

# Official threshold index of each bin: its scores are above exactly this many thresholds.
_OFFICIAL_BIN = np.searchsorted(_THRESHOLDS_F32, DENSE_BIN_EDGES, side="left")
_IOU_INDEX = int(np.flatnonzero(np.isclose(OFFICIAL_THRESHOLDS, IOU_THRESHOLD))[0])
_PIXELS_PER_BAND = 1 << 18  # bands small enough to reuse memory, large enough to vectorise


def as_probability(array: Any) -> np.ndarray:
    """A probability map as float32 in [0, 1], scaled by its dtype.

    bool -> 0/1; uint8 -> value / 255; uint16 -> value / 65535; float (16/32/64 bit) -> as is,
    which must lie in [0, 1]. Any other integer dtype is accepted only when its values are 0 and 1.
    Raises ``ValueError`` naming the problem (dtype or value range).
    """
    values = np.asarray(array)
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255)
    if values.dtype == np.uint16:
        return values.astype(np.float32) / np.float32(65535)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(
                f"integer probability maps must be uint8 (0..255) or uint16 (0..65535), "
                f"or 0/1 masks; got {values.dtype} with values {values.min()}..{values.max()}"
            )
        return values.astype(np.float32)
    if np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32, copy=False)
        if values.size:
            low, high = values.min(), values.max()
            if not (0.0 <= low and high <= 1.0):
                raise ValueError(f"probabilities must lie in [0, 1]; got values {low}..{high}")
        return values
    raise ValueError(f"unsupported probability dtype {values.dtype}")


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Points of one class's precision-recall curve, ordered by increasing threshold.

    ``thresholds``, ``precision`` and ``recall`` are 1-D float64 arrays of the same length.
    For the official curve a pixel is positive when ``probability > threshold``; for the dense
    curve when ``probability >= threshold`` (a histogram bin's lower edge; empty bins are left out).
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


class LesionMetrics:
    """Streaming accumulator of per-class AUPR and IoU over a dataset of probability maps.

    Call :meth:`update` once per image, then :meth:`compute` (or :meth:`precision_recall_curves`).

    Memory: per class, 2 x ``DENSE_BINS`` int64 counts (negative and positive pixels per bin),
    independent of how many images are streamed.

    Histogram. Sigmoid outputs crowd at both ends of [0, 1] (background near 0, confident
    lesions near 1), so the bins are: one bin for scores below 2**-40; 256 bins per octave from
    2**-40 to 2**-16 (relative width 0.4 %); bins of width 2**-16 up to 1 - 2**-16; then one bin
    per float32 value up to 1.0. Each bin holding one of the thresholds 0.0, ..., 0.9 is split
    into scores ``<= t`` and ``> t``, so every bin lies wholly above or below each official
    threshold and the official counts are sums of bins (``DENSE_BIN_EDGES`` has the edges).

    Dense AUPR error bound. The histogram AP treats all scores of a bin as one tied score, so it
    equals scikit-learn's AP exactly whenever each non-empty bin holds a single distinct value:
    binary masks, 8-bit and 16-bit maps, scores at 0.0 or at 1 - 2**-16 and above. Otherwise
    only the order of pixels *inside* a bin is lost. With ``A`` true and ``F`` false
    positives in the bins above ``b``, ``p`` positive and ``n`` negative pixels in ``b`` and
    ``N`` positives in all, the exact contribution of ``b`` to AP lies between the two extreme
    orders of its pixels: at most ``p (A + p) / (A + p + F) / N`` (all positives first, tied) and
    at least ``sum_{j=1..p} (A + j) / (A + j + F + n) / N`` (all negatives first, positives one by
    one) ``>= (p - (F + n) ln(1 + p / (A + F + n))) / N``. The histogram's own contribution
    ``p (A + p) / (A + p + F + n) / N`` lies in the same interval, so
    ``|AP_histogram - AP_exact| <= max(sum upper - AP_histogram, AP_histogram - sum lower)``,
    reported per class as ``aupr_dense_error_bound``. The bound is small when no bin mixes many
    positives with many negatives: for maps of a few million pixels with continuous scores it is
    typically below 1e-3 (``tests/test_metrics.py`` checks both the bound and scikit-learn,
    also with 15 % of the positives among the background below 2**-16); it grows only when many
    positives and negatives share a bin, e.g. scores rounded to a few values below 2**-40.
    """

    def __init__(self, classes: Sequence[LesionClass] = FUNDUS_CLASSES) -> None:
        """``classes``: the classes of the probability channels, in channel order (channel ``k``
        is ``classes[k]``; its ``label`` is the class's value in a label image)."""
        if not classes:
            raise ValueError("LesionMetrics needs at least one class")
        self.classes: tuple[LesionClass, ...] = tuple(classes)
        count = len(self.classes)
        self._counts = np.zeros((count, 2, DENSE_BINS), dtype=np.int64)  # [class, is_positive, bin]
        self.images = 0

    def update(self, probabilities: Any, ground_truth: Any) -> None:
        """Add one image.

        ``probabilities``: (K, H, W) array-like (numpy, zarr, dask), K = number of classes, float
        in [0, 1] or a dtype :func:`as_probability` scales. ``ground_truth``: (K, H, W) masks
        (nonzero = lesion) or an (H, W) integer label image (``classes[k].label`` = lesion ``k``).
        Raises ``ValueError`` for mismatched shapes or out-of-range probabilities; the counts are
        left as they were when it does.
        """
        count = len(self.classes)
        shape = tuple(probabilities.shape)
        if len(shape) != 3 or shape[0] != count:
            raise ValueError(f"probabilities must have shape ({count}, H, W); got {shape}")
        truth_shape = tuple(ground_truth.shape)
        if truth_shape not in (shape, shape[1:]):
            raise ValueError(
                f"ground truth must have shape {shape} (masks) or {shape[1:]} (labels); got {truth_shape}"
            )
        counts = np.zeros_like(self._counts)
        height, width = shape[1:]
        rows = max(1, _PIXELS_PER_BAND // max(width, 1))
        for k, lesion in enumerate(self.classes):
            for top in range(0, height, rows):
                band = slice(top, min(top + rows, height))
                scores = as_probability(probabilities[k, band]).ravel()
                if len(truth_shape) == 3:
                    positive = np.asarray(ground_truth[k, band]).ravel() != 0
                else:
                    positive = np.asarray(ground_truth[band]).ravel() == lesion.label
                _count_into(counts[k], scores, positive)
        self._counts += counts
        self.images += 1

    def compute(self) -> dict[str, Any]:
        """The metrics of everything streamed so far.

        Returns ``{"classes": [codes], "images": n, "per_class": {code: {...}}, "mean": {...},
        "official_thresholds": [...], "iou_threshold": 0.5, "dense_bins": B}``. Each class has
        ``aupr_official_11pt``, ``aupr_dense``, ``aupr_dense_error_bound``, ``iou``, ``f1``,
        ``precision``, ``sensitivity`` (fractions in [0, 1]; the last four at t = 0.5),
        ``positive_pixels`` and ``pixels``. ``mean`` averages the classes' values (mAUPR, mIoU,
        ...) ignoring NaN. NaN marks an undefined value: ``aupr_dense`` of a class without
        positive pixels, IoU and F1 when there are neither positives nor predictions at 0.5.
        """
        per_class = {cls.code: self._class_metrics(k) for k, cls in enumerate(self.classes)}
        averaged = ("aupr_official_11pt", "aupr_dense", "iou", "f1", "precision", "sensitivity")
        mean = {}
        for name in averaged:
            values = np.array([metrics[name] for metrics in per_class.values()], dtype=np.float64)
            mean[name] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        return {
            "classes": [cls.code for cls in self.classes],
            "images": self.images,
            "per_class": per_class,
            "mean": mean,
            "official_thresholds": [float(t) for t in OFFICIAL_THRESHOLDS],
            "iou_threshold": IOU_THRESHOLD,
            "dense_bins": DENSE_BINS,
        }

    def precision_recall_curves(self, dense: bool = False) -> dict[str, PrecisionRecallCurve]:
        """Per class code, the points of the official 11-threshold curve, or with ``dense=True``
        one point per non-empty histogram bin (for plotting)."""
        curves = {}
        for k, cls in enumerate(self.classes):
            if dense:
                curves[cls.code] = _dense_curve(self._counts[k])
            else:
                precision, recall = _official_points(_official_counts(self._counts[k]))
                curves[cls.code] = PrecisionRecallCurve(OFFICIAL_THRESHOLDS.copy(), precision, recall)
        return curves

    def best_f1_thresholds(self, candidates: Sequence[float] | None = None) -> dict[str, float]:
        """Per class code, the probability threshold of highest F1 over everything streamed (a pixel
        is positive when its probability is >= the threshold); NaN for a class without positive
        pixels. Used to calibrate a model's per-class thresholds on held-out data.

        ``candidates``: the thresholds allowed (e.g. the 0.01 steps a GUI spin box offers); each is
        scored at the first histogram bin edge at or above it, exact up to one bin (see the class
        docstring). Without them, every non-empty bin's lower edge is a candidate."""
        thresholds = {}
        for k, cls in enumerate(self.classes):
            curve = _dense_curve(self._counts[k])
            total = curve.precision + curve.recall
            f1 = np.divide(2 * curve.precision * curve.recall, total, out=np.zeros_like(total), where=total > 0)
            if f1.max(initial=0) <= 0:
                thresholds[cls.code] = float("nan")
                continue
            if candidates is None:
                thresholds[cls.code] = float(curve.thresholds[int(np.argmax(f1))])
                continue
            allowed = np.asarray(candidates, dtype=np.float64)
            at = np.searchsorted(curve.thresholds, allowed)
            scores = np.where(at < len(f1), f1[np.minimum(at, len(f1) - 1)], 0.0)
            thresholds[cls.code] = float(allowed[int(np.argmax(scores))])
        return thresholds

    def merge(self, other: LesionMetrics) -> None:
        """Add ``other``'s pixel counts (same classes), as if its images had been streamed here."""
        if other.classes != self.classes:
            raise ValueError("LesionMetrics.merge needs the same classes in the same order")
        self._counts += other._counts
        self.images += other.images

    def take_class(self, code: str, other: LesionMetrics) -> None:
        """Replace class ``code``'s counts by ``other``'s (same classes, same images): the scores of a
        prediction whose channel ``code`` comes from another source, e.g. another test-time scale."""
        if other.classes != self.classes:
            raise ValueError("LesionMetrics.take_class needs the same classes in the same order")
        k = [cls.code for cls in self.classes].index(code)
        self._counts[k] = other._counts[k]

    def overlap_at(self, code: str, threshold: float) -> tuple[int, int]:
        """(intersection, union) pixel counts of class ``code``'s prediction ``>= threshold`` with
        its ground truth, the threshold taken at the first bin edge at or above it (exact up to one
        bin, as in :meth:`best_f1_thresholds`)."""
        k = [cls.code for cls in self.classes].index(code)
        negatives, positives = self._counts[k]
        first = int(np.searchsorted(DENSE_BIN_EDGES, threshold, side="left"))
        true_positive = int(positives[first:].sum())
        return true_positive, int(positives.sum()) + int(negatives[first:].sum())

    def _class_metrics(self, k: int) -> dict[str, float | int]:
        official = _official_counts(self._counts[k])
        negatives, positives = official
        tp, fp = _counts_above_thresholds(official)
        total_positive = int(positives.sum())
        predicted = tp[_IOU_INDEX] + fp[_IOU_INDEX]
        true_positive = tp[_IOU_INDEX]
        false_negative = total_positive - true_positive
        precision, recall = _official_points(official)
        dense_ap, dense_bound = _dense_average_precision(self._counts[k])
        return {
            "aupr_official_11pt": _trapezoid_auc(recall, precision),
            "aupr_dense": dense_ap,
            "aupr_dense_error_bound": dense_bound,
            "iou": _ratio(true_positive, predicted + false_negative),
            "f1": _ratio(2 * true_positive, predicted + true_positive + false_negative),
            "precision": float(precision[_IOU_INDEX]),
            "sensitivity": float(recall[_IOU_INDEX]),
            "positive_pixels": total_positive,
            "pixels": int(negatives.sum()) + total_positive,
        }


def _count_into(counts: np.ndarray, scores: np.ndarray, positive: np.ndarray) -> None:
    """Add one band of pixels to ``counts`` (2, DENSE_BINS) [negative, positive], in place:
    ``scores`` (M,) float32 in [0, 1], ``positive`` (M,) bool."""
    index = _bin_index(scores)
    every = np.bincount(index, minlength=DENSE_BINS)
    lesion = np.bincount(index[positive], minlength=DENSE_BINS)
    counts[0] += every - lesion
    counts[1] += lesion


def _bin_index(scores: np.ndarray) -> np.ndarray:
    """Bin of each score (M,) float32 in [0, 1] in ``DENSE_BIN_EDGES``, as (M,) intp.

    Every step is exact: scaling by a power of two, the float's bit pattern (ordered like the
    value for non-negative floats, consecutive float32 values having consecutive patterns), and
    the strict comparison with the threshold a bin is split at.
    """
    bits = scores.view(np.int32)
    base = (scores * np.float32(_UNIFORM_STEPS)).astype(np.int32)  # all int32: fast masked copies
    base += _TAIL_BINS
    tail = bits >> _TAIL_SHIFT
    tail -= _TAIL_KEY_FLOOR - 1
    np.maximum(tail, 0, out=tail)
    np.copyto(base, tail, where=bits < _UNIFORM_START_BITS)
    np.copyto(base, bits - (_TOP_START_BITS - _TOP_OFFSET), where=bits >= _TOP_START_BITS)
    index = _FIRST_BIN[base]
    index += scores > _SPLIT_AT[base]
    return index


def _official_counts(counts: np.ndarray) -> np.ndarray:
    """(2, 12) counts per official bin (bin i: above exactly i thresholds) from (2, DENSE_BINS)."""
    return np.stack([np.bincount(_OFFICIAL_BIN, weights=row, minlength=12) for row in counts]).astype(np.int64)


def _counts_above_thresholds(official: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TP, FP) at each official threshold, each (11,) int64, from the (2, 12) bin counts."""
    above = np.cumsum(official[:, ::-1], axis=1)[:, ::-1]  # above[:, i] = pixels in bins >= i
    return above[1, 1:], above[0, 1:]


def _official_points(official: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) at the 11 thresholds with the official NaN rules (0/0 -> 1 and -> 0)."""
    tp, fp = _counts_above_thresholds(official)
    total_positive = official[1].sum()
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones(tp.shape), where=predicted > 0)
    recall = np.divide(tp, total_positive, out=np.zeros(tp.shape), where=total_positive > 0)
    return precision, recall


def _trapezoid_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under y(x) by the trapezoid rule for monotonic x, as ``sklearn.metrics.auc``."""
    return float(abs(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)))


def _dense_average_precision(dense: np.ndarray) -> tuple[float, float]:
    """(AP, bound on |AP - exact AP|) from the (2, DENSE_BINS) histogram; (NaN, NaN) when
    there are no positive pixels. See :class:`LesionMetrics` for the bound."""
    negatives = dense[0, ::-1].astype(np.float64)  # highest scores first
    positives = dense[1, ::-1].astype(np.float64)
    total_positive = positives.sum()
    if total_positive == 0:
        return float("nan"), float("nan")
    tp_above = np.cumsum(positives) - positives
    fp_above = np.cumsum(negatives) - negatives
    has = positives > 0
    a, f, p, n = tp_above[has], fp_above[has], positives[has], negatives[has]
    histogram = p * (a + p) / (a + p + f + n)
    upper = p * (a + p) / (a + p + f)
    others = f + n
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = np.where(others > 0, others * np.log1p(p / (a + others)), 0.0)
    lower = np.maximum(p - harmonic, 0.0)
    ap = histogram.sum() / total_positive
    bound = max(upper.sum() - histogram.sum(), histogram.sum() - lower.sum(), 0.0) / total_positive
    return float(ap), float(bound)


def _dense_curve(dense: np.ndarray) -> PrecisionRecallCurve:
    """Precision and recall at each non-empty bin's lower edge, increasing thresholds."""
    above = np.cumsum(dense[:, ::-1], axis=1)[:, ::-1].astype(np.float64)  # pixels with bin >= b
    occupied = dense.sum(axis=0) > 0
    tp, predicted = above[1, occupied], above.sum(axis=0)[occupied]
    total_positive = above[1, 0]
    precision = np.divide(tp, predicted, out=np.ones(tp.shape), where=predicted > 0)
    recall = np.divide(tp, total_positive, out=np.zeros(tp.shape), where=total_positive > 0)
    return PrecisionRecallCurve(DENSE_BIN_EDGES[occupied].astype(np.float64), precision, recall)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")
