"""``napari-m2mrf models [PATTERN] [--params]``: the registered segmentation models (and their sizes)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models",
        help="list the registered segmentation models",
        description="List the registered segmentation models. With --params, one row per model and "
        "M2MRF variant with its parameter count (BN affine included, buffers excluded) for the "
        "given number of classes; the paper's Table 2 counts W48 with 4 classes.",
    )
    parser.add_argument("pattern", nargs="?", default="", help="only models whose name contains this (e.g. w48)")
    parser.add_argument("--params", action="store_true", help="count parameters of every model and variant")
    parser.add_argument("--num-classes", type=int, default=4, metavar="K", help="output classes (default 4)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from napari_m2mrf.models.registry import VARIANTS, count_parameters, list_models, model_entry

    from napari_m2mrf.errors import UserError

    names = [name for name in list_models() if args.pattern in name]
    if not names:
        raise UserError(f"no model name contains {args.pattern!r}; models: {', '.join(list_models())}")
    rows = []
    for name in names:
        entry = model_entry(name)
        for variant in VARIANTS if entry.m2mrf else [None]:
            cfg = {"num_classes": args.num_classes} | ({"variant": variant} if variant else {})
            row = [name, variant or "-", entry.description]
            if args.params:
                row.append(f"{count_parameters(name, **cfg) / 1e6:.2f}M")
            rows.append(row)
    header = ["model", "variant", "description"] + ([f"params ({args.num_classes} classes)"] if args.params else [])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0
