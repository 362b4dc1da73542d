"""Atomic replacement of files and folders: write aside, then rename over the target.

A crash, a kill or an exception while writing leaves the previous file (or folder) untouched and
only a hidden ``.<name>.tmp-*`` sibling behind, which the next successful write removes.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TMP_MARK = ".tmp-"


def temporary_sibling(target: Path) -> Path:
    """A fresh hidden path next to ``target`` on the same file system (so a rename is atomic)."""
    return target.with_name(f".{target.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")


def remove_stale_siblings(target: Path) -> None:
    """Delete leftovers of interrupted writes of ``target`` (``.<name>.tmp-*``)."""
    if not target.parent.is_dir():
        return
    for stale in target.parent.glob(f".{target.name}{_TMP_MARK}*"):
        _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write a file or a folder into; on success it replaces ``target``.

    On an exception the temporary is removed and ``target`` keeps its previous content. A folder
    target is swapped by two renames (old aside, new in), so there is always one complete copy.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(target)
    tmp = temporary_sibling(target)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {target}")
        if tmp.is_file():
            _fsync_file(tmp)
        replace(tmp, target)
        _fsync_folder(target.parent)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def created_once(folder: Path, made: Path | None = None) -> Iterator[Path]:
    """Yield a scratch path beside ``folder`` to write a folder into; on success it is renamed to ``folder``.

    For a cache folder that two processes may make at the same time: when the rename (or the writing)
    fails with an ``OSError`` while ``made`` (a path inside ``folder``; ``folder`` itself by default)
    is a folder, another process finished first and its folder stands; otherwise the error is raised.
    The scratch is removed in every case; an existing ``folder`` is never replaced.
    """
    scratch = temporary_sibling(folder)
    try:
        yield scratch
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.rename(scratch, folder)
    except OSError:
        if not (made or folder).is_dir():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fsync_file(path: Path) -> None:
    """Flush a written file's data to the disk (so the rename publishes complete content)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing a previous file or folder there as atomically as possible."""
    if new.is_dir() and target.exists():
        old = temporary_sibling(target)
        os.replace(target, old)
        os.replace(new, target)
        _remove(old)
    else:
        os.replace(new, target)


def write_bytes_atomic(target: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to ``target`` atomically (fsync'd before the rename); returns the path."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(target)
