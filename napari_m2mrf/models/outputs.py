"""Model outputs: logits → probabilities → labels, one way for the fundus job, the slide job and the trainer.

A checkpoint's ``"output"`` says how its logits become probabilities: ``"sigmoid"`` (one channel
per class, multi-label; the default) or ``"softmax"`` (over all channels; the class whose label is
0 is the background). :func:`probabilities` is the only place this happens;
:func:`probabilities_to_labels` and :func:`labels` the only places probabilities become labels.

**NaN policy** (one, everywhere): a NaN logit gives probability 0 for its channel. In practice:
a sigmoid channel with a NaN logit is 0; a softmax pixel with some NaN channels spreads its
probability over the others, and one whose channels are all NaN is 0 everywhere — so labels call
it background. Infinite logits are clamped to the largest finite float32 first. Nothing NaN ever
leaves this module: a barely trained network that overflows in eval mode is scored (and shown) as
"no lesion" rather than breaking the metrics or the label map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from napari_m2mrf.errors import UserError

SIGMOID = "sigmoid"
SOFTMAX = "softmax"
OUTPUTS = (SIGMOID, SOFTMAX)


def output_kind(meta: Mapping[str, Any]) -> str:
    """``"sigmoid"`` or ``"softmax"``: how checkpoint metadata ``meta`` turns logits into probabilities."""
    kind = meta.get("output", SIGMOID)
    if kind not in OUTPUTS:
        raise UserError(f"checkpoint output must be one of {', '.join(OUTPUTS)}; got {kind!r}")
    return kind


def probabilities(logits: torch.Tensor, output: str = SIGMOID, dim: int = -3) -> torch.Tensor:
    """float32 probabilities of ``logits`` (channels along ``dim``: ``(K, H, W)`` or ``(N, K, H, W)``),
    sigmoid per channel or softmax over channels, under the module's NaN policy."""
    if output not in OUTPUTS:
        raise UserError(f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    logits = torch.nan_to_num(logits.float(), nan=float("-inf"))  # ±inf → ±largest finite, NaN → -inf
    result = torch.sigmoid(logits) if output == SIGMOID else torch.softmax(logits, dim=dim)
    return torch.nan_to_num(result, nan=0.0)  # a softmax over channels that are all NaN


def foreground_channels(meta: Mapping[str, Any]) -> list[int]:
    """The channels that are classes to show or score: every channel of a sigmoid model; the
    channels of a softmax model whose class label is not 0 (the background)."""
    classes = meta["classes"]
    if output_kind(meta) == SIGMOID:
        return list(range(len(classes)))
    return [k for k, c in enumerate(classes) if int(c["label"]) != 0]


def class_probabilities(logits: torch.Tensor, meta: Mapping[str, Any]) -> tuple[np.ndarray, list[dict]]:
    """``K×h×w`` logits → (``K'×h×w`` float32 probabilities of the non-background classes, their
    class entries of ``meta["classes"]``)."""
    keep = foreground_channels(meta)
    result = probabilities(logits, output_kind(meta))[keep].cpu().numpy()
    return result, [meta["classes"][k] for k in keep]


def probabilities_to_labels(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(K, H, W) sigmoid probabilities → (H, W) uint8 channel numbers: 1 + the most probable channel
    above its threshold, else 0."""
    thresholds_arr = np.asarray(thresholds, np.float32).reshape(-1, 1, 1)
    above = np.where(probabilities > thresholds_arr, probabilities, -1.0)
    best = above.argmax(axis=0)
    labels = (best + 1).astype(np.uint8)
    labels[np.take_along_axis(above, best[None], axis=0)[0] < 0] = 0
    return labels


def labels(
    probabilities: np.ndarray, meta: Mapping[str, Any], thresholds: Sequence[float] | None = None
) -> np.ndarray:
    """(K, H, W) probabilities of all channels (as :func:`probabilities` gives) → (H, W) uint8 label
    values of the checkpoint's classes.

    ``"softmax"``: the most probable channel's label (``thresholds`` ignored). ``"sigmoid"``: the most
    probable class above its threshold (default: the checkpoint's calibrated thresholds, else 0.5),
    else background (0).
    """
    from napari_m2mrf.models.thresholds import class_thresholds

    values = np.array([int(c["label"]) for c in meta["classes"]], np.uint8)
    if output_kind(meta) == SOFTMAX:
        return values[np.asarray(probabilities).argmax(axis=0)]
    thresholds = list(thresholds) if thresholds is not None else list(class_thresholds(meta).values())
    if len(thresholds) != len(values):
        raise UserError(f"{len(thresholds)} thresholds given for the model's {len(values)} classes")
    return np.concatenate(([0], values)).astype(np.uint8)[probabilities_to_labels(probabilities, thresholds)]


def logits_to_labels(logits: torch.Tensor, meta: Mapping[str, Any], thresholds: Sequence[float] | None = None) -> np.ndarray:
    """``K×h×w`` logits → ``h×w`` uint8 label values: :func:`labels` of :func:`probabilities`."""
    return labels(probabilities(logits, output_kind(meta)).cpu().numpy(), meta, thresholds)
