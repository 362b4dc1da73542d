"""Command line of the trainer: ``python -m training CONFIG.yaml`` and ``napari-m2mrf train CONFIG.yaml``.

Prints one JSON object per event on stdout (see :mod:`training.events`); the same lines go to
``<output_dir>/events.jsonl``. A user's mistake (bad config, missing files) is one line on stderr
and exit code 2. SIGINT/SIGTERM, or a file named ``STOP`` in the output folder, stop the run
cooperatively: the last checkpoint is written and the run can be resumed with ``--resume``.
Without ``--resume`` a run refuses an output folder holding an earlier run's checkpoints unless
``--overwrite``; the folder is locked while the run writes (a second run there gets an error).
Under ``torchrun`` only rank 0 prints. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from napari_m2mrf.errors import UserError

STOP_FILE = "STOP"
EARLIER_RESULTS = ("last.pt", "last.safetensors", "best.safetensors")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The trainer's arguments, shared by both entry points."""
    parser.add_argument("config", type=Path, metavar="CONFIG", help="training config (.yaml/.yml or .json)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="STATE",
        help="continue from a resume state (last.pt); without a path: OUTPUT_DIR/last.pt when it exists",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (YAML syntax), e.g. --set run.iterations=100; repeatable",
    )
    parser.add_argument("--output-dir", type=Path, help="where checkpoints and logs go (overrides run.output_dir)")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="start afresh in an output folder that holds an earlier run's checkpoints (replacing them)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` say, printing events as JSON lines; returns the exit code."""
    from training.config import load_config

    config = load_config(args.config)
    overrides = list(args.overrides) + ([f"run.output_dir={args.output_dir}"] if args.output_dir else [])
    if overrides:
        import yaml

        try:
            config = config.with_overrides(overrides)
        except (ValueError, TypeError, yaml.YAMLError) as exc:  # a --set value YAML or the config model cannot take
            raise UserError(f"--set: {' '.join(str(exc).split())}") from None
    output_dir = Path(config.run.output_dir)
    from training.sources import check_data

    check_data(config.data, config.data.train_split, config.data.val_split)  # bad data: refused before any write
    if args.resume is None:
        _refuse_earlier_run(output_dir, getattr(args, "overwrite", False))
    if os.environ.get("RANK", "0") != "0":  # torchrun: only rank 0 writes, and holds the lock
        return _train(args, config, output_dir)
    from napari_m2mrf.io.output_gate import output_folder

    with output_folder(output_dir):
        if args.resume is None and getattr(args, "overwrite", False):  # the earlier run's best would pass as ours
            (output_dir / "best.safetensors").unlink(missing_ok=True)
        return _train(args, config, output_dir)


def _refuse_earlier_run(output_dir: Path, overwrite: bool) -> None:
    """Without ``--resume``, a fresh run must not silently replace an earlier run's checkpoints."""
    from napari_m2mrf.io.output_gate import refuse_existing

    earlier = [output_dir / name for name in EARLIER_RESULTS]
    refuse_existing(earlier, overwrite, "checkpoints of an earlier run; --resume continues it")


def _train(args: argparse.Namespace, config, output_dir: Path) -> int:
    from training.events import event_record
    from training.loop import Trainer

    stop_file = output_dir / STOP_FILE
    stop_file.unlink(missing_ok=True)
    requested = threading.Event()
    trainer = Trainer(
        config,
        resume=resume_path(args.resume, output_dir),
        should_stop=lambda: requested.is_set() or stop_file.exists(),
    )
    previous = {signum: signal.signal(signum, lambda *_: requested.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for event in trainer.run():
            print(json.dumps(event_record(event)), flush=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def resume_path(request: str | None, output_dir: Path) -> Path | None:
    """``--resume`` → the state to load: ``auto`` is ``output_dir/last.pt`` if present (else a fresh start)."""
    if request is None:
        return None
    if request == "auto":
        candidate = output_dir / "last.pt"
        return candidate if candidate.is_file() else None
    path = Path(request)
    if not path.is_file():
        raise UserError(f"{path}: no such resume state")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training``: parse, run, and turn a ``UserError`` into one line + exit code 2."""
    parser = add_arguments(
        argparse.ArgumentParser(prog="python -m training", description="Train an napari-m2mrf segmentation model.")
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except Exception as exc:  # the CLI's boundary: expected failures are one line, bugs a traceback
        from napari_m2mrf.errors import user_message

        message = user_message(exc)
        if message is None:
            raise
        sys.stderr.write(f"training: error: {message}\n")
        return 2
