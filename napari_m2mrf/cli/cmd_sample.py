"""``napari-m2mrf sample``: write sample data sets to a folder (training data, test data, demos)."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_m2mrf.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sample",
        help="write semi-synthetic fundus images or a synthetic slide to a folder",
        description="Write sample data: N semi-synthetic fundus images with exact lesion masks in IDRiD's "
        "own layout (fundus_lesions), or a synthetic pyramidal histology slide with ground truth as "
        "OME-Zarr and OME-TIFF (slide).",
    )
    parser.add_argument("kind", choices=["fundus_lesions", "slide"], help="what to write")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("-n", "--count", type=int, default=10, help="fundus_lesions: number of images (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random series (default 0)")
    parser.add_argument("--scale", type=float, default=1.0, help="fundus_lesions: image scale (default 1.0 = 1411 px)")
    parser.add_argument("--size", type=int, default=32768, help="slide: level-0 width and height in px, a multiple of 512")
    parser.set_defaults(func=run)
    return parser


MAX_COUNT = 10_000  # generated images per call (each about 1 MB at scale 1)


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"output {args.out} exists and is not a folder")
    if args.kind == "fundus_lesions":
        if not 1 <= args.count <= MAX_COUNT:
            raise UserError(f"--count: the number of images must be between 1 and {MAX_COUNT}, got {args.count}")
        from sample_data.fundus_samples import write_fundus_dataset

        root = write_fundus_dataset(args.out, args.count, seed=args.seed, scale=args.scale)
        print(f"wrote {args.count} fundus images with lesion masks in IDRiD layout under {root}")
        return 0
    if args.size <= 0 or args.size % 512:
        raise UserError(f"slide size must be a positive multiple of 512 px, got {args.size}")
    from sample_data.slide_sample import generate_slide

    slide = generate_slide(args.out, size=args.size, seed=args.seed)
    print(f"wrote a {args.size}×{args.size} slide: {slide.ome_zarr} and {slide.ome_tiff}")
    return 0
