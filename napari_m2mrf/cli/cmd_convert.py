"""``napari-m2mrf convert INPUT OUT.zarr``: write an OME-NGFF pyramid (a workspace) from any supported input.

Inputs: JPEG/PNG/BMP/TIFF photographs, OME-TIFF, Aperio SVS, Hamamatsu NDPI, generic tiled TIFF
pyramids, OME-Zarr. Level 0 is copied block by block and every coarser level is made by 2×2 area
averaging; ground truth found with the input (a dataset layout's masks, an OME-Zarr's labels, an
OME-TIFF ``ground_truth`` series) is written as ``labels/ground_truth``. An interrupted conversion
resumes when run again with the same arguments and the same source (size, mtime and a hash of its
first and last MiB are recorded); another source restarts the image instead. The output is locked
while written (a second process writing it gets an error), and the user's corrections
(``labels/corrected``) in an existing workspace are never deleted: a conversion that would lose
them (another NGFF version, another image) is refused, with or without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from napari_m2mrf.cli import TqdmProgress
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.output_gate import output_store, source_identity


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="write an OME-NGFF pyramid (workspace) from an image or slide",
        description="Convert a fundus photograph or slide (JPEG, PNG, BMP, TIFF, OME-TIFF, SVS, NDPI, OME-Zarr) "
        "into an OME-NGFF pyramid with its ground truth as labels. Resumes an interrupted conversion.",
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="image, slide or OME-Zarr to convert")
    parser.add_argument("output", type=Path, metavar="OUT.zarr", help="the OME-Zarr store to write")
    parser.add_argument("--ngff", choices=("0.4", "0.5"), default="0.5", help="NGFF version (0.4: zarr v2; default 0.5)")
    parser.add_argument("--chunk", type=int, default=512, help="chunk side in pixels (default 512)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing complete OUT.zarr")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from napari_m2mrf.io.formats import inspect_source
    from napari_m2mrf.io.slides import check_pyramid_readable, open_pyramid

    if args.chunk < 64 or args.chunk > 8192:
        raise UserError(f"--chunk must be between 64 and 8192 pixels, not {args.chunk}")
    info = inspect_source(args.input)
    if args.output.suffix != ".zarr":
        raise UserError(f"{args.output}: the output must be a folder ending in .zarr")
    if args.output.resolve() == args.input.resolve():
        raise UserError(f"{args.output}: the output cannot be the input")
    if args.input.resolve() in args.output.resolve().parents:
        raise UserError(f"{args.output}: the output cannot be inside the input {args.input}")
    if args.output.resolve() in args.input.resolve().parents:
        raise UserError(f"{args.output}: the output cannot hold the input {args.input}")
    source = open_pyramid(args.input)
    check_pyramid_readable(source)
    truth = _ground_truth(args.input, info.kind, source.shape[1:])
    identity = source_identity(args.input)
    with output_store(args.output):  # parents made only now (after the input passed), lock held while writing
        workspace = _prepare_output(args.output, args.input, args.ngff, args.overwrite, identity)
        _write(args, workspace, source, truth, identity)
    return 0


def _write(args: argparse.Namespace, workspace, source, truth, identity: dict) -> None:
    level0_bytes = int(np.prod(source.shape)) * source.dtype.itemsize
    bar = TqdmProgress(f"{args.input.name} → {args.output.name}", total_bytes=level0_bytes)
    from napari_m2mrf.io.input_gate import CheckedArray

    workspace.write_image(
        CheckedArray(source.levels[0], f"{args.input} level 0"),  # a chunk failing mid-copy: one message naming it
        pixel_size_um=source.pixel_size_um,
        name=source.name,
        chunk=args.chunk,
        progress=None if args.quiet else bar,
        source_id=identity,
    )
    bar.finish()
    if truth is not None:
        labels, colors, names = truth
        workspace.write_labels(
            "ground_truth", labels, colors=colors, names=names, pixel_size_um=source.pixel_size_um, chunk=args.chunk
        )
    print(f"wrote {args.output} ({len(workspace.image.levels)} levels{', ground truth' if truth else ''})")


def _prepare_output(output: Path, source: Path, version: str, overwrite: bool, identity: dict):
    """The workspace to write into: a new one, or an existing one (an interrupted conversion to resume or
    restart, a workspace holding only labels, or with ``overwrite`` a complete one). Never deletes
    ``labels/corrected``; other earlier results only with ``overwrite``."""
    from napari_m2mrf.io.output_gate import OutputExists, same_source
    from napari_m2mrf.io.workspace import Workspace

    if not (output.exists() or output.is_symlink()):
        return Workspace.create(output, source=source, ngff_version=version)
    if not Workspace.is_workspace(output):
        raise UserError(f"{output}: exists and is not a workspace; choose another output")
    existing = Workspace.open(output)
    if existing.has_image and not overwrite:
        raise OutputExists(f"{output}: exists already (use --overwrite to replace its image)")
    labels = existing.label_names()
    if "corrected" in labels:
        if existing.version != version:
            raise UserError(
                f"{output}: holds the user's corrections (labels/corrected) in NGFF {existing.version}; converting to "
                f"{version} would delete them. Use --ngff {existing.version} or another output"
            )
        recorded = existing.info.get("source_identity")
        same = same_source(recorded, identity) if recorded else (
            existing.source is None or existing.source.resolve() == source.resolve()
        )
        if not same:
            raise UserError(
                f"{output}: holds the user's corrections (labels/corrected) for another image "
                f"({existing.source}); convert to another output"
            )
        return existing
    if existing.version == version:
        return existing
    others = [name for name in labels if name != "ground_truth"]
    if others and not overwrite:
        raise OutputExists(
            f"{output}: holds labels/{others[0]} in NGFF {existing.version}; converting to {version} replaces the "
            "whole store (use --overwrite, or --ngff " + existing.version + ")"
        )
    shutil.rmtree(output)
    return Workspace.create(output, source=source, ngff_version=version)


def _ground_truth(path: Path, kind: str, shape: tuple[int, int]):
    """``(labels, colors, names)`` stored with or next to the input, or None."""
    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.io.datasets import find_ground_truth, load_ground_truth
    from napari_m2mrf.io.slides import open_label_pyramids

    if kind == "fundus":
        files = find_ground_truth(path)
        if files is None or not files.masks:
            return None
        return (
            load_ground_truth(files, shape),
            {c.label: c.color for c in FUNDUS_CLASSES},
            {c.label: c.code for c in FUNDUS_CLASSES},
        )
    stored = [p for p in open_label_pyramids(path) if p.name == "ground_truth"]
    if not stored or tuple(stored[0].shape) != tuple(shape):
        return None
    return stored[0].levels[0], stored[0].colors, stored[0].names
