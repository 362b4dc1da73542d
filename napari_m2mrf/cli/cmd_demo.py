"""``napari-m2mrf demo``: napari with the plugin, sample data and the bundled models."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from napari_m2mrf.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="open napari with the plugin, sample data and the bundled models",
        description="Open napari with the plugin's widgets docked, the sample data loaded and the bundled "
        "models run. With --screenshot, save a PNG of the window, print a summary and exit (a virtual "
        "display is started when there is none).",
    )
    parser.add_argument("--screenshot", type=Path, metavar="PATH", help="save a screenshot PNG here and exit")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from napari_m2mrf.demo import run_demo

    if args.screenshot is None and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("no display: pass --screenshot PATH to run the demo headless")
    summary = run_demo(args.screenshot)
    print("\n".join(summary.lines()))
    return 0
