"""Batch prediction over files and folders: one workspace per input, optional IDRiD-style masks,
serially or spread over a dask.distributed cluster.

A fundus photograph gets ``<out>/<stem>.m2mrf.zarr`` with its image pyramid, ``labels/prediction``
and 4×-downsampled float16 probabilities, plus provenance (model, checkpoint sha256, mode, time);
with ``masks`` also ``<out>/masks/<stem>_EX.tif``… in IDRiD's own 1-bit format, and with
``probability_maps`` full-resolution 8-bit maps ``<out>/probabilities/<stem>_EX.tif``… (probability ×
255), which ``napari-m2mrf evaluate`` scores with both AUPRs.

A slide (a pyramid, a scanner file or a very large image; ``io.formats.SourceInfo.kind``) needs a
slide (deformed-downsampling) model and is run by
:func:`~napari_m2mrf.inference.slide.run_slide_segmentation` into ``<out>/<stem>.m2mrf.zarr`` as the
GUI run writes it (label pyramid, probability pyramid, ``sampling/points``,
``sampling/deformation``, provenance), under the workspace's lock for the whole run. A fundus model
on a slide or a slide model on a photograph is refused for that input alone. A slide's sample grid is
matched to the model's training scale where both scales are known
(:mod:`~napari_m2mrf.inference.slide_scale`; ``PredictOptions.output_size`` overrides it); its
summary carries the choice (``input_scale``) and a ``scale_notice`` when the scale is far off
training. Slides run with a fixed
number of PyTorch CPU threads (``PredictOptions.threads``, default 1) wherever they run, so a serial
run and a dask run write the same bytes.

Every input succeeds or fails on its own: :func:`predict_many` returns one summary per input, a
failed one with an ``error`` (one line); the others finish.

Outputs go through ``napari_m2mrf.io.output_gate``: the output folder is made only when the inputs
have passed, locked while written, and removed again if nothing was written into it. Inputs whose
file names share a stem (``a/img.jpg``, ``b/img.jpg``) get names with their parent folders
(``a_img``, ``b_img``; more folders, then the file suffix, as needed) — deterministic, and printed
in the summary. Earlier masks and probability maps are not replaced without ``overwrite``; a
workspace made for another image is not reused without ``overwrite``, and never when it holds the
user's corrections.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from napari_m2mrf.catalog import ModelRef
from napari_m2mrf.compat import require_dask_distributed
from napari_m2mrf.errors import UserError, user_message
from napari_m2mrf.jobs import ProgressCallback, no_progress

logger = logging.getLogger(__name__)

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
SLIDE_SUFFIXES = {".svs", ".ndpi", ".btf", ".tf8"}
PROBABILITY_DOWNSAMPLE = 4
SLIDE_THREADS = 1  # PyTorch CPU threads of a slide run unless given: the same bytes serially and on dask
PROGRESS_STEPS = 1000  # progress units per input (a slide reports its stages within them)


@dataclass(frozen=True)
class PredictOptions:
    """How every input is predicted. ``model``: a ``ModelRef`` (``napari_m2mrf.catalog.resolve``, once
    per run; a source string is resolved where the model is loaded)."""

    model: ModelRef | str
    out_dir: Path
    mode: str = "scales"  # one of napari_m2mrf.inference.fundus.MODES
    device: str = "cpu"
    tile: int = 1024
    thresholds: tuple[float, ...] | None = (0.5, 0.5, 0.5, 0.5)
    masks: bool = False
    probability_maps: bool = False
    overwrite: bool = False
    threads: int | None = None  # PyTorch CPU threads per input (None: photographs as torch has it, slides 1)
    density: Path | None = None  # a sampling-density map for every slide (napari_m2mrf.io.density_maps)
    output_size: tuple[int, int] | None = None  # slides' sample grid (h, w); None: napari_m2mrf.inference.slide_scale


def _folder_inputs(folder: Path) -> list[Path]:
    """Photographs and slide files under ``folder``, and OME-Zarr stores (not descended into; workspaces
    ``*.m2mrf.zarr`` left out), sorted."""
    found = []
    for top, dirs, files in os.walk(folder):
        for name in list(dirs):
            if name.endswith(".zarr"):
                dirs.remove(name)
                if not name.endswith(".m2mrf.zarr"):
                    found.append(Path(top) / name)
        found += [Path(top) / n for n in files if Path(n).suffix.lower() in PHOTO_SUFFIXES | SLIDE_SUFFIXES]
    return sorted(found)


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the photographs and slides inside given folders (sorted); ``UserError`` when none."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir() and not path.name.endswith(".zarr"):
            found += _folder_inputs(path)
        else:
            found.append(path)
    if not found:
        raise UserError(f"no images found in {', '.join(str(p) for p in paths)}")
    return found


@functools.lru_cache(maxsize=2)
def _predictor(model: ModelRef | str, device: str):
    """The model loaded once per process (and per dask worker)."""
    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing

    ref = resolve(model)
    return FundusPredictor(ref.load(), Preprocessing.from_meta(ref.metadata), device), ref


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "image"


def output_names(inputs: Sequence[Path]) -> list[str]:
    """One output name per input (workspace ``<name>.m2mrf.zarr``, masks ``<name>_EX.tif``): the file's
    stem, with its parent folders (then its suffix) prepended where stems collide; ``UserError`` if
    two inputs still share a name."""
    stems = [_safe_name(p.name.split(".")[0] or p.name) for p in inputs]
    names = list(stems)
    groups: dict[str, list[int]] = {}
    for index, stem in enumerate(stems):
        groups.setdefault(stem, []).append(index)
    for indices in (g for g in groups.values() if len(g) > 1):
        folders = [Path(os.path.abspath(inputs[i])).parent.parts[1:] for i in indices]
        deepest = max(len(f) for f in folders)
        for depth in range(1, deepest + 2):
            if depth <= deepest:  # the nearest `depth` parent folders, then the stem
                extended = [_safe_name("_".join([*folders[k][-depth:], stems[i]])) for k, i in enumerate(indices)]
            else:  # same folder, same stem: the whole file name (img.jpg, img.png)
                extended = [_safe_name("_".join([*folders[k], inputs[i].name])) for k, i in enumerate(indices)]
            if len(set(extended)) == len(extended):
                break
        for k, i in enumerate(indices):
            names[i] = extended[k]
    seen: dict[str, Path] = {}
    for path, name in zip(inputs, names, strict=True):
        if name in seen:
            raise UserError(f"{seen[name]} and {path} would share the output name {name!r}; rename one of them")
        seen[name] = path
    return names


def _refuse_earlier_results(names: Sequence[str], options: PredictOptions) -> None:
    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.io.output_gate import refuse_existing, resolve_inside

    kinds = [("masks", options.masks), ("probabilities", options.probability_maps)]
    for folder, wanted in kinds:
        if wanted:
            where = resolve_inside(options.out_dir, folder)
            paths = (where / f"{name}_{c.code}.tif" for name in names for c in FUNDUS_CLASSES)
            refuse_existing(paths, options.overwrite, f"{folder} of an earlier run")


def _open_workspace(target: Path, source: Path, overwrite: bool):
    """The workspace at ``target`` for ``source``: new, or an earlier one made for the same file."""
    from napari_m2mrf.io.output_gate import OutputExists
    from napari_m2mrf.io.workspace import Workspace

    if not (target.exists() or target.is_symlink()):
        return Workspace.create(target, source=source), False
    workspace = Workspace.open(target)
    recorded = workspace.source
    if recorded is None or Path(os.path.abspath(recorded)) == Path(os.path.abspath(source)):
        return workspace, False
    if "corrected" in workspace.label_names():
        raise UserError(f"{target}: holds the user's corrections for {recorded}, not {source}; use another --out")
    if not overwrite:
        raise OutputExists(f"{target}: is the workspace of {recorded}, not {source} (use --overwrite to replace it)")
    return workspace, True


def model_name(model: ModelRef | str) -> str:
    return model.name if isinstance(model, ModelRef) else str(model)


def is_slide_model(model: ModelRef | str) -> bool:
    """True when ``model`` is a deformed-downsampling (slide) model (reads its metadata only)."""
    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.models.checkpoints import is_deformed

    return is_deformed(resolve(model).metadata)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's CPU threads set to ``threads`` (None: unchanged) while inside."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def predict_file(
    path: str | Path, options: PredictOptions, name: str | None = None, progress: ProgressCallback = no_progress
) -> dict:
    """Predict one input and write its workspace (and masks) as ``name`` (default: the file's stem);
    returns a JSON-able summary. A slide goes to :func:`predict_slide`; a model that does not fit the
    input (a fundus model on a slide, a slide model on a photograph) is a ``UserError``."""
    from napari_m2mrf.io.formats import inspect_source

    path = Path(path)
    slide_model = is_slide_model(options.model)
    if inspect_source(path).kind == "slide":
        if not slide_model:
            raise UserError(f"{path}: a slide; {model_name(options.model)} is a fundus model: give a slide "
                            "(deformed-downsampling) model such as slide_deformed_w18s")
        return predict_slide(path, options, name, progress)
    if slide_model:
        raise UserError(f"{path}: a fundus photograph; {model_name(options.model)} is a slide model: give a "
                        "fundus (lesion) model such as fundus_m2mrf_w18s")
    with torch_threads(options.threads):
        result = _predict_photograph(path, options, name)
    progress(1, 1, "done")
    return result


def _predict_photograph(path: Path, options: PredictOptions, name: str | None = None) -> dict:
    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.inference.fundus import SCALES, predict_image
    from napari_m2mrf.models.multiscale import class_scales
    from napari_m2mrf.models.outputs import probabilities_to_labels
    from napari_m2mrf.io.photographs import read_image
    from napari_m2mrf.io.fundus_results import fundus_label_style
    from napari_m2mrf.io.output_gate import resolve_inside, source_identity
    from napari_m2mrf.io.writers import write_idrid_masks

    start = time.perf_counter()
    image = read_image(path).data
    predictor, ref = _predictor(options.model, options.device)
    probabilities = predict_image(predictor, image, options.mode, ref.metadata, options.tile, max(32, options.tile // 8))
    labels = probabilities_to_labels(probabilities, options.thresholds or (0.5,) * len(FUNDUS_CLASSES))
    stem = name or _safe_name(path.name.split(".")[0] or path.name)
    target = resolve_inside(options.out_dir, f"{stem}.m2mrf.zarr")
    workspace, replace_image = _open_workspace(target, path, options.overwrite)
    if replace_image or not workspace.has_image:
        workspace.write_image(np.moveaxis(image, -1, 0), source_id=source_identity(path))
    colors, names = fundus_label_style()
    workspace.write_labels("prediction", labels, colors=colors, names=names)
    step = PROBABILITY_DOWNSAMPLE
    workspace.write_probabilities(
        probabilities[:, ::step, ::step], downsample=step, class_names=[c.code for c in FUNDUS_CLASSES]
    )
    provenance = {
        **ref.provenance(),
        "mode": options.mode,
        "thresholds": list(options.thresholds or ()) or None,
    }
    if options.mode == SCALES:
        provenance["test_time_scales"] = {c.code: list(s) for c, s in zip(FUNDUS_CLASSES, class_scales(ref.metadata))}
    workspace.record_provenance(**provenance)
    masks = []
    if options.masks:
        masks = [str(p) for p in write_idrid_masks(labels, resolve_inside(options.out_dir, "masks"), stem)]
    if options.probability_maps:
        folder = resolve_inside(options.out_dir, "probabilities")
        masks += [str(p) for p in write_probability_maps(probabilities, folder, stem)]
    fractions = {cls.code: float((labels == cls.label).mean()) for cls in FUNDUS_CLASSES}
    return {
        "input": str(path),
        "kind": "photograph",
        "workspace": str(target),
        "masks": masks,
        "lesion_fraction": fractions,
        "seconds": round(time.perf_counter() - start, 3),
    }


def probability_codes(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] → uint8 ``round(p × 255)``, with 0 kept for ``p = 0`` exactly (1 for
    any smaller positive p).

    The official 11-threshold AUPR counts a pixel at threshold t when ``p > t`` (strict), so at t = 0
    every pixel of a sigmoid's map counts; plain rounding would write 0 for every p < 0.002 — most
    of an image — and drop those pixels from the first curve point (recall below 1, a smaller area:
    0.06 of EX's AUPR for the bundled model on IDRiD_06–10 read back by ``evaluate``). At the other
    thresholds the pixels kept differ from the float map's only within half a code (1/510)."""
    codes = np.rint(probabilities * 255).astype(np.uint8)
    codes[(codes == 0) & (probabilities > 0)] = 1
    return codes


def write_probability_maps(probabilities: np.ndarray, folder: Path, stem: str) -> list[Path]:
    """(K, H, W) probabilities → one 8-bit TIFF per class (:func:`probability_codes`), each written atomically."""
    import tifffile

    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.io.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for channel, cls in enumerate(FUNDUS_CLASSES[: probabilities.shape[0]]):
        target = folder / f"{stem}_{cls.code}.tif"
        with atomic_path(target) as temporary:
            tifffile.imwrite(temporary, probability_codes(probabilities[channel]), compression="zlib")
        written.append(target)
    return written


def _prepare_slide_workspace(target: Path, source: Path, overwrite: bool) -> None:
    """Refuse (or with ``overwrite`` discard) a workspace at ``target`` made for another file; one holding
    the user's corrections is never discarded. Call it holding the workspace's lock."""
    from napari_m2mrf.io.atomic import temporary_sibling
    from napari_m2mrf.io.output_gate import OutputExists
    from napari_m2mrf.io.workspace import Workspace

    if not (target.exists() or target.is_symlink()):
        return
    workspace = Workspace.open(target)
    recorded = workspace.source
    if recorded is None or Path(os.path.abspath(recorded)) == Path(os.path.abspath(source)):
        return  # the same slide again: a new prediction replaces the old one, corrections stay
    if "corrected" in workspace.label_names():
        raise UserError(f"{target}: holds the user's corrections for {recorded}, not {source}; use another --out")
    if not overwrite:
        raise OutputExists(f"{target}: is the workspace of {recorded}, not {source} (use --overwrite to replace it)")
    aside = temporary_sibling(target)  # its image may be the other file's pyramid: start afresh
    os.replace(target, aside)
    shutil.rmtree(aside, ignore_errors=True)


def predict_slide(
    path: str | Path, options: PredictOptions, name: str | None = None, progress: ProgressCallback = no_progress
) -> dict:
    """Run the slide model ``options.model`` on the slide at ``path`` into ``<out>/<name>.m2mrf.zarr`` (as
    the GUI run writes it), holding the workspace's lock throughout; returns a JSON-able summary."""
    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation
    from napari_m2mrf.io.output_gate import output_store, resolve_inside
    from napari_m2mrf.io.workspace import SLIDE, Workspace

    start = time.perf_counter()
    path = Path(path)
    ref = resolve(options.model)
    stem = name or _safe_name(path.name.split(".")[0] or path.name)
    target = resolve_inside(options.out_dir, f"{stem}.m2mrf.zarr")
    threads = options.threads or SLIDE_THREADS
    with output_store(target), torch_threads(threads):
        _prepare_slide_workspace(target, path, options.overwrite)
        request = SlideRequest(model=ref, device=options.device, thresholds=options.thresholds, workspace=target,
                               output_size=options.output_size)
        if options.density is not None:
            from napari_m2mrf.io.density_maps import read_density_map

            given = read_density_map(options.density)
            request.density, request.density_source = given.values, given.provenance
        result = run_slide_segmentation(path, request, progress=progress)
        workspace = Workspace.open(target)
        workspace.record_made_from(SLIDE)
        workspace.record_provenance(
            command="predict", source=str(Path(os.path.abspath(path))), sampler=request.sampler,
            thresholds=None if options.thresholds is None else list(options.thresholds), threads=threads,
        )
    counts = np.bincount(result.labels.ravel(), minlength=256)
    shares = {name: float(counts[label] / max(result.labels.size, 1)) for label, name in result.class_names.items()}
    return {
        "input": str(path),
        "kind": "slide",
        "workspace": str(target),
        "model": ref.name,
        "image_shape": list(result.image_shape),
        "samples": int(result.labels.size),
        "class_samples": shares,
        "probability_downsample": result.probability_downsample,
        "density": result.density_source,
        "input_scale": result.grid.provenance(),
        "scale_notice": result.grid.notice(),
        "seconds": round(time.perf_counter() - start, 3),
    }


def failure(path: Path, exc: BaseException) -> dict:
    """The summary of an input that failed: ``{"input", "error"}``, the error one line naming the input.

    An unexpected error (a bug) is also logged with its traceback."""
    message = user_message(exc)
    if message is None:
        logger.error("%s: unexpected error", path, exc_info=exc)
        message = f"unexpected error ({type(exc).__name__}: {' '.join(str(exc).split())})"
    if str(path) not in message:
        message = f"{path}: {message}"
    return {"input": str(path), "error": message}


def predict_or_fail(
    path: Path, options: PredictOptions, name: str | None = None, progress: ProgressCallback = no_progress
) -> dict:
    """:func:`predict_file`, with a failure returned as its summary (see :func:`failure`) instead of raised."""
    try:
        return predict_file(path, options, name, progress)
    except Exception as exc:  # one input's failure; the others go on
        return failure(path, exc)


PROGRESS_TOPIC = "napari-m2mrf-predict-progress"


class _WorkerProgress:
    """A progress callback run on a dask worker: sends ``(index, done, total, message)`` to the client as a
    worker event (``PROGRESS_TOPIC``), at most one per percent and per stage message."""

    def __init__(self, index: int) -> None:
        self.index, self._last = index, (-1, "")

    def __call__(self, done: int, total: int, message: str) -> None:
        percent, stage = 100 * done // max(total, 1), message.split(":")[0]
        if (percent, stage) == self._last:
            return
        self._last = (percent, stage)
        try:
            from distributed import get_worker

            get_worker().log_event(PROGRESS_TOPIC, (self.index, done, total, message))
        except (ImportError, ValueError):  # not on a worker: nobody to tell
            pass


def _predict_on_worker(path: Path, options: PredictOptions, name: str, index: int) -> dict:
    return predict_or_fail(path, options, name, _WorkerProgress(index))


def predict_many(
    inputs: Sequence[Path],
    options: PredictOptions,
    workers: int = 0,
    scheduler: str | None = None,
    progress: ProgressCallback = no_progress,
) -> list[dict]:
    """Predict every input; serially, or on a dask.distributed cluster (``scheduler`` address, or a
    LocalCluster of ``workers`` processes). Results are in input order, one per input; an input that
    failed has an ``error`` and the others finish. The same file given twice is predicted once.
    Refuses (before any work) to replace earlier masks or probability maps without
    ``options.overwrite``; the output folder is locked while written. ``progress`` counts
    ``PROGRESS_STEPS`` per input (a slide moves it stage by stage in a serial run)."""
    from napari_m2mrf.io.output_gate import output_folder

    unique: dict[str, Path] = {}
    for path in inputs:
        unique.setdefault(os.path.realpath(path), Path(path))
    inputs = list(unique.values())
    names = output_names(inputs)
    _refuse_earlier_results(names, options)
    with output_folder(options.out_dir):
        return _predict_all(inputs, names, options, workers, scheduler, progress)


def _predict_all(
    inputs: Sequence[Path],
    names: Sequence[str],
    options: PredictOptions,
    workers: int = 0,
    scheduler: str | None = None,
    progress: ProgressCallback = no_progress,
) -> list[dict]:
    """Predict every input; serially, or on a dask.distributed cluster (``scheduler`` address, or a
    LocalCluster of ``workers`` processes). Results are in input order."""
    total = len(inputs) * PROGRESS_STEPS
    if not workers and not scheduler:
        results = []
        for index, (path, name) in enumerate(zip(inputs, names, strict=True)):

            def step(done: int, steps: int, message: str, index: int = index, label: str = path.name) -> None:
                progress(index * PROGRESS_STEPS + PROGRESS_STEPS * done // max(steps, 1), total, f"{label}: {message}")

            results.append(predict_or_fail(path, options, name, step))
            progress((index + 1) * PROGRESS_STEPS, total, f"{path.name}: {'failed' if 'error' in results[-1] else 'done'}")
        return results
    require_dask_distributed()
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    client = Client(scheduler or cluster)
    lock = threading.Lock()  # worker events arrive on the client's event-loop thread
    steps = [0] * len(inputs)

    def report(index: int, done: int, message: str) -> None:
        with lock:
            steps[index] = max(steps[index], done)
            progress(sum(steps), total, f"{inputs[index].name}: {message}")

    def on_event(event: tuple) -> None:
        index, done, of, message = event[1]
        if 0 <= index < len(inputs) and steps[index] < PROGRESS_STEPS:
            report(index, min(PROGRESS_STEPS - 1, PROGRESS_STEPS * done // max(of, 1)), message)

    try:
        client.subscribe_topic(PROGRESS_TOPIC, on_event)
        futures = {
            client.submit(_predict_on_worker, path, options, name, index, pure=False): index
            for index, (path, name) in enumerate(zip(inputs, names, strict=True))
        }
        results: list[dict] = [{} for _ in inputs]
        for future in as_completed(list(futures)):
            index = futures[future]
            try:
                results[index] = future.result()
            except Exception as exc:  # the task itself was lost (a worker died): that input failed
                results[index] = failure(inputs[index], exc)
            report(index, PROGRESS_STEPS, "failed" if "error" in results[index] else "done")
        return results
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(PROGRESS_TOPIC)
        client.close()
        if cluster is not None:
            cluster.close()


def options_summary(options: PredictOptions) -> dict:
    """The options as JSON-able values."""
    summary = asdict(options)
    summary["out_dir"] = str(options.out_dir)
    if isinstance(options.model, ModelRef):
        summary["model"] = options.model.name
    return summary
