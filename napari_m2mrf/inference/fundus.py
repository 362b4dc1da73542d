"""Lesion segmentation of fundus photographs with an M2MRF-HRNetV2 (or any K-sigmoid-output) model.

Three modes (:func:`predict_image`):

* ``whole`` — the official protocol: the whole image rescaled (keep ratio) to the model's input
  size, one forward pass, logits resized back to the original size, sigmoid.
* ``scales`` — the same at each of the checkpoint's test-time scales (factors on the input size),
  each class averaging the probabilities of its own scales (:mod:`napari_m2mrf.models.multiscale`;
  ``whole`` for a checkpoint that records none).
* ``tiled`` — a sliding window at full resolution: tiles of ``tile`` px overlapping by ``overlap``
  px, probabilities blended with weights that fall off linearly inside the overlaps, so seams
  vanish. Where one tile covers the image the result equals running the model on the whole image
  at full resolution.

Probabilities are (K, H, W) float32 in [0, 1], channel k for label k + 1 of the checkpoint's classes
(sigmoid per lesion, NaN policy of :mod:`napari_m2mrf.models.outputs`). The model runs through
:class:`~napari_m2mrf.inference.runner.ModelRunner`: work is reported through a progress callback,
stops within one network layer when the cancel token is set, and out of memory the tile size is
halved, then the CPU used (``notify`` says so).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_m2mrf.inference.runner import ModelRunner
from napari_m2mrf.jobs import CancelToken, ProgressCallback, no_progress
from napari_m2mrf.models.outputs import SIGMOID, probabilities
from napari_m2mrf.models.preprocess import keep_ratio_size, resize_bilinear, to_normalised_tensor


FLIP_VIEWS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # tensor dims mirrored: none, X, Y, both

WHOLE = "whole"  # the official protocol: whole image rescaled to the model's input size, one pass
SCALES = "scales"  # the whole image at each of the model's test-time scales, per class (models.multiscale)
TILES = "tiles"  # full-resolution sliding window
MODES = (SCALES, WHOLE, TILES)


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: RGB mean/std on the 0–255 scale and the (long, short) edge of its input."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_scale: tuple[int, int]

    @classmethod
    def from_meta(cls, meta: dict) -> Preprocessing:
        """Read the normalisation and input size from checkpoint metadata."""
        norm = meta["normalization"]
        size = meta["input_size"]
        return cls(tuple(norm["mean"]), tuple(norm["std"]), (max(size), min(size)))


class FundusPredictor:
    """Runs a lesion model on fundus photographs; see the module docstring for the two modes."""

    def __init__(
        self, model: nn.Module, preprocessing: Preprocessing, device: str | torch.device = "auto", precision: Any = "auto"
    ) -> None:
        self.runner = ModelRunner(model, device, precision)
        self.preprocessing = preprocessing

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @property
    def model(self) -> nn.Module:
        return self.runner.model

    def _normalised(self, image: np.ndarray) -> torch.Tensor:
        return to_normalised_tensor(image, self.preprocessing.mean, self.preprocessing.std)

    def predict_whole(self, image: np.ndarray, cancel: CancelToken | None = None, flips: bool = False,
                      progress: ProgressCallback | None = None, scales: Sequence[float] = (1.0,),
                      class_scales: Sequence[Sequence[float]] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 → (K, H, W) float32 probabilities by the official whole-image protocol.

        ``flips``: test-time augmentation, the mean of the probabilities of the image as it is,
        mirrored left-right, top-bottom and both (each mapped back): four forward passes.
        ``scales``: test-time scales, factors on the model's input size (1.0: the official size;
        1.5: long and short edge 1.5× as many pixels, so lesions are 1.5× larger); the probabilities
        of every scale (and flip) are resized back to (H, W) and averaged. ``class_scales``: instead,
        per channel its own scales (e.g. microaneurysms larger, haemorrhages at 1.0); each scale of
        their union runs once.
        ``progress(done, total, message)``: the passes' layers reached (one bar over all passes, each
        pass weighted by its input area)."""
        height, width = image.shape[:2]
        normalised = self._normalised(image)
        views = FLIP_VIEWS if flips else FLIP_VIEWS[:1]
        wanted = [tuple(channel) for channel in class_scales] if class_scales is not None else None
        union = sorted({scale for channel in wanted for scale in channel}) if wanted else sorted(set(scales))
        if not union:
            raise ValueError("predict_whole needs at least one scale")
        passes = [(scale, dims) for scale in union for dims in views]
        weights = [max(1, round(100 * scale**2)) for scale, _ in passes]  # a pass costs about its input area
        total = None
        for index, (scale, dims) in enumerate(passes):

            def layers(done: int, of: int, message: str, index: int = index) -> None:
                progress(sum(weights[:index]) * of + weights[index] * done, sum(weights) * of, message)

            batch = resize_bilinear(normalised, keep_ratio_size(height, width, self._input_scale(scale)))
            logits = self.runner(batch.flip(dims) if dims else batch, cancel=cancel,
                                 progress=layers if progress is not None else None).float().cpu()
            view = probabilities(resize_bilinear(logits.flip(dims) if dims else logits, (height, width)), SIGMOID)[0]
            channels = wanted or [tuple(union)] * view.shape[0]
            if len(channels) != view.shape[0]:
                raise ValueError(f"class_scales names {len(channels)} channels; the model has {view.shape[0]}")
            if total is None:
                total = torch.zeros_like(view)
            for k, chosen in enumerate(channels):
                if scale in chosen:
                    total[k].add_(view[k], alpha=1.0 / (len(chosen) * len(views)))
        return total.numpy()

    def _input_scale(self, factor: float) -> tuple[int, int]:
        """The (long, short) input edge in pixels at ``factor`` times the model's own."""
        return tuple(max(1, round(edge * factor)) for edge in self.preprocessing.input_scale)

    def predict_tiled(
        self,
        image: np.ndarray,
        tile: int = 1024,
        overlap: int = 128,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
        notify: Callable[[str], None] = lambda message: None,
    ) -> np.ndarray:
        """(H, W, 3) uint8 → (K, H, W) float32 probabilities from overlapping full-resolution tiles."""
        return self.runner.run_tiled(
            self._normalised(image), tile, overlap, SIGMOID, progress=progress, cancel=cancel, notify=notify
        )


def predict_image(
    predictor: FundusPredictor,
    image: np.ndarray,
    mode: str,
    meta: dict,
    tile: int = 1024,
    overlap: int = 128,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """(H, W, 3) uint8 → (K, H, W) float32 probabilities in ``mode`` (:data:`MODES`); ``meta``: the
    checkpoint's metadata (its test-time scales for ``scales``)."""
    from napari_m2mrf.models.multiscale import class_scales

    if mode == TILES:
        return predictor.predict_tiled(image, tile, overlap, progress, cancel, notify)
    if mode not in (WHOLE, SCALES):
        raise ValueError(f"unknown prediction mode {mode!r}; one of {', '.join(MODES)}")
    chosen = class_scales(meta) if mode == SCALES else None
    return predictor.predict_whole(image, cancel, progress=progress, class_scales=chosen)
