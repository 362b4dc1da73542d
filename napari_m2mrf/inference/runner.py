"""One way to run a model for inference: on its device, in its precision, cancellable, tiled when needed.

:class:`ModelRunner` holds a model in eval mode on one device (``auto``: CUDA, then MPS, then the
CPU; :mod:`~napari_m2mrf.inference.devices`), with channels_last tensors on CUDA, and runs it (or
any of its submodules) under ``torch.inference_mode`` and autocast where the device has one
(bfloat16, else float16 on CUDA; float32 on CPU and MPS; ``precision`` overrides). While it runs,
every layer's forward first checks the cancel token, so a long pass on a slow CPU stops within one
layer.

:meth:`ModelRunner.run_tiled` segments a normalised ``1×3×H×W`` image in tiles of ``tile`` px
overlapping by ``overlap`` px, each tile's probabilities (:func:`napari_m2mrf.models.outputs.probabilities`)
blended with weights that rise linearly inside the overlaps, so seams vanish; one tile covering
the image gives exactly the whole-image result. Out of memory (``torch.OutOfMemoryError``) it
halves the tile (and the overlap) and starts again, down to ``min_tile``; below that it moves the
model to the CPU in float32 and starts again with the first tile size; out of memory there is a
``UserError``. Each step is said through ``notify(message)`` and logged (``logging``, this
module's logger, WARNING); the device, the autocast dtype and the tile size used are logged at
INFO/DEBUG.

Used by the fundus job (:mod:`~napari_m2mrf.inference.fundus`), the slide job
(:mod:`~napari_m2mrf.inference.slide`) and, through them, the batch CLI and the recipes. The
trainer's validation (``training.evaluation``) does not run through here: it scores the model being
trained on the trainer's own device and precision (float32, no tiling, no cancel), but it shares
what decides the numbers — the normalisation (:mod:`napari_m2mrf.models.preprocess`) and the
logits → probabilities step (:mod:`napari_m2mrf.models.outputs`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.devices import autocast_dtype, choose_device
from napari_m2mrf.jobs import CancelToken, ProgressCallback, no_progress
from napari_m2mrf.models.outputs import SIGMOID, probabilities

logger = logging.getLogger(__name__)

MIN_TILE = 128  # the smallest tile out-of-memory halving goes to before it falls back to the CPU
CPU = torch.device("cpu")


LAYER_REPORTS = 50  # progress reports at most per forward pass (reports_layers)


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


@contextlib.contextmanager
def reports_layers(model: nn.Module, progress: ProgressCallback | None, steps: int = LAYER_REPORTS) -> Iterator[None]:
    """While active, ``progress(done, total, "layer done/total")`` as one forward pass reaches the model's
    layers with weights (``total`` of them; a layer called twice counts twice, ``done`` stops at ``total``),
    at most ``steps`` times: a single pass over a large image shows real progress, not one jump."""
    if progress is None:
        yield
        return
    layers = [m for m in model.modules() if next(m.children(), None) is None and next(m.parameters(False), None) is not None]
    total, reached = max(len(layers), 1), [0, 0]  # layers reached, reports made

    def reached_one(*_) -> None:
        reached[0] += 1
        done = min(reached[0], total)
        if done * steps // total > reached[1]:
            reached[1] = done * steps // total
            progress(done, total, f"layer {done}/{total}")

    handles = [layer.register_forward_pre_hook(reached_one) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _silent(message: str) -> None:
    pass


class ModelRunner:
    """A model on its device, run in the device's precision with cancel checks in every layer.

    ``device``: a name for :func:`~napari_m2mrf.inference.devices.choose_device` or a
    ``torch.device``. ``precision``: ``"auto"`` (autocast on CUDA, float32 elsewhere), ``None``
    (float32) or an autocast dtype.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "auto", precision: Any = "auto") -> None:
        self.device = device if isinstance(device, torch.device) else choose_device(device)
        self.autocast: torch.dtype | None = autocast_dtype(self.device) if precision == "auto" else precision
        self.model = model.eval().to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        logger.info("model %s on %s, autocast %s", type(model).__name__, self.device, self.autocast or "off (float32)")

    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.autocast is None:
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=self.autocast):
                    yield

    def __call__(self, *inputs: torch.Tensor, module: nn.Module | None = None, cancel: CancelToken | None = None,
                 progress: ProgressCallback | None = None) -> Any:
        """``module`` (default: the whole model; else one of its submodules) on ``inputs`` moved to the
        device; the output stays there. ``progress`` hears the pass reach its layers (:func:`reports_layers`)."""
        module = self.model if module is None else module
        moved = []
        for tensor in inputs:
            tensor = tensor.to(self.device)
            if self.device.type == "cuda" and tensor.dim() == 4:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            moved.append(tensor)
        with self._precision(), checks_cancel_in_every_layer(module, cancel), reports_layers(module, progress):
            return module(*moved)

    def to_cpu(self) -> None:
        """Move the model to the CPU and run it in float32 from now on (the last resort out of memory)."""
        self.model.to(CPU, memory_format=torch.contiguous_format)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.device, self.autocast = CPU, None
        logger.info("model moved to the CPU, float32")

    def run_tiled(
        self,
        image: torch.Tensor,
        tile: int,
        overlap: int,
        output: str = SIGMOID,
        *,
        module: nn.Module | None = None,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
        notify: Callable[[str], None] = _silent,
        min_tile: int = MIN_TILE,
    ) -> np.ndarray:
        """``(K, H, W)`` float32 probabilities (``output``: ``"sigmoid"`` or ``"softmax"``) of the
        normalised image ``1×3×H×W``, from overlapping tiles; out of memory as the module docstring
        says. ``progress`` hears every tile; ``cancel`` is checked before every tile and every layer."""
        first = (tile, overlap)
        while True:
            try:
                return self._tiles(image, tile, overlap, output, module, progress, cancel)
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if tile // 2 >= min_tile:
                    tile, overlap = tile // 2, overlap // 2
                    message = f"out of GPU memory: retrying with {tile}×{tile} px tiles"
                elif self.device.type != "cpu" or self.autocast is not None:
                    message = f"out of GPU memory even with {tile}×{tile} px tiles: running on the CPU"
                    self.to_cpu()
                    tile, overlap = first
                else:
                    raise UserError(
                        f"out of memory even with {tile}×{tile} px tiles on the CPU; close other programs or use a smaller image"
                    ) from None
                logger.warning(message)
                notify(message)

    def _tiles(
        self,
        image: torch.Tensor,
        tile: int,
        overlap: int,
        output: str,
        module: nn.Module | None,
        progress: ProgressCallback,
        cancel: CancelToken | None,
    ) -> np.ndarray:
        height, width = image.shape[-2:]
        rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
        total = len(rows) * len(cols)
        logger.debug("%d×%d image in %d tiles of %d px (overlap %d) on %s", height, width, total, tile, overlap, self.device)
        blended: np.ndarray | None = None
        weight_sum = np.zeros((height, width), np.float32)
        done = 0
        for y in rows:
            for x in cols:
                if cancel is not None:
                    cancel.check()
                patch = image[..., y : y + tile, x : x + tile]
                h, w = patch.shape[-2:]
                logits = self(patch, module=module, cancel=cancel).float().cpu()
                probs = probabilities(logits, output)[0].numpy()
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
