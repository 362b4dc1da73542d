"""One segmentation run on a fundus image: load the model, run it on the chosen region, threshold.

Qt-free: the segment widget runs ``run_segmentation`` in a worker thread, and so can a script.
``model_metadata`` tells a widget or the CLI, before any weights are read, which classes a model
has and (through :mod:`napari_m2mrf.inference.thresholds`) the thresholds it was calibrated with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.fundus import (
    FundusPredictor,
    Preprocessing,
    probabilities_to_labels,
)
from napari_m2mrf.inference.regions import Box, box_mask
from napari_m2mrf.jobs import CancelToken, ProgressCallback, no_progress

WHOLE = "whole"  # the official protocol: whole image rescaled to the model's input size
TILES = "tiles"  # full-resolution sliding window


@dataclass
class SegmentRequest:
    """What to run: model source, device, mode, optional boxes (tiled inside each), per-class thresholds."""

    model: str
    device: str = "auto"
    mode: str = WHOLE
    boxes: list[Box] | None = None
    thresholds: Sequence[float] = (0.5, 0.5, 0.5, 0.5)
    tile: int = 1024
    overlap: int = 128


@dataclass
class SegmentResult:
    """Probabilities (K, H, W) float32 and labels (H, W) uint8; ``computed`` marks where they are valid."""

    probabilities: np.ndarray
    labels: np.ndarray
    computed: np.ndarray | None
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0


def model_metadata(source: str | Path) -> dict | None:
    """The metadata of the model ``source`` names, reading no weights; None when it names nothing readable.

    A bundled or registered (trained) model or a checkpoint file gives its own metadata; a bare
    registry name the untrained default's (fundus classes, IDRiD settings).
    """
    from napari_m2mrf.inference.model_source import bundled_models
    from napari_m2mrf.inference.trained_models import trained_models
    from napari_m2mrf.models.checkpoints import read_checkpoint_metadata

    name = str(source)
    path = {**bundled_models(), **trained_models()}.get(name, Path(name).expanduser())
    if path.is_file():
        try:
            return read_checkpoint_metadata(path)
        except UserError:
            return None
    from napari_m2mrf.models import fundus_metadata, list_models

    return fundus_metadata("idrid") if name in list_models() else None


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 3) or (H, W, 4) of uint8/uint16/float → (H, W, 3) uint8; ``UserError`` otherwise."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"expected a 2-D grey or RGB(A) image, got an array of shape {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise UserError("the image contains NaN or infinite values")
        top = 1.0 if image.max() <= 1.0 else 255.0
        return np.clip(image / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise UserError(f"unsupported image data type {image.dtype}")


def run_segmentation(
    image: np.ndarray,
    request: SegmentRequest,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> SegmentResult:
    """Segment ``image`` (H, W, 3) as ``request`` asks; raises ``Cancelled`` when cancelled."""
    from napari_m2mrf.inference.model_source import resolve_model

    start = time.perf_counter()
    rgb = as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    progress(0, 1, f"loading {request.model}")
    model, meta = resolve_model(request.model)
    predictor = FundusPredictor(model, Preprocessing.from_meta(meta), request.device)
    if cancel is not None:
        cancel.check()
    computed = None
    if request.boxes:
        probabilities = np.zeros((len(request.thresholds), height, width), np.float32)
        for index, (y0, x0, y1, x1) in enumerate(request.boxes):

            def box_progress(done: int, total: int, message: str, index: int = index) -> None:
                progress(index * total + done, len(request.boxes) * total, f"region {index + 1}: {message}")

            probabilities[:, y0:y1, x0:x1] = predictor.predict_tiled(
                rgb[y0:y1, x0:x1], request.tile, request.overlap, box_progress, cancel, notify
            )
        computed = box_mask(request.boxes, height, width)
    elif request.mode == TILES:
        probabilities = predictor.predict_tiled(rgb, request.tile, request.overlap, progress, cancel, notify)
    else:
        probabilities = predictor.predict_whole(rgb, cancel)
        progress(1, 1, "done")
    labels = probabilities_to_labels(probabilities, request.thresholds)
    if computed is not None:
        labels[~computed] = 0
    return SegmentResult(probabilities, labels, computed, meta, time.perf_counter() - start)
