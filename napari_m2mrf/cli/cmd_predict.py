"""``napari-m2mrf predict``: batch prediction over photographs and slides, one workspace per input."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_m2mrf.errors import UserError

if TYPE_CHECKING:
    from napari_m2mrf.catalog import ModelRef


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="segment many photographs or slides, one workspace per input",
        description="Run a lesion model on fundus photographs, or a slide (deformed-downsampling) model on "
        "slides (OME-TIFF, SVS, NDPI, tiled TIFF, OME-Zarr, very large images), from files and folders. Each "
        "input gets OUT/<name>.m2mrf.zarr: for a photograph its image, labels/prediction, probabilities and "
        "provenance; for a slide, as the GUI run writes it, the label and probability pyramids, "
        "sampling/points, sampling/deformation and provenance (model, checkpoint, weights sha256, "
        "parameters, time). A model that does not fit an input (a fundus model on a slide, a slide model on a "
        "photograph) is refused for that input only. --masks also writes IDRiD-style 1-bit masks of "
        "photographs to OUT/masks. --workers or --scheduler spread the inputs over a dask.distributed "
        "cluster with the same outputs as a serial run. Inputs sharing a file name (a/img.jpg, b/img.jpg) get "
        "their folder in the name (a_img, b_img). Earlier masks are kept unless --overwrite; a workspace's "
        "labels/corrected is never touched. An input that fails is reported on stderr (one line each; with "
        "--json also as a summary with an \"error\" field) and the others finish. --density MAP runs slides with "
        "that sampling-density map instead of the learned one (same sampler, same sample budget): a .npy array or "
        "an image of any size (brightness = density), or a workspace whose map (edited in napari's Steer "
        "sampling widget) is reused; the workspace records the map and where it came from. A slide's sample grid "
        "(the deformed image, h×w samples) is chosen so the µm per sample matches the model's training scale "
        "when the slide's pixel size and the checkpoint's training scale are known (each side within 1/2-2x the "
        "checkpoint's grid), else it is the checkpoint's grid; --output-size H W sets it; the workspace's "
        "provenance records the choice, and a scale more than 2x off training is said on stderr. Exit status: 0 "
        "when every input was predicted, 2 when any input failed or the command was refused.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or slide files, or folders of them")
    parser.add_argument("--model", required=True, help="bundled or trained model name, or a checkpoint file")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--mode", choices=["scales", "whole", "tiles"], default="scales",
                        help="scales (default): the whole image at each of the model's test-time scales, per class "
                        "(the protocol its cross-validated figures were measured with; about 5x the time of whole; "
                        "whole when the model records none); whole: the official whole-image protocol, one pass; "
                        "tiles: full-resolution sliding window")
    parser.add_argument("--tile", type=int, default=1024, help="tile size in px for --mode tiles (default 1024)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument("--thresholds", metavar="EX,HE,SE,MA",
                        help="per-class thresholds (default: those calibrated in the checkpoint, else 0.5 each); "
                        "for a sigmoid slide model one per class in the checkpoint's order")
    parser.add_argument("--masks", action="store_true", help="also write IDRiD-style masks to OUT/masks")
    parser.add_argument("--probability-maps", action="store_true",
                        help="also write 8-bit per-class probability TIFFs to OUT/probabilities (for evaluate)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, default=0, help="run on a local dask cluster of N worker processes")
    group.add_argument("--scheduler", metavar="ADDRESS", help="run on the dask.distributed scheduler at ADDRESS")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="PyTorch CPU threads per input (default: 1 for slides, so a serial and a distributed "
                        "run write the same bytes; all cores for photographs)")
    parser.add_argument("--density", type=Path, metavar="MAP",
                        help="slides: sample with this density map (.npy, image or workspace; any size, resampled to "
                        "the model's grid) instead of the learned one, at the same sample budget")
    parser.add_argument("--output-size", type=int, nargs=2, metavar=("H", "W"),
                        help="slides: sample grid h×w (default: matched to the model's training scale in µm per "
                        "sample when the slide's pixel size is known, else the checkpoint's grid)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line per input")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace masks and probability maps of an earlier run, and reuse a workspace made for another "
        "image of the same name (never one holding corrections)",
    )
    parser.set_defaults(func=run)
    return parser


def _slide_thresholds(text: str | None, model: ModelRef) -> tuple[float, ...] | None:
    """``--thresholds`` of a slide model: one per class of a sigmoid model; None: the checkpoint's own."""
    from napari_m2mrf.models.thresholds import class_thresholds, uses_thresholds

    meta = model.metadata
    if text is None:
        calibrated = class_thresholds(meta) if meta.get("thresholds") else {}
        if calibrated:
            listed = ", ".join(f"{code} {value:g}" for code, value in calibrated.items())
            print(f"thresholds calibrated in {model.name}: {listed}", file=sys.stderr)
        return None
    if not uses_thresholds(meta):
        raise UserError(f"--thresholds: {model.name} takes each pixel's most probable class (softmax); "
                        "thresholds do not apply")
    codes = [str(c["code"]) for c in meta["classes"]]
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--thresholds must be {len(codes)} numbers separated by commas, got {text!r}") from None
    if len(values) != len(codes) or not all(0.0 < v < 1.0 for v in values):
        raise UserError(f"--thresholds must be {len(codes)} numbers between 0 and 1 ({', '.join(codes)}), "
                        f"got {text!r}")
    return values


def _thresholds(text: str | None, model: ModelRef, mode: str = "whole") -> tuple[float, ...] | None:
    """``--thresholds`` as given, else the model's calibrated thresholds (said on stderr; in ``scales``
    mode those calibrated on its test-time scales where it has them), else 0.5 each."""
    from napari_m2mrf.inference.batch import is_slide_model

    if is_slide_model(model):
        return _slide_thresholds(text, model)
    if text is None:
        from napari_m2mrf.models.multiscale import has_class_scales, multiscale_thresholds
        from napari_m2mrf.models.thresholds import DEFAULT_THRESHOLD, class_thresholds

        meta = model.metadata
        if mode == "scales" and has_class_scales(meta):
            calibrated = multiscale_thresholds(meta)
        else:
            calibrated = class_thresholds(meta) if meta.get("thresholds") else {}
        if calibrated:
            listed = ", ".join(f"{code} {value:g}" for code, value in calibrated.items())
            print(f"thresholds calibrated in {model.name}: {listed}", file=sys.stderr)
            return tuple(calibrated.values())
        return (DEFAULT_THRESHOLD,) * 4
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--thresholds must be four numbers separated by commas, got {text!r}") from None
    if len(values) != 4 or not all(0.0 < v < 1.0 for v in values):
        raise UserError(f"--thresholds must be four numbers between 0 and 1, got {text!r}")
    return values


def _check_density(path: Path) -> None:
    """Refuse a bad ``--density`` map (unreadable, not 2-D, NaN, negative, all zero…) before any work."""
    from napari_m2mrf.io.density_maps import read_density_map
    from napari_m2mrf.sampling.density import resample_density

    given = read_density_map(path)
    resample_density(given.values, (8, 8), f"--density {path}")


def _is_slide_model(model: ModelRef) -> bool:
    from napari_m2mrf.inference.batch import is_slide_model

    return is_slide_model(model)


MAX_TILE = 16384  # px: a tile's input and probabilities stay within a few GiB
MAX_WORKERS = 256  # local dask worker processes (a bigger cluster: --scheduler)
MAX_THREADS = 1024  # PyTorch CPU threads per input
MIN_GRID, MAX_GRID = 8, 4096  # --output-size: samples per side (4096² is 16.8 M samples)


def run(args: argparse.Namespace) -> int:
    from napari_m2mrf.cli import TqdmProgress
    from napari_m2mrf.inference.batch import (
        PredictOptions,
        collect_inputs,
        failure,
        predict_many,
    )

    if not 0 <= args.threads <= MAX_THREADS:
        raise UserError(f"--threads must be between 1 and {MAX_THREADS}, got {args.threads}")
    if not 0 <= args.workers <= MAX_WORKERS:
        raise UserError(f"--workers must be between 0 and {MAX_WORKERS} local processes, got {args.workers}")
    if args.workers or args.scheduler:
        from napari_m2mrf.compat import require_dask_distributed

        require_dask_distributed()  # before any work: a mismatched pair would fail mid-run
    if not args.model.strip():
        raise UserError("--model is empty: give a bundled or trained model name, or a checkpoint file")
    if not 128 <= args.tile <= MAX_TILE:
        raise UserError(f"--tile must be between 128 and {MAX_TILE} px, got {args.tile}")
    if args.density is not None:
        _check_density(args.density)
    if args.output_size is not None and not all(MIN_GRID <= side <= MAX_GRID for side in args.output_size):
        raise UserError(f"--output-size must be two sides between {MIN_GRID} and {MAX_GRID} samples, "
                        f"got {args.output_size[0]} {args.output_size[1]}")
    unique: dict[str, Path] = {}  # the same file given twice is predicted (and reported) once
    for path in collect_inputs(args.inputs):
        unique.setdefault(os.path.realpath(path), path)
    inputs = list(unique.values())
    from napari_m2mrf.io.input_gate import check_path

    refused_inputs: dict[Path, dict] = {}
    for path in inputs:  # before the model loads: a FIFO, device or unreadable file is refused unopened
        try:
            check_path(path)
        except UserError as exc:
            refused_inputs[path] = failure(path, exc)
    if len(refused_inputs) == len(inputs):
        return _report(list(refused_inputs.values()), args.json)
    from napari_m2mrf.catalog import resolve, untrained_architecture

    refused = untrained_architecture(args.model.strip())
    if refused:
        raise UserError(refused)
    model = resolve(args.model)  # once per run: the ModelRef (and its weights' sha256) goes to every input
    if args.density is not None and not _is_slide_model(model):
        raise UserError(f"--density steers a slide model's sampler; {model.name} is a fundus model")
    if args.output_size is not None and not _is_slide_model(model):
        raise UserError(f"--output-size sets a slide model's sample grid; {model.name} is a fundus model")
    if not args.scheduler:  # the workers of a remote cluster may have devices this machine lacks
        from napari_m2mrf.inference.devices import choose_device

        choose_device(args.device)
    options = PredictOptions(
        model=model, out_dir=args.out, mode=args.mode, device=args.device, tile=args.tile,
        thresholds=_thresholds(args.thresholds, model, args.mode), masks=args.masks, probability_maps=args.probability_maps,
        overwrite=args.overwrite, threads=args.threads or None,
        density=None if args.density is None else args.density.resolve(),
        output_size=None if args.output_size is None else tuple(args.output_size),
    )
    runnable = [path for path in inputs if path not in refused_inputs]
    progress = TqdmProgress("predict")
    try:
        predicted = predict_many(runnable, options, workers=args.workers, scheduler=args.scheduler, progress=progress)
    finally:
        progress.finish()
    done = {result["input"]: result for result in predicted}
    results = [refused_inputs.get(path) or done.get(str(path)) for path in inputs]
    return _report([r for r in results if r is not None], args.json)


def _report(results: list[dict], as_json: bool) -> int:
    """Print one line per input (stdout; a failure on stderr, and with ``as_json`` also its JSON line);
    0 when every input succeeded, else 2."""
    from napari_m2mrf.cli import PROG

    failed = [r for r in results if "error" in r]
    for result in results:
        if as_json:
            print(json.dumps(result))
        if result.get("scale_notice"):
            sys.stderr.write(f"{PROG}: {result['input']}: {result['scale_notice']}\n")
        if "error" in result:
            sys.stderr.write(f"{PROG}: error: {result['error']}\n")
        elif as_json:
            continue
        elif result.get("kind") == "slide":
            shares = ", ".join(f"{name} {100 * v:.1f}%" for name, v in result["class_samples"].items())
            height, width = result["image_shape"]
            scale = result["input_scale"]
            spacing = f", {scale['um_per_sample']:.3g} µm per sample" if scale["um_per_sample"] else ""
            print(f"{result['input']} -> {result['workspace']} ({width}×{height} px, {result['samples']} samples"
                  f"{spacing}: {shares}; {result['seconds']:.1f} s)")
        else:
            fractions = ", ".join(f"{code} {100 * v:.3f}%" for code, v in result["lesion_fraction"].items())
            print(f"{result['input']} -> {result['workspace']} ({fractions}; {result['seconds']:.1f} s)")
    if failed and len(results) > 1:
        sys.stderr.write(f"{PROG}: {len(failed)} of {len(results)} inputs failed\n")
    return 2 if failed else 0
