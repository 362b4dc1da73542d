"""Per-class thresholds from checkpoint metadata (no torch, so widgets can use it before PyTorch loads:
``napari_m2mrf.models`` imports torch lazily).

A sigmoid (multi-label) model stores the thresholds it was calibrated with as checkpoint metadata
``"thresholds": {"EX": 0.35, …}`` per class code; a class it does not name, or could not calibrate
(null or NaN), gets 0.5. A softmax model takes each pixel's most probable class, so none apply.
"""

from __future__ import annotations

import math

from napari_m2mrf.errors import UserError

DEFAULT_THRESHOLD = 0.5


def uses_thresholds(meta: dict) -> bool:
    """True for sigmoid (multi-label) models; softmax models take the most probable class (argmax)."""
    return meta.get("output", "sigmoid") != "softmax"


def uncalibrated(value: object) -> bool:
    """A stored threshold that means "not calibrated": null or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def class_thresholds(meta: dict) -> dict[str, float]:
    """Per thresholded class code (every class of a sigmoid model, none of a softmax one), in channel
    order, its threshold from the checkpoint's ``"thresholds"``; 0.5 for a class it leaves out or
    could not calibrate (null or NaN, e.g. no lesion of that class in the held-out data).

    ``UserError`` when ``"thresholds"`` is not a mapping of class codes to numbers in (0, 1).
    """
    if not uses_thresholds(meta):
        return {}
    stored = meta.get("thresholds") or {}
    codes = [str(c["code"]) for c in meta["classes"]]
    if not isinstance(stored, dict) or not set(stored) <= set(codes):
        raise UserError(f"checkpoint thresholds {stored!r} must map class codes ({', '.join(codes)}) to numbers")
    calibrated = {code: value for code, value in stored.items() if not uncalibrated(value)}
    for code, value in calibrated.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise UserError(f"checkpoint threshold of {code} must be a number between 0 and 1, got {value!r}")
    return {code: float(calibrated.get(code, DEFAULT_THRESHOLD)) for code in codes}
