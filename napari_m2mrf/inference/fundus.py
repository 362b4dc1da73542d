"""Lesion segmentation of fundus photographs with an M2MRF-HRNetV2 (or any K-sigmoid-output) model.

Two modes:

* ``whole`` — the official protocol: the whole image rescaled (keep ratio) to the model's input
  size, one forward pass, logits resized back to the original size, sigmoid.
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
                      progress: ProgressCallback | None = None, scales: Sequence[float] = (1.0,)) -> np.ndarray:
        """(H, W, 3) uint8 → (K, H, W) float32 probabilities by the official whole-image protocol.

        ``flips``: test-time augmentation, the mean of the probabilities of the image as it is,
        mirrored left-right, top-bottom and both (each mapped back): four forward passes.
        ``scales``: test-time scales, factors on the model's input size (1.0: the official size;
        1.5: long and short edge 1.5× as many pixels, so lesions are 1.5× larger); the probabilities
        of every scale (and flip) are resized back to (H, W) and averaged.
        ``progress(done, total, message)``: the passes' layers reached (one bar over all passes)."""
        height, width = image.shape[:2]
        normalised = self._normalised(image)
        views = FLIP_VIEWS if flips else FLIP_VIEWS[:1]
        passes = [(scale, dims) for scale in scales for dims in views]
        total = None
        for index, (scale, dims) in enumerate(passes):

            def layers(done: int, of: int, message: str, index: int = index) -> None:
                progress(index * of + done, len(passes) * of, message)

            batch = resize_bilinear(normalised, keep_ratio_size(height, width, self._input_scale(scale)))
            logits = self.runner(batch.flip(dims) if dims else batch, cancel=cancel,
                                 progress=layers if progress is not None else None).float().cpu()
            view = probabilities(resize_bilinear(logits.flip(dims) if dims else logits, (height, width)), SIGMOID)[0]
            total = view if total is None else total.add_(view)
        return total.div_(len(passes)).numpy()

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
