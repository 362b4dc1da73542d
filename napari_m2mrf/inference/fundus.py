"""Lesion segmentation of fundus photographs with an M2MRF-HRNetV2 (or any K-sigmoid-output) model.

Two modes:

* ``whole`` — the official protocol: the whole image rescaled (keep ratio) to the model's input
  size, one forward pass, logits resized back to the original size, sigmoid.
* ``tiled`` — a sliding window at full resolution: tiles of ``tile`` px overlapping by ``overlap``
  px, probabilities blended with weights that fall off linearly inside the overlaps, so seams
  vanish. Where one tile covers the image the result equals running the model on the whole image
  at full resolution.

Probabilities are (K, H, W) float32 in [0, 1], channel k for label k + 1 of the checkpoint's classes.
Work is reported through a progress callback and stops within one network layer when the cancel
token is set. A CUDA out-of-memory error halves the tile size and starts again (``notify`` says so).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_m2mrf.inference.devices import choose_device, inference_precision
from napari_m2mrf.inference.preprocess import keep_ratio_size, resize_bilinear, to_normalised_tensor
from napari_m2mrf.jobs import CancelToken, ProgressCallback, no_progress

MIN_TILE = 128


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


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``length`` px with at least ``overlap`` px overlap."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def blend_ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D weights of one tile: 1 inside, rising linearly over ``overlap`` px at ends shared with a neighbour."""
    weights = np.ones(length, np.float32)
    ramp = min(overlap, length // 2)
    if ramp > 0:
        rising = (np.arange(ramp, dtype=np.float32) + 1.0) / (ramp + 1.0)
        if ramp_start:
            weights[:ramp] = rising
        if ramp_end:
            weights[length - ramp :] = rising[::-1]
    return weights


@contextlib.contextmanager
def checks_cancel_in_every_layer(model: nn.Module, cancel: CancelToken | None) -> Iterator[None]:
    """While active, every submodule's forward first checks ``cancel``, so a long forward pass on a
    slow CPU stops within one layer instead of finishing the tile."""
    if cancel is None:
        yield
        return
    handles = [module.register_forward_pre_hook(lambda *_: cancel.check()) for module in model.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class FundusPredictor:
    """Runs a lesion model on fundus photographs; see the module docstring for the two modes."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, device: str | torch.device = "auto") -> None:
        self.device = device if isinstance(device, torch.device) else choose_device(device)
        self.model = model.eval().to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preprocessing = preprocessing

    def _logits(self, batch: torch.Tensor, cancel: CancelToken | None = None) -> torch.Tensor:
        """(1, 3, h, w) normalised → (1, K, h, w) float32 logits on the CPU."""
        batch = batch.to(self.device)
        if self.device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with inference_precision(self.device), checks_cancel_in_every_layer(self.model, cancel):
            logits = self.model(batch)
        return logits.float().cpu()

    def predict_whole(self, image: np.ndarray, cancel: CancelToken | None = None) -> np.ndarray:
        """(H, W, 3) uint8 → (K, H, W) float32 probabilities by the official whole-image protocol."""
        height, width = image.shape[:2]
        prep = self.preprocessing
        batch = to_normalised_tensor(image, prep.mean, prep.std)
        batch = resize_bilinear(batch, keep_ratio_size(height, width, prep.input_scale))
        logits = resize_bilinear(self._logits(batch, cancel), (height, width))
        return torch.sigmoid(logits)[0].numpy()

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
        while True:
            try:
                return self._predict_tiles(image, tile, overlap, progress, cancel)
            except torch.OutOfMemoryError:
                if tile // 2 < MIN_TILE:
                    raise
                torch.cuda.empty_cache()
                tile, overlap = tile // 2, overlap // 2
                notify(f"out of GPU memory: retrying with {tile}×{tile} px tiles")

    def _predict_tiles(
        self,
        image: np.ndarray,
        tile: int,
        overlap: int,
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> np.ndarray:
        height, width = image.shape[:2]
        prep = self.preprocessing
        rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
        total = len(rows) * len(cols)
        blended: np.ndarray | None = None
        weight_sum = np.zeros((height, width), np.float32)
        done = 0
        for y in rows:
            for x in cols:
                if cancel is not None:
                    cancel.check()
                patch = image[y : y + tile, x : x + tile]
                h, w = patch.shape[:2]
                batch = to_normalised_tensor(patch, prep.mean, prep.std)
                probs = torch.sigmoid(self._logits(batch, cancel))[0].numpy()
                if blended is None:
                    blended = np.zeros((probs.shape[0], height, width), np.float32)
                weights = np.outer(
                    blend_ramp(h, overlap, y > 0, y + h < height), blend_ramp(w, overlap, x > 0, x + w < width)
                )
                blended[:, y : y + h, x : x + w] += probs * weights
                weight_sum[y : y + h, x : x + w] += weights
                done += 1
                progress(done, total, f"tile {done}/{total}")
        assert blended is not None
        blended /= weight_sum
        return blended


def probabilities_to_labels(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(K, H, W) probabilities → (H, W) uint8 labels: the most probable class above its threshold, else 0."""
    thresholds_arr = np.asarray(thresholds, np.float32).reshape(-1, 1, 1)
    above = np.where(probabilities > thresholds_arr, probabilities, -1.0)
    best = above.argmax(axis=0)
    labels = (best + 1).astype(np.uint8)
    labels[np.take_along_axis(above, best[None], axis=0)[0] < 0] = 0
    return labels
