"""Command line of the check: the whole check, or (hidden options) one stage in a child process."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .budget import DEFAULT_BUDGET_S
from .runner import run_check
from .settings import Settings
from .stages import STAGE_FUNCTIONS, run_stage


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description="One prepared GPU check: CUDA tests, W48 inference and training speed, the slide model, "
                    "a fundus run.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="total seconds (default 480)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", default=None, help="tiny sizes (default without CUDA)")
    size.add_argument("--full", dest="tiny", action="store_false", help="full sizes even without CUDA")
    parser.add_argument("--stages", nargs="+", choices=list(STAGE_FUNCTIONS), default=list(STAGE_FUNCTIONS))
    parser.add_argument("--idrid", help="IDRiD 'A. Segmentation' subset for the fundus stage")
    parser.add_argument("--keep-scratch", action="store_true")
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)  # epoch seconds the budget counts from
    parser.add_argument("--stage", choices=list(STAGE_FUNCTIONS), help=argparse.SUPPRESS)  # run one stage
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # the stage's, epoch seconds
    parser.add_argument("--device", help=argparse.SUPPRESS)  # the stage's
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check (exit code 0 when no stage had an error) or, with ``--stage``, one stage."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    out: Path = args.out_dir.resolve()
    if args.stage:
        record = run_stage(args.stage, Settings.for_run(bool(args.tiny), args.device, args.idrid), out, args.deadline)
        return 0 if record["ok"] else 1
    return run_check(out, args.budget_s, args.started or time.time(), args.tiny, args.stages, args.idrid,
                     args.keep_scratch)
