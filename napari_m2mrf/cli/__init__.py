"""The ``napari-m2mrf`` console command.

Each subcommand lives in its own module ``napari_m2mrf/cli/cmd_<name>.py`` exposing
``register(subparsers) -> argparse.ArgumentParser``; the parser's ``func(args) -> int`` runs it.
Modules are found by name so that a new subcommand is one new file. Heavy imports (torch, napari)
happen inside ``func`` so that ``--help`` stays fast.

Libraries: progress bars are tqdm's (:class:`TqdmProgress` only adapts the ``(done, total, message)``
callback to it); ``-v``/``-vv`` route the library's :mod:`logging` records to stderr through
``logging.basicConfig`` (INFO/DEBUG); without them nothing but the usual output is printed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from napari_m2mrf.errors import user_message

PROG = "napari-m2mrf"

logger = logging.getLogger(__name__)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _subcommand_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_"))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every ``cmd_*`` module's subcommand registered."""
    parser = OneLineErrorParser(
        prog=PROG,
        description="Lesion and slide segmentation with M2MRF-HRNetV2 and learned deformed downsampling.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log the decisions taken (levels, formats, devices) to stderr; -vv: also debug details",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    subparsers.required = True
    for name in _subcommand_modules():
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose > 1 else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        logger.debug("command %s with %s", args.command, vars(args))
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # the one error boundary: expected failures are one line, bugs a traceback
        message = user_message(exc)
        if message is None:
            raise
        logger.debug("%s failed", args.command, exc_info=True)
        sys.stderr.write(f"{PROG}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


class TqdmProgress:
    """A tqdm bar on stderr as a ``(done, total, message)`` progress callback: ``label 40.0%|####  | 4/10
    message``, or with ``total_bytes`` (the size of all the work) the MB done and the throughput in MB/s.
    The bar appears at the first call (so an unused one prints nothing); :meth:`finish` closes it."""

    def __init__(self, label: str, total_bytes: int | None = None) -> None:
        self.label, self.total_bytes = label, total_bytes
        self.bar = None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        scale = self.total_bytes / 1e6 / max(total, 1) if self.total_bytes is not None else 1
        if self.bar is None:
            amount = "{n:.1f}/{total:.1f} MB {rate_noinv_fmt}" if self.total_bytes is not None else "{n}/{total}"
            self.bar = tqdm(
                desc=self.label, total=total * scale, unit="MB" if self.total_bytes is not None else "it",
                file=sys.stderr, mininterval=0.2, disable=False,
                bar_format="{desc} {percentage:5.1f}%|{bar:30}| " + amount + "{postfix}",
            )
        self.bar.total = total * scale
        self.bar.set_postfix_str(message, refresh=False)
        self.bar.update(done * scale - self.bar.n)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    raise SystemExit(main())
