"""``napari-m2mrf train CONFIG.yaml``: the bundled trainer (same as ``python -m training``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from training.cli import add_arguments

    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a segmentation model from a config file",
        description="Train a model as CONFIG says, printing progress as JSON lines. Several processes: "
        "torchrun --nproc_per_node N -m training CONFIG.yaml.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from training.cli import run as train

    return train(args)
