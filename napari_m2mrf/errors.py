"""Errors that describe a user's mistake or the machine's state (bad input, missing file, disk full,
another process writing): shown as one line, never a traceback. No Qt, no heavy imports.

:func:`user_message` is the one boundary between expected failures and bugs: the command line
(``napari_m2mrf.cli.main``) and the widgets call it with any exception; a message back means "show
this one line", ``None`` means "a bug: let the traceback through".
"""

from __future__ import annotations

import errno
import sys


class UserError(Exception):
    """A problem the user can fix; the CLI prints ``napari-m2mrf: error: <message>`` and exits with code 2."""


_OS_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "exists already",
    errno.ENOTDIR: "not a folder",
    errno.EISDIR: "is a folder",
    errno.EMFILE: "too many open files",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large",
}

# (module, attribute) of exception types raised by codecs and validators for bad data; only looked
# up in modules that are already imported (an error cannot come from a module never loaded).
_EXPECTED_FOREIGN = (
    ("zlib", "error"),
    ("PIL", "UnidentifiedImageError"),
    ("PIL.Image", "DecompressionBombError"),
    ("tifffile", "TiffFileError"),
    ("tifffile.tifffile", "TiffFileError"),
    ("numcodecs.compat", "ChecksumError"),
    ("imagecodecs", "DelayedImportError"),
    ("pydantic", "ValidationError"),
    ("pydantic_core", "ValidationError"),
    ("yaml", "YAMLError"),
    ("json", "JSONDecodeError"),
    ("safetensors", "SafetensorError"),
    ("zarr.errors", "BaseZarrError"),
    ("zarr.errors", "ZarrError"),
)


def expected_error_types() -> tuple[type[BaseException], ...]:
    """The exception types that are a user's or the machine's problem, never a bug (see module docstring)."""
    types: list[type[BaseException]] = [UserError, OSError]
    for module_name, attribute in _EXPECTED_FOREIGN:
        module = sys.modules.get(module_name)
        kind = getattr(module, attribute, None) if module is not None else None
        if isinstance(kind, type) and issubclass(kind, BaseException):
            types.append(kind)
    codecs = sys.modules.get("imagecodecs")
    if codecs is not None:  # imagecodecs: one <Codec>Error per codec, e.g. JpegError, Jpeg2kError
        for name in dir(codecs):
            kind = getattr(codecs, name, None) if name.endswith("Error") else None
            if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__.startswith("imagecodecs"):
                types.append(kind)
    return tuple(types)


def is_expected(exc: BaseException) -> bool:
    """True when ``exc`` is an expected failure (a message, not a traceback)."""
    return isinstance(exc, expected_error_types())


def user_message(exc: BaseException) -> str | None:
    """One line for the user describing an expected failure, or ``None`` for a bug (show the traceback).

    OSError gets its file name and a plain reason ("no space left on the device", "read-only file
    system", …); codec and validation errors their first line.
    """
    if not is_expected(exc):
        return None
    if isinstance(exc, UserError):
        text = str(exc)
    elif isinstance(exc, OSError):
        reason = _OS_REASONS.get(exc.errno or -1) or exc.strerror or str(exc) or type(exc).__name__
        where = exc.filename if exc.filename is not None else None
        if where is not None and exc.filename2 is not None:
            where = f"{where} -> {exc.filename2}"
        text = f"{where}: {reason}" if where is not None else reason
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        text = f"{_kind(exc)}: {first}" if first else _kind(exc)
    return " ".join(text.split()) or type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (what a one-line refusal quotes), or its type's name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _kind(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "ValidationError":
        return "invalid value"
    if name in ("YAMLError", "ScannerError", "ParserError", "ConstructorError"):
        return "invalid YAML"
    if name == "JSONDecodeError":
        return "invalid JSON"
    if name in ("error",) and type(exc).__module__ == "zlib":
        return "corrupt compressed data"
    return f"unreadable data ({name})"


class InputRefused(UserError):
    """An input the read-side gate refuses before decoding (not a regular file, too large, wrong type)."""


class LimitExceeded(InputRefused):
    """An input declares more than a documented limit allows; the message says how to raise the limit."""


class CorruptData(UserError):
    """Stored pixel data (a TIFF tile, a zarr chunk) that fail to decode; the message names where."""
