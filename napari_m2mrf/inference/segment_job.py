"""One segmentation run on a fundus image: load the model, run it on the chosen region, threshold.

Qt-free: the segment widget runs ``run_segmentation`` in a worker thread, and so can a script.
The model is resolved once per run (:func:`napari_m2mrf.catalog.resolve`; the request may carry the
:class:`~napari_m2mrf.catalog.ModelRef` already); the image layer's pixels become RGB8 by
:func:`napari_m2mrf.io.pixels.to_rgb8`, the same rule as a file's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_m2mrf.catalog import ModelRef
from napari_m2mrf.inference.fundus import SCALES, TILES, WHOLE, FundusPredictor, Preprocessing, predict_image
from napari_m2mrf.inference.regions import Box, box_mask
from napari_m2mrf.io.pixels import to_rgb8
from napari_m2mrf.jobs import CancelToken, ProgressCallback, StagedProgress, no_progress
from napari_m2mrf.models.outputs import probabilities_to_labels

__all__ = ["SCALES", "TILES", "WHOLE", "SegmentRequest", "SegmentResult", "run_segmentation"]


@dataclass
class SegmentRequest:
    """What to run: model (a ``ModelRef``, or a source resolved when the run starts), device, mode,
    optional boxes (tiled inside each), per-class thresholds."""

    model: ModelRef | str
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


# shares of the progress bar per stage (the model load is short when the widget preloaded it)
STAGES = {"model": 10, "segment": 85, "labels": 5}


def run_segmentation(
    image: np.ndarray,
    request: SegmentRequest,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> SegmentResult:
    """Segment ``image`` (H, W, 3) as ``request`` asks; raises ``Cancelled`` when cancelled.

    Progress: ``(done, PROGRESS_SCALE, message)`` over the stages model, segment (tiles; the whole
    image is one step) and labels, never going back (:class:`~napari_m2mrf.jobs.StagedProgress`).
    The model comes from :mod:`~napari_m2mrf.inference.model_cache` (loaded there once).
    """
    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.inference.model_cache import cached_model, load_model

    start = time.perf_counter()
    step = StagedProgress(STAGES, progress, cancel)
    rgb = to_rgb8(image)
    height, width = rgb.shape[:2]
    ref = resolve(request.model)
    step("model", 0, 1, f"loading {ref.name}" if cached_model(ref) is None else f"{ref.name} is loaded")
    model, meta = load_model(ref, cancel), ref.metadata
    predictor = FundusPredictor(model, Preprocessing.from_meta(meta), request.device)
    step("model", 1, 1, f"running {ref.name} on {predictor.device}")
    computed = None
    if request.boxes:
        probabilities = np.zeros((len(request.thresholds), height, width), np.float32)
        for index, (y0, x0, y1, x1) in enumerate(request.boxes):

            def box_progress(done: int, total: int, message: str, index: int = index) -> None:
                step("segment", index * total + done, len(request.boxes) * total, f"region {index + 1}: {message}")

            probabilities[:, y0:y1, x0:x1] = predictor.predict_tiled(
                rgb[y0:y1, x0:x1], request.tile, request.overlap, box_progress, cancel, notify
            )
        computed = box_mask(request.boxes, height, width)
    else:
        probabilities = predict_image(predictor, rgb, request.mode, meta, request.tile, request.overlap,
                                      step.stage("segment"), cancel, notify)
        step("segment", 1, 1, "thresholding")
    labels = probabilities_to_labels(probabilities, request.thresholds)
    if computed is not None:
        labels[~computed] = 0
    step.finish()
    return SegmentResult(probabilities, labels, computed, meta, time.perf_counter() - start)
