"""A fundus model's test-time scales from its checkpoint metadata (no torch, like :mod:`.thresholds`).

A sigmoid lesion model may store, beside its plain ``"thresholds"``::

    "test_time": {"scales": {"EX": [1.25, 1.5], "HE": [0.75, 1.0], "SE": [0.75], "MA": [1.5]},
                  "thresholds": {"EX": 0.3, "HE": 0.25, "SE": 0.5, "MA": 0.2}}

per class code the factors on the model's input size whose probabilities are averaged for that
class (1.5: the whole image fed at 1.5× the official size, so microaneurysms are 1.5× larger),
chosen by cross-validation (:mod:`training.recipes.fundus_test_time`), and the thresholds
calibrated on those averaged probabilities. A class it leaves out is predicted at 1.0 with its
plain threshold. The ``scales`` mode of prediction (CLI default, a Segment widget choice) uses them.
"""

from __future__ import annotations

import math

from napari_m2mrf.errors import UserError
from napari_m2mrf.models.thresholds import class_thresholds, uncalibrated

SCALE_RANGE = (0.25, 2.0)  # factors outside are refused: 2x already feeds the network 4x the pixels


def _codes(meta: dict) -> list[str]:
    return [str(c["code"]) for c in meta["classes"]]


def _stored(meta: dict) -> dict:
    stored = meta.get("test_time") or {}
    if not isinstance(stored, dict):
        raise UserError(f"checkpoint test_time {stored!r} must be a mapping with 'scales' and 'thresholds'")
    return stored


def has_class_scales(meta: dict) -> bool:
    """Whether the checkpoint names test-time scales for any class."""
    return bool(_stored(meta).get("scales"))


def class_scales(meta: dict) -> list[tuple[float, ...]]:
    """Per channel (class order of the checkpoint), the sorted test-time scales; ``(1.0,)`` for a class
    the metadata leaves out. ``UserError`` for unknown class codes, empty lists or factors outside
    :data:`SCALE_RANGE`."""
    scales = _stored(meta).get("scales") or {}
    codes = _codes(meta)
    if not isinstance(scales, dict) or not set(scales) <= set(codes):
        raise UserError(f"checkpoint test-time scales {scales!r} must map class codes ({', '.join(codes)}) to lists")
    chosen = []
    for code in codes:
        factors = scales.get(code, [1.0])
        valid = isinstance(factors, list) and factors and all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f)
            and SCALE_RANGE[0] <= f <= SCALE_RANGE[1] for f in factors)
        if not valid:
            raise UserError(f"checkpoint test-time scales of {code} must be a non-empty list of factors between "
                            f"{SCALE_RANGE[0]} and {SCALE_RANGE[1]}, got {factors!r}")
        chosen.append(tuple(sorted({float(f) for f in factors})))
    return chosen


def multiscale_thresholds(meta: dict) -> dict[str, float]:
    """Per class code, the threshold calibrated on the test-time-scale probabilities; the plain
    threshold (:func:`~napari_m2mrf.models.thresholds.class_thresholds`) where none is stored."""
    plain = class_thresholds(meta)
    stored = _stored(meta).get("thresholds") or {}
    if not isinstance(stored, dict):
        raise UserError(f"checkpoint test-time thresholds {stored!r} must map class codes to numbers")
    calibrated = {code: value for code, value in stored.items() if not uncalibrated(value)}
    return class_thresholds({**meta, "thresholds": {**plain, **calibrated}})
