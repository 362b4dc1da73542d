"""``napari-m2mrf predict``: batch lesion prediction over files and folders, one workspace per input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from napari_m2mrf.errors import UserError

if TYPE_CHECKING:
    from napari_m2mrf.catalog import ModelRef


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="segment lesions in many images, one workspace per input",
        description="Run a lesion model on files and folders of fundus photographs. Each input gets "
        "OUT/<name>.m2mrf.zarr (image, labels/prediction, probabilities, provenance); --masks also writes "
        "IDRiD-style 1-bit masks to OUT/masks. --workers or --scheduler spread the inputs over a "
        "dask.distributed cluster. Inputs sharing a file name (a/img.jpg, b/img.jpg) get their folder in the "
        "name (a_img, b_img). Earlier masks are kept unless --overwrite.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    parser.add_argument("--model", required=True, help="bundled model name, checkpoint file or registry name")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--mode", choices=["whole", "tiles"], default="whole",
                        help="whole: official whole-image protocol (default); tiles: full-resolution sliding window")
    parser.add_argument("--tile", type=int, default=1024, help="tile size in px for --mode tiles (default 1024)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument("--thresholds", metavar="EX,HE,SE,MA",
                        help="per-class thresholds (default: those calibrated in the checkpoint, else 0.5 each)")
    parser.add_argument("--masks", action="store_true", help="also write IDRiD-style masks to OUT/masks")
    parser.add_argument("--probability-maps", action="store_true",
                        help="also write 8-bit per-class probability TIFFs to OUT/probabilities (for evaluate)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, default=0, help="run on a local dask cluster of N worker processes")
    group.add_argument("--scheduler", metavar="ADDRESS", help="run on the dask.distributed scheduler at ADDRESS")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line per input")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace masks and probability maps of an earlier run, and reuse a workspace made for another "
        "image of the same name (never one holding corrections)",
    )
    parser.set_defaults(func=run)
    return parser


def _thresholds(text: str | None, model: ModelRef) -> tuple[float, ...]:
    """``--thresholds`` as given, else the model's calibrated thresholds (said on stderr), else 0.5 each."""
    if text is None:
        from napari_m2mrf.models.thresholds import DEFAULT_THRESHOLD, class_thresholds

        meta = model.metadata
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


MAX_TILE = 16384  # px: a tile's input and probabilities stay within a few GiB
MAX_WORKERS = 256  # local dask worker processes (a bigger cluster: --scheduler)


def run(args: argparse.Namespace) -> int:
    from napari_m2mrf.cli import TqdmProgress
    from napari_m2mrf.inference.batch import (
        PredictOptions,
        collect_inputs,
        predict_many,
    )

    if not 0 <= args.workers <= MAX_WORKERS:
        raise UserError(f"--workers must be between 0 and {MAX_WORKERS} local processes, got {args.workers}")
    if args.workers or args.scheduler:
        from napari_m2mrf.compat import require_dask_distributed

        require_dask_distributed()  # before any work: a mismatched pair would fail mid-run
    if not args.model.strip():
        raise UserError("--model is empty: give a bundled model name, a registry name or a checkpoint file")
    if not 128 <= args.tile <= MAX_TILE:
        raise UserError(f"--tile must be between 128 and {MAX_TILE} px, got {args.tile}")
    inputs = collect_inputs(args.inputs)
    from napari_m2mrf.io.input_gate import check_path

    for path in inputs:  # before the model loads: a FIFO, device or unreadable file is refused unopened
        check_path(path)
    from napari_m2mrf.catalog import resolve

    model = resolve(args.model)  # once per run: the ModelRef (and its weights' sha256) goes to every input
    options = PredictOptions(
        model=model, out_dir=args.out, mode=args.mode, device=args.device, tile=args.tile,
        thresholds=_thresholds(args.thresholds, model), masks=args.masks, probability_maps=args.probability_maps,
        overwrite=args.overwrite,
    )
    progress = TqdmProgress("predict")
    try:
        results = predict_many(inputs, options, workers=args.workers, scheduler=args.scheduler, progress=progress)
    finally:
        progress.finish()
    for result in results:
        if args.json:
            print(json.dumps(result))
        else:
            fractions = ", ".join(f"{code} {100 * v:.3f}%" for code, v in result["lesion_fraction"].items())
            print(f"{result['input']} -> {result['workspace']} ({fractions}; {result['seconds']:.1f} s)")
    return 0
