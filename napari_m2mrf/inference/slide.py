"""Deformed-downsample segmentation of a whole slide (Jin et al.), written into the slide's workspace.

One run, Qt-free (the Segment widget runs it in a worker thread, a script can call it directly):

1. **Low-resolution view**: the coarsest pyramid level with both sides at least twice the
   deformation module's input size is read whole and resized (antialiased) to that size.
2. **Density → grid**: the deformation module gives the sampling density ``h_d×w_d``; the sampler
   turns it into an ``h×w`` grid, i.e. ``h·w`` sampling locations in level-0 pixels ``(y, x)``.
   The grid size is chosen by :func:`~napari_m2mrf.inference.slide_scale.choose_grid`: when the
   slide's µm per pixel and the checkpoint's training scale are known, so that the µm per sample
   matches training (each side within ½–2× the checkpoint's grid); else the checkpoint's grid; an
   explicit ``output_size`` wins. The choice and why go into the provenance (``input_scale``), a
   scale more than 2× off training into a notice.
   ``sampler="uniform"`` is the uniform baseline at the same budget, through the same steps.
3. **Deformed image**: the slide is sampled at those locations by
   :func:`~napari_m2mrf.sampling.pyramid.sample_pyramid` (each sample from the coarsest
   level that resolves the local spacing, only the chunks under samples are decoded), in bands of
   grid rows so a cancel is seen between bands.
4. **Segmentation** of the ``h×w`` deformed image through
   :class:`~napari_m2mrf.inference.runner.ModelRunner` (float32 on CPU, autocast on GPU; out of
   memory the image is segmented in overlapping tiles of half the size, then on the CPU, with a
   notice), probabilities and labels by :mod:`napari_m2mrf.models.outputs`.
5. **Reverse mapping**: the low-resolution labels become the lazy label map Π∘G⁻¹ (nearest
   sample, :class:`~napari_m2mrf.sampling.reverse.ReverseSampler`). The run first hands back a
   *lazy* result (``on_result``, before anything is written): per pyramid level a
   :class:`~napari_m2mrf.sampling.reverse.ReverseFilledLevel` that fills only the region asked for,
   a coarse level from the samples at that level's own resolution (the pixel centres of level ``k``
   take their nearest sample), so a viewer shows the labels seconds after the model has run. Then
   the result is *saved*: every level of ``labels/prediction`` is filled block by block from the
   same reverse sampler (so what was shown lazily equals what is stored, level by level) into a new
   pyramid beside the old one, published in one rename. The per-class probabilities (softmax
   without the background channel, or sigmoid) are reverse-mapped the same way into
   ``probabilities/``: float16 in 0…1, a pyramid whose finest level has ``probability_downsample``
   level-0 pixels per pixel (two to four pixels per mean sample spacing, so at most (4h)×(4w)
   pixels per class whatever the slide's size). Sampling points (``(N, 2)`` level-0 pixels), the
   deformation map and provenance are written too.

``labels/corrected`` is never touched. A cancel (``CancelToken``) is honoured within one band,
one network layer or one 2048² block — well under 2 s — up to the moment the new prediction is
published; it leaves the workspace as it was (the lazy result already handed out stays valid, it
is just not saved). The save holds the workspace's lock from the first block to the provenance, so
another writer of the same process (a region written back meanwhile) waits for the whole new run
and never sees half of it. After the prediction is published the run finishes without checking
(points, deformation map and provenance take well under a second), so a cancelled run never leaves
a half-replaced workspace. ``save=False`` returns the lazy result alone (nothing written).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import logging

import numpy as np
import torch
from torch import nn

from napari_m2mrf.catalog import ModelRef
from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.runner import ModelRunner
from napari_m2mrf.inference.model_cache import load_model
from napari_m2mrf.inference.slide_scale import GridChoice, choose_grid
from napari_m2mrf.io.pixels import rgb_channels, round_rgb8, value_scale
from napari_m2mrf.io.pyramid import Pyramid
from napari_m2mrf.jobs import CancelToken, ProgressCallback, StagedProgress, no_progress
from napari_m2mrf.inference.steering import grid_points, model_density, relative_sample_density
from napari_m2mrf.models.deform import DeformedSegmenter, UniformSampler, low_resolution_view
from napari_m2mrf.sampling.pyramid import (
    ReadStats,
    local_spacing,
    sample_pyramid,
)
from napari_m2mrf.models.outputs import foreground_channels, labels as to_labels, output_kind
from napari_m2mrf.models.preprocess import to_normalised_tensor
from napari_m2mrf.models.training_scale import training_scale
from napari_m2mrf.sampling.reverse import ReverseFilledLevel, ReverseSampler

logger = logging.getLogger(__name__)

PREDICTION = "prediction"
CORRECTED = "corrected"
SAMPLERS = ("learned", "uniform")
BAND_SAMPLES = 16_384  # grid samples read per pyramid-sampling call (a cancel check between calls)
WRITE_BLOCK = 2048  # level-0 pixels per side of one reverse-fill block written to the workspace
MIN_OOM_TILE = 64
LAZY_CACHE_TILES = 256  # 256² tiles each lazy level keeps (16 Mpx: a few screens)
PRECOMPUTED_PIXELS = 1 << 20  # lazy label levels this small are filled before the result is handed out
# share of the progress bar per stage
PROBABILITY_PIXELS_PER_SPACING = 2  # probability-map pixels per mean sample spacing (per side), at most
_STAGES = {"model": 2, "density": 3, "sample": 30, "segment": 15, "probabilities": 5, "fill": 40, "levels": 10}


@dataclass
class SlideRequest:
    """What to run.

    ``model``: a :class:`~napari_m2mrf.catalog.ModelRef` (or a source for
    :func:`~napari_m2mrf.catalog.resolve`, resolved once when the run starts) that holds a
    deformed-downsampling segmenter. ``sampler``: ``"learned"`` (the model's sampler) or
    ``"uniform"`` (baseline). ``output_size``: ``(h, w)`` of the deformed image, the sample grid
    (default: matched to the checkpoint's training scale in µm per sample when the slide's pixel size
    is known, else the checkpoint's grid; :mod:`napari_m2mrf.inference.slide_scale`). ``thresholds``:
    per class in the checkpoint's order, for sigmoid (multi-label) models (default: the checkpoint's
    calibrated thresholds, else 0.5); softmax models take the most probable class and ignore them. ``workspace``:
    where to write (default: beside the slide, see ``Workspace.for_source``). ``density``: a sampling-density
    map ``(Y, X)`` of any size to use instead of the learned one (an edited map, a file's; resampled to the
    model's density grid, the learned sampler and the same budget; needs ``sampler="learned"``);
    ``density_source``: its provenance (recorded with the run and the stored map).
    """

    model: ModelRef | str
    device: str = "auto"
    sampler: str = "learned"
    output_size: tuple[int, int] | None = None
    thresholds: Sequence[float] | None = None
    workspace: Path | None = None
    workers: int = 2
    density: np.ndarray | None = field(default=None, repr=False)
    density_source: dict | None = None


@dataclass
class SlideResult:
    """What a run produced (everything level-0 is in the workspace; these are the small parts).

    ``points``: ``h×w×2`` float32 sampling locations, level-0 pixels ``(y, x)``;
    ``relative_density``: ``h×w`` local sample density over the uniform one (1 = uniform);
    ``density``: ``h_d×w_d`` deformation map (sums to 1), each pixel ``density_downsample``
    ``(f_y, f_x)`` level-0 pixels; ``deformed_image``: ``h×w×3`` uint8; ``labels``: ``h×w`` uint8
    low-resolution prediction; ``probability_codes``: the class codes of the workspace's
    ``probabilities/`` maps, whose finest level has ``probability_downsample`` level-0 pixels per
    pixel; ``read``: chunks and bytes decoded while sampling.

    ``label_levels``: the lazy label pyramid (level 0 first, the shapes of the stored one), one
    :class:`~napari_m2mrf.sampling.reverse.ReverseFilledLevel` ``(Y_k, X_k)`` uint8 per level;
    ``probability_levels``: per class code the lazy probability pyramid ``(Y_k, X_k)`` float16 (its
    level 0 has ``probability_downsample`` level-0 pixels per pixel). ``saved``: whether the
    workspace holds this result (:func:`save_slide_result`); ``run_id`` is recorded in its
    provenance; ``seconds``: model run until the lazy result, ``save_seconds``: the save. ``model``: the run's
    :class:`~napari_m2mrf.catalog.ModelRef` (its sampler for a preview of another density:
    :func:`~napari_m2mrf.inference.steering.sampler_for`); ``density_size``: the model's density grid;
    ``density_source``: where ``density`` came from; ``grid``: how the sample grid was chosen (µm per
    sample, training scale, why; :class:`~napari_m2mrf.inference.slide_scale.GridChoice`).
    """

    workspace: Path
    image_shape: tuple[int, int]
    pixel_size_um: float | None
    points: np.ndarray
    relative_density: np.ndarray
    density: np.ndarray
    density_downsample: tuple[float, float]
    deformed_image: np.ndarray
    labels: np.ndarray
    class_names: dict[int, str]
    class_colors: dict[int, tuple[float, ...]]
    probability_codes: list[str]
    probability_downsample: int
    read: ReadStats
    meta: dict = field(default_factory=dict)
    seconds: float = 0.0
    label_levels: list = field(default_factory=list, repr=False)
    probability_levels: dict = field(default_factory=dict, repr=False)
    saved: bool = False
    run_id: str = ""
    save_seconds: float | None = None
    model: ModelRef | None = field(default=None, repr=False)
    density_size: tuple[int, int] = (0, 0)
    density_source: dict = field(default_factory=dict)
    grid: GridChoice | None = None
    _save: dict = field(default_factory=dict, repr=False)


def is_slide_model(source: str | ModelRef) -> bool:
    """True when ``source`` (bundled or trained name, or checkpoint file) holds a deformed-downsampling
    slide model.

    Reads only the metadata of a ``.safetensors`` file; anything unreadable counts as False (the
    run that follows reports the problem).
    """
    from napari_m2mrf.catalog import model_metadata
    from napari_m2mrf.models.checkpoints import is_deformed

    meta = source.metadata if isinstance(source, ModelRef) else model_metadata(source)
    return meta is not None and is_deformed(meta)


def low_resolution_level(pyramid: Pyramid, size: tuple[int, int]) -> int:
    """The coarsest level with both sides at least twice ``size`` (level 0 if none is that large)."""
    usable = [k for k, level in enumerate(pyramid.levels) if min(a // b for a, b in zip(level.shape[-2:], size)) >= 2]
    return usable[-1] if usable else 0


def _normalised(rgb: np.ndarray, meta: dict) -> torch.Tensor:
    """``h×w×3`` float on the 0–255 scale → ``1×3×h×w`` normalised with the checkpoint's mean/std."""
    norm = meta["normalization"]
    return to_normalised_tensor(rgb, norm["mean"], norm["std"])


def segment_deformed_image(
    runner: ModelRunner, seg_net: nn.Module, rgb: np.ndarray, meta: dict, cancel: CancelToken | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """``K×h×w`` float32 probabilities of every channel of the deformed image ``rgb`` (``h×w×3`` on
    the 0–255 scale): the whole image in one pass, out of memory in tiles (see
    :meth:`~napari_m2mrf.inference.runner.ModelRunner.run_tiled`)."""
    h, w = rgb.shape[:2]
    tile = max(h, w)
    return runner.run_tiled(
        _normalised(rgb, meta), tile, max(8, tile // 8), output_kind(meta), module=seg_net, cancel=cancel,
        notify=notify, min_tile=MIN_OOM_TILE,
    )


def probability_downsample(image_shape: tuple[int, int], samples: int) -> int:
    """Level-0 pixels per probability-map pixel: the largest power of two giving at least
    ``PROBABILITY_PIXELS_PER_SPACING`` map pixels per mean sample spacing (1 for dense sampling)."""
    spacing = float(np.sqrt(image_shape[0] * image_shape[1] / max(samples, 1)))
    factor = 1
    while 2 * factor * PROBABILITY_PIXELS_PER_SPACING <= spacing:
        factor *= 2
    return factor


def label_style(meta: dict) -> tuple[dict[int, str], dict[int, tuple[float, ...]]]:
    """Names and RGBA colours of the checkpoint's non-background classes, by label value."""
    classes = [c for c in meta["classes"] if int(c["label"]) != 0]
    return {int(c["label"]): str(c["name"]) for c in classes}, {int(c["label"]): tuple(c["color"]) for c in classes}


def _open_workspace(source: Path, requested: Path | None):
    from napari_m2mrf.io.workspace import Workspace

    if requested is None and Workspace.is_workspace(source):
        return Workspace.open(source)
    return Workspace.for_source(source, requested)


def _sample_deformed_image(
    pyramid: Pyramid, points: np.ndarray, workers: int, progress: StagedProgress
) -> tuple[np.ndarray, ReadStats]:
    """``h×w×C`` float32 samples of the slide at ``points`` ``h×w×2``, band by band of grid rows."""
    spacing = local_spacing(points)
    h, w = points.shape[:2]
    rows_per_band = max(1, BAND_SAMPLES // w)
    values, stats = None, ReadStats()
    for start in range(0, h, rows_per_band):
        band = slice(start, min(h, start + rows_per_band))
        progress("sample", start, h, f"sampling the slide: grid rows {start}–{band.stop} of {h}")
        sampled = sample_pyramid(pyramid.levels, pyramid.downsamples, points[band], 0, spacing[band], workers)
        if values is None:
            values = np.empty((h, w, sampled.values.shape[-1]), np.float32)
        values[band] = sampled.values
        for level, chunks in sampled.stats.chunks_per_level.items():
            stats.chunks_per_level[level] = stats.chunks_per_level.get(level, 0) + chunks
        stats.bytes_decoded += sampled.stats.bytes_decoded
    return values, stats


def _fill_levels(arrays: Sequence, sampler: ReverseSampler, base: float, step: StagedProgress, stages: Sequence[str],
                 messages: Sequence[str]) -> None:
    """Fill every level ``k`` of ``arrays`` (``(Y_k, X_k)`` or ``(C, Y_k, X_k)``) block by block from
    ``sampler`` at ``base·2ᵏ`` level-0 pixels per pixel; progress counts pixels, level 0 under
    ``stages[0]``, the coarser levels under ``stages[1]`` (a cancel is seen between blocks)."""
    plan = [(k, y, x) for k, array in enumerate(arrays)
            for y in range(0, array.shape[-2], WRITE_BLOCK) for x in range(0, array.shape[-1], WRITE_BLOCK)]

    def pixels(k: int, y: int, x: int) -> int:
        height, width = arrays[k].shape[-2:]
        return (min(height, y + WRITE_BLOCK) - y) * (min(width, x + WRITE_BLOCK) - x)

    totals = {name: sum(pixels(*b) for b in plan if stages[int(b[0] > 0)] == name) for name in stages}
    done = dict.fromkeys(totals, 0)  # per stage: one stage for both parts counts all their pixels
    for index, (k, y, x) in enumerate(plan):
        part = int(k > 0)
        name = stages[part]
        step(name, done[name], totals[name], messages[part].format(level=k, block=index + 1, blocks=len(plan)))
        height, width = arrays[k].shape[-2:]
        rows, cols = slice(y, min(height, y + WRITE_BLOCK)), slice(x, min(width, x + WRITE_BLOCK))
        arrays[k][..., rows, cols] = sampler.fill(rows, cols, base * 2.0**k)
        done[name] += pixels(k, y, x)


def _lazy_levels(sampler: ReverseSampler, shapes: Sequence[tuple[int, int]], base: float,
                 precompute: int = 0) -> list[ReverseFilledLevel]:
    """One :class:`ReverseFilledLevel` per level (tile-cached); levels of at most ``precompute`` pixels
    are filled now (the coarse levels a viewer shows the whole slide with cost the same whatever its size)."""
    levels = [ReverseFilledLevel(sampler, shape, base * 2.0**k, cache_tiles=LAZY_CACHE_TILES)
              for k, shape in enumerate(shapes)]
    for level in levels:
        if level.level_shape[0] * level.level_shape[1] <= precompute:
            level.fill_all()
    return levels


def _halvings(shape: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    shapes = [tuple(int(n) for n in shape)]
    while len(shapes) < levels:
        shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
    return shapes


_saving: set[str] = set()  # run ids handed out lazily whose save has not ended yet (this process)
_saving_changed = threading.Condition()


def _mark_saving(run_id: str, saving: bool) -> None:
    with _saving_changed:
        (_saving.add if saving else _saving.discard)(run_id)
        _saving_changed.notify_all()


def wait_until_saved(run_id: str, timeout: float | None = None) -> bool:
    """Wait while the run ``run_id`` is being saved by this process (its lazy result is on screen);
    True when no such save is (any longer) in progress — saved, cancelled or failed."""
    with _saving_changed:
        return _saving_changed.wait_for(lambda: run_id not in _saving, timeout)


def save_slide_result(
    result: SlideResult, progress: ProgressCallback = no_progress, cancel: CancelToken | None = None
) -> SlideResult:
    """Write a lazy :class:`SlideResult` into its workspace: the probability and label pyramids (every
    level reverse-filled block by block, as the lazy levels show them), sampling points, deformation
    map and provenance; sets ``result.saved``.

    Progress continues the run's bar (its second half). Raises ``Cancelled`` (workspace unchanged)
    when cancelled before the new prediction is published.
    """
    if result.saved:
        _mark_saving(result.run_id, False)
        return result
    try:
        return _save(result, progress, cancel)
    finally:
        _mark_saving(result.run_id, False)


def _save(result: SlideResult, progress: ProgressCallback, cancel: CancelToken | None) -> SlideResult:
    from napari_m2mrf.io.output_gate import output_lock
    from napari_m2mrf.io.workspace import Workspace

    start = time.perf_counter()
    job = result._save
    step = StagedProgress(_STAGES, progress, cancel)
    workspace = Workspace.open(result.workspace)
    codes = result.probability_codes
    map_shape = (len(codes), *result.probability_levels[codes[0]][0].shape) if codes else None
    with output_lock(workspace.path):  # one writer from the first block to the provenance
        with workspace.new_probability_levels(map_shape, downsample=result.probability_downsample, class_codes=codes,
                                              pixel_size_um=result.pixel_size_um) as maps:
            _fill_levels(maps, job["probabilities"], result.probability_downsample, step, ("probabilities",) * 2,
                         ("probability maps: level {level}, block {block}/{blocks}",) * 2)
            with workspace.new_label_levels(PREDICTION, result.image_shape, colors=result.class_colors,
                                            names=result.class_names, pixel_size_um=result.pixel_size_um) as levels:
                _fill_levels(levels, job["labels"], 1.0, step, ("fill", "levels"),
                             ("reverse mapping: block {block}/{blocks}",
                              "building coarser levels: level {level}, block {block}/{blocks}"))
        # published: from here on no cancel (well under a second)
        step.report("levels", 1, 1, "writing sampling points and provenance")
        workspace.write_sampling_points(result.points.reshape(-1, 2))
        workspace.write_deformation(result.density, downsample=result.density_downsample[0],
                                    source=result.density_source)
        workspace.record_provenance(**job["provenance"], run_id=result.run_id)
    result.saved = True
    result.save_seconds = time.perf_counter() - start
    progress(1000, 1000, "done")
    return result


def segment_slide(
    source: str | Path,
    request: SlideRequest,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> SlideResult:
    """Run the model on the slide at ``source`` and return the *lazy* result (nothing written yet; see
    :func:`save_slide_result`). Progress covers the first half of the run's bar. ``notify`` gets a
    notice when the sample grid sees the slide more than 2× off the model's training scale."""
    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.io.slides import ensure_pyramid
    from napari_m2mrf.io.workspace import probability_level_count

    start = time.perf_counter()
    source = Path(source)
    if request.sampler not in SAMPLERS:
        raise UserError(f"sampler must be one of {', '.join(SAMPLERS)}; got {request.sampler!r}")
    step = StagedProgress(_STAGES, progress, cancel)
    ref = resolve(request.model)
    step("model", 0, 1, f"loading {ref.name}")
    model, meta = load_model(ref, cancel), ref.metadata
    if not isinstance(model, DeformedSegmenter):
        raise UserError(f"{ref.name}: a fundus model; a slide needs a deformed-downsampling (slide) model")
    pyramid = ensure_pyramid(source, workspace_path=request.workspace)  # a flat image: its pyramid in that workspace
    height, width = (int(s) for s in pyramid.shape[-2:])
    scale = value_scale(pyramid.dtype, str(source))
    runner = ModelRunner(model, request.device)
    grid = choose_grid(model.output_size, (height, width), pyramid.pixel_size_um, training_scale(meta),
                       request.output_size)
    output_size = grid.output_size
    if grid.notice():
        notify(f"{source.name}: {grid.notice()}")

    if request.density is not None:
        if request.sampler != "learned":
            raise UserError("a density map steers the learned sampler; the uniform sampler takes none")
        step("density", 0, 1, "the given density map")
        density = model_density(request.density, model.density_size, "the density map")
        density_source = dict(request.density_source or {"source": "given"})
        logger.info("%s: sampling with a given density map (%s) instead of the learned one, %d×%d samples", source,
                    density_source.get("source"), *output_size)
    else:
        level = low_resolution_level(pyramid, model.density_size)
        step("density", 0, 1, f"deformation map from level {level}")
        overview = rgb_channels(np.moveaxis(np.asarray(pyramid.levels[level][:], np.float32), 0, -1),
                                str(source)) * scale
        view = low_resolution_view(_normalised(overview, meta), model.density_size)
        density = runner(view, module=model.deformation, cancel=cancel).float()
        density_source = {"source": request.sampler}
    sampler = UniformSampler() if request.sampler == "uniform" else model.sampler
    points = grid_points(sampler, density, output_size, (height, width))

    values, read = _sample_deformed_image(pyramid, points, request.workers, step)
    rgb = rgb_channels(values, str(source)) * scale
    step("segment", 0, 1, f"segmenting the {output_size[0]}×{output_size[1]} deformed image")
    every_channel = segment_deformed_image(runner, model.seg_net, rgb, meta, cancel, notify)
    labels = to_labels(every_channel, meta, request.thresholds)
    keep = foreground_channels(meta)
    probabilities = every_channel[keep].astype(np.float16)
    codes = [str(meta["classes"][k]["code"]) for k in keep]
    names, colors = label_style(meta)

    workspace = _open_workspace(source, request.workspace)
    reverse = ReverseSampler(points, labels, workers=request.workers)
    factor = probability_downsample((height, width), labels.size)
    map_yx = (-(-height // factor), -(-width // factor))
    label_shapes = _halvings((height, width), workspace.label_level_count((height, width)))
    map_shapes = _halvings(map_yx, probability_level_count((len(codes), *map_yx)))
    density_map = density[0, 0].cpu().numpy()
    density_downsample = (height / density_map.shape[0], width / density_map.shape[1])
    provenance = dict(
        model=ref.name,
        checkpoint=str(ref.path) if ref.path is not None else None,
        arch=meta.get("arch"),
        weights_sha256=ref.weights_sha256,
        kind="deformed downsampling",
        sampler=request.sampler,
        output_size=list(output_size),
        density_size=list(model.density_size),
        density_downsample=list(density_downsample),
        device=str(runner.device),
        density=density_source,
        input_scale=grid.provenance(),
    )
    label_levels = _lazy_levels(reverse, label_shapes, 1.0, PRECOMPUTED_PIXELS)
    step.report("segment", 1, 1, "labels ready (lazy); saving to the workspace next")
    return SlideResult(
        workspace=workspace.path,
        image_shape=(height, width),
        pixel_size_um=pyramid.pixel_size_um,
        points=points.astype(np.float32),
        relative_density=relative_sample_density(points, (height, width)),
        density=density_map,
        density_downsample=density_downsample,
        deformed_image=round_rgb8(rgb),
        labels=labels,
        class_names=names,
        class_colors=colors,
        probability_codes=codes,
        probability_downsample=factor,
        read=read,
        meta=meta,
        seconds=time.perf_counter() - start,
        label_levels=label_levels,
        probability_levels={code: _lazy_levels(reverse.with_values(probabilities[k]), map_shapes, factor)
                            for k, code in enumerate(codes)},
        run_id=uuid.uuid4().hex,
        model=ref,
        density_size=tuple(model.density_size),
        density_source=density_source,
        grid=grid,
        _save={"labels": reverse, "probabilities": reverse.with_values(probabilities), "provenance": provenance},
    )


def run_slide_segmentation(
    source: str | Path,
    request: SlideRequest,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] = lambda message: None,
    *,
    on_result: Callable[[SlideResult], None] | None = None,
    save: bool = True,
) -> SlideResult:
    """Segment the slide at ``source`` (any format ``open_pyramid`` reads) as ``request`` asks.

    ``on_result(result)`` (called in this thread) receives the lazy result as soon as the model has
    run, before anything is written — a viewer shows it at once; then the result is saved into the
    workspace (:func:`save_slide_result`) unless ``save=False``. Returns the result (``saved`` set).

    Raises ``Cancelled`` when cancelled (the workspace is then unchanged) and ``UserError`` for a
    model that is not a deformed-downsampling segmenter or a slide it cannot read.
    """
    result = segment_slide(source, request, progress, cancel, notify)
    if save:
        _mark_saving(result.run_id, True)  # before anyone sees it: an edit written back waits for the save
    try:
        if on_result is not None:
            on_result(result)
    except BaseException:
        _mark_saving(result.run_id, False)
        raise
    if save:
        save_slide_result(result, progress, cancel)
    return result
