"""Batch prediction over files and folders: one workspace per input, optional IDRiD-style masks,
serially or spread over a dask.distributed cluster.

Each input gets ``<out>/<stem>.m2mrf.zarr`` with its image pyramid, ``labels/prediction`` and
4×-downsampled float16 probabilities, plus provenance (model, checkpoint sha256, mode, time);
with ``masks`` also ``<out>/masks/<stem>_EX.tif``… in IDRiD's own 1-bit format, and with
``probability_maps`` full-resolution 8-bit maps ``<out>/probabilities/<stem>_EX.tif``… (probability ×
255), which ``napari-m2mrf evaluate`` scores with both AUPRs.

Outputs go through ``napari_m2mrf.io.output_gate``: the output folder is made only when the inputs
have passed, locked while written, and removed again if nothing was written into it. Inputs whose
file names share a stem (``a/img.jpg``, ``b/img.jpg``) get names with their parent folders
(``a_img``, ``b_img``; more folders, then the file suffix, as needed) — deterministic, and printed
in the summary. Earlier masks and probability maps are not replaced without ``overwrite``; a
workspace made for another image is not reused without ``overwrite``, and never when it holds the
user's corrections.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from napari_m2mrf.catalog import ModelRef
from napari_m2mrf.compat import require_dask_distributed
from napari_m2mrf.errors import UserError
from napari_m2mrf.jobs import ProgressCallback, no_progress

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
PROBABILITY_DOWNSAMPLE = 4


@dataclass(frozen=True)
class PredictOptions:
    """How every input is predicted. ``model``: a ``ModelRef`` (``napari_m2mrf.catalog.resolve``, once
    per run; a source string is resolved where the model is loaded)."""

    model: ModelRef | str
    out_dir: Path
    mode: str = "whole"
    device: str = "cpu"
    tile: int = 1024
    thresholds: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5)
    masks: bool = False
    probability_maps: bool = False
    overwrite: bool = False


def collect_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the photographs inside given folders (sorted); ``UserError`` when none."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir() and not path.name.endswith(".zarr"):
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
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


def predict_file(path: str | Path, options: PredictOptions, name: str | None = None) -> dict:
    """Predict one input and write its workspace (and masks) as ``name`` (default: the file's stem);
    returns a JSON-able summary."""
    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.io.formats import inspect_source
    from napari_m2mrf.models.outputs import probabilities_to_labels
    from napari_m2mrf.io.photographs import read_image
    from napari_m2mrf.io.fundus_results import fundus_label_style
    from napari_m2mrf.io.output_gate import resolve_inside, source_identity
    from napari_m2mrf.io.writers import write_idrid_masks

    start = time.perf_counter()
    path = Path(path)
    if inspect_source(path).kind == "slide":
        raise UserError(f"{path}: a slide; batch prediction of slides needs a slide model, not {options.model}")
    image = read_image(path).data
    predictor, ref = _predictor(options.model, options.device)
    if options.mode == "tiles":
        probabilities = predictor.predict_tiled(image, options.tile, max(32, options.tile // 8))
    else:
        probabilities = predictor.predict_whole(image)
    labels = probabilities_to_labels(probabilities, options.thresholds)
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
        "thresholds": list(options.thresholds),
    }
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
        "workspace": str(target),
        "masks": masks,
        "lesion_fraction": fractions,
        "seconds": round(time.perf_counter() - start, 3),
    }


def write_probability_maps(probabilities: np.ndarray, folder: Path, stem: str) -> list[Path]:
    """(K, H, W) probabilities → one 8-bit TIFF per class, ``round(p × 255)``, each written atomically."""
    import tifffile

    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.io.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for channel, cls in enumerate(FUNDUS_CLASSES[: probabilities.shape[0]]):
        target = folder / f"{stem}_{cls.code}.tif"
        with atomic_path(target) as temporary:
            tifffile.imwrite(temporary, np.round(probabilities[channel] * 255).astype(np.uint8), compression="zlib")
        written.append(target)
    return written


def predict_many(
    inputs: Sequence[Path],
    options: PredictOptions,
    workers: int = 0,
    scheduler: str | None = None,
    progress: ProgressCallback = no_progress,
) -> list[dict]:
    """Predict every input; serially, or on a dask.distributed cluster (``scheduler`` address, or a
    LocalCluster of ``workers`` processes). Results are in input order; the same file given twice is
    predicted once. Refuses (before any work) to replace earlier masks or probability maps without
    ``options.overwrite``; the output folder is locked while written."""
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
    total = len(inputs)
    if not workers and not scheduler:
        results = []
        for done, (path, name) in enumerate(zip(inputs, names, strict=True), start=1):
            results.append(predict_file(path, options, name))
            progress(done, total, path.name)
        return results
    require_dask_distributed()
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    client = Client(scheduler or cluster)
    try:
        futures = [
            client.submit(predict_file, path, options, name, pure=False)
            for path, name in zip(inputs, names, strict=True)
        ]
        for done, _ in enumerate(as_completed(futures), start=1):
            progress(done, total, "")
        return client.gather(futures)
    finally:
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
