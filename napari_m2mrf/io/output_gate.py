"""The one gate every write goes through: containment, a lock per output, and no silent replacement.

* :func:`resolve_inside` — a path under the output folder the user named; refused (``OutputEscape``)
  when it climbs out with ``..`` or when an existing component under the output is a symbolic
  link that leads outside it (a received workspace whose ``labels/`` links elsewhere).
  :func:`check_tree` does the same for every folder of a subtree that is written in place.
* :func:`output_lock` — an advisory ``fcntl.flock`` lock per output, held while writing and
  released by the kernel when the process dies. A second writer gets ``OutputLocked``: "… is being
  written by another napari-m2mrf process (pid N)". Re-entrant for one thread (other threads of the
  process wait). The lock file
  is ``<folder>/.napari-m2mrf.lock`` inside a plain output folder, and ``.<name>.lock`` next to a
  zarr store (a workspace is created and replaced by renames, and zarr warns about foreign files
  inside a store); it is removed when the lock is released.
* :func:`output_folder` — creates an output folder (and its missing parents) only when a command
  is about to write, locks it, and on the way out removes the folders this run created that are
  still empty, so a refused input leaves nothing behind.
* :func:`refuse_existing` — never replace earlier results without an explicit ``--overwrite``.
* :func:`source_identity` — size, mtime and a hash of the first and last bytes of an input, so a
  resumable conversion resumes only from the very same source.
* :func:`remove_partials` — temporary ``*.partial`` files (zarr's aside-writes) and ``.…tmp-*``
  siblings (``napari_m2mrf.io.atomic``) left by a kill are deleted before a resumed write.

Atomic publishing (write aside, fsync, rename) is :mod:`napari_m2mrf.io.atomic`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from napari_m2mrf.errors import UserError

LOCK_NAME = ".napari-m2mrf.lock"
PARTIAL_SUFFIX = ".partial"
_IDENTITY_BYTES = 1 << 20


class OutputLocked(UserError):
    """Another process is writing the same output."""


class OutputEscape(UserError):
    """A write would land outside the output folder the user named."""


class OutputExists(UserError):
    """Earlier results would be replaced without ``--overwrite``."""


# -- containment ------------------------------------------------------------------------------


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_inside(root: str | os.PathLike[str], *parts: str | os.PathLike[str]) -> Path:
    """``root / parts`` after checking that no existing component below ``root`` leads outside it.

    ``root`` is the output the user named (it may itself be a link; its target is the output).
    Returns the unresolved joined path (what callers print); raises :class:`OutputEscape`.
    """
    root = Path(root)
    real_root = Path(os.path.realpath(root))
    current = root
    for part in Path(*parts).parts if parts else ():
        if part in ("..", "") or Path(part).is_absolute():
            raise OutputEscape(f"{root / Path(*parts)}: refusing to write outside {root}")
        current = current / part
        if os.path.islink(current):
            real = Path(os.path.realpath(current))
            if not _within(real, real_root):
                raise OutputEscape(
                    f"{current}: is a symbolic link to {real}, outside {root}; refusing to write through it"
                )
    return current


def check_tree(root: str | os.PathLike[str], subtree: str | os.PathLike[str]) -> None:
    """:func:`resolve_inside` for ``subtree`` and every folder below it (written in place)."""
    root, subtree = Path(root), Path(subtree)
    relative = os.path.relpath(subtree, root)
    resolve_inside(root, *([] if relative == "." else Path(relative).parts))
    real_root = Path(os.path.realpath(root))
    if not subtree.is_dir():
        return
    for folder, dirs, _ in os.walk(subtree):
        for name in dirs:
            child = Path(folder) / name
            if os.path.islink(child) and not _within(Path(os.path.realpath(child)), real_root):
                raise OutputEscape(
                    f"{child}: is a symbolic link to {os.path.realpath(child)}, outside {root}; "
                    "refusing to write through it"
                )


# -- locking ----------------------------------------------------------------------------------

_held: dict[str, list[Any]] = {}  # lock file -> [fd, depth, owning thread]
_held_changed = threading.Condition()


def lock_path_for(target: str | os.PathLike[str]) -> Path:
    """Where the lock of output ``target`` lives (see the module docstring)."""
    target = Path(target)
    if target.name.endswith(".zarr"):
        return target.parent / f".{target.name}.lock"
    return target / LOCK_NAME


@contextmanager
def output_lock(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of output ``target`` (its folder, or a store's parent, must exist).

    Another process holding it: :class:`OutputLocked` at once. Within this process the lock is
    re-entrant for the thread holding it, and another thread waits for it (so a write's clean-up of
    leftovers never removes a temporary another thread is still writing).
    """
    lock = lock_path_for(target)
    key = os.path.abspath(lock)
    me = threading.get_ident()
    with _held_changed:
        while (entry := _held.get(key)) is not None and entry[2] != me:
            _held_changed.wait()
        if entry is not None:
            entry[1] += 1
        else:
            entry = _held[key] = [_acquire(lock, Path(target)), 1, me]
    try:
        yield lock
    finally:
        with _held_changed:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                try:
                    lock.unlink(missing_ok=True)
                except OSError:
                    pass
                os.close(entry[0])
                _held_changed.notify_all()


def _acquire(lock: Path, target: Path) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise OutputLocked(f"{target} is being written by another napari-m2mrf process (pid {holder})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file between our open and our lock: retry
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd


def locked_by_this_process(target: str | os.PathLike[str]) -> bool:
    """True while this process holds the lock of ``target``."""
    with _held_changed:
        return os.path.abspath(lock_path_for(target)) in _held


# -- output folders -----------------------------------------------------------------------------


def make_dirs(folder: str | os.PathLike[str]) -> list[Path]:
    """``mkdir -p folder``; returns the folders it created, outermost first."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists() and not probe.is_symlink():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        created.append(path)
    return created


def remove_if_empty(created: Iterable[Path]) -> None:
    """Remove the folders in ``created`` (outermost first) that are empty, innermost first."""
    for path in reversed(list(created)):
        try:
            path.rmdir()
        except OSError:
            return


@contextmanager
def output_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Create ``folder`` (with missing parents), lock it, and remove what this run created if it stays empty."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: exists and is not a folder")
    created = make_dirs(folder)
    try:
        with output_lock(folder):
            yield folder
    finally:
        remove_if_empty(created)


@contextmanager
def output_store(store: str | os.PathLike[str]) -> Iterator[Path]:
    """Lock a zarr store about to be written (its parent folders are created; empty ones removed after)."""
    store = Path(store)
    created = make_dirs(store.parent)
    try:
        with output_lock(store):
            yield store
    finally:
        remove_if_empty(created)


def refuse_existing(paths: Iterable[str | os.PathLike[str]], overwrite: bool, what: str) -> None:
    """:class:`OutputExists` naming the first existing path unless ``overwrite``."""
    if overwrite:
        return
    for path in paths:
        if os.path.lexists(path):
            raise OutputExists(f"{path}: exists already ({what}; use --overwrite to replace)")


# -- resuming -------------------------------------------------------------------------------------


def source_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A cheap fingerprint of an input: size, mtime and sha256 of its first and last MiB.

    A folder (OME-Zarr) is fingerprinted by the names, sizes and mtimes of its files (the first
    10 000) and the bytes of its metadata files.
    """
    path = Path(path).resolve()
    digest = hashlib.sha256()
    stat = path.stat()
    if path.is_dir():
        count = size = 0
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                file = Path(folder) / name
                info = file.stat()
                digest.update(f"{file.relative_to(path)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
                if name in ("zarr.json", ".zattrs", ".zarray", ".zgroup"):
                    digest.update(file.read_bytes())
                size += info.st_size
                count += 1
                if count >= 10_000:
                    break
            if count >= 10_000:
                break
        return {"path": str(path), "size": size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    with open(path, "rb") as handle:
        digest.update(handle.read(_IDENTITY_BYTES))
        if stat.st_size > _IDENTITY_BYTES:
            handle.seek(max(_IDENTITY_BYTES, stat.st_size - _IDENTITY_BYTES))
            digest.update(handle.read(_IDENTITY_BYTES))
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def same_source(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two :func:`source_identity` values describe the same content (the path may differ)."""
    if not a or not b:
        return False
    return all(a.get(key) == b.get(key) for key in ("size", "mtime_ns", "sha256"))


def remove_partials(folder: str | os.PathLike[str]) -> int:
    """Delete ``*.partial`` files and ``.…tmp-*`` leftovers of killed writes under ``folder``; returns how many.

    Call it only while holding the output's lock (nobody else is writing then).
    """
    from napari_m2mrf.io.atomic import _TMP_MARK, _remove

    removed = 0
    for current, dirs, files in os.walk(folder):
        for name in list(dirs):
            if name.startswith(".") and _TMP_MARK in name:
                _remove(Path(current) / name)
                dirs.remove(name)
                removed += 1
        for name in files:
            if name.endswith(PARTIAL_SUFFIX) or (name.startswith(".") and _TMP_MARK in name):
                (Path(current) / name).unlink(missing_ok=True)
                removed += 1
    return removed
