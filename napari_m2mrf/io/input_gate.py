"""The read-side gate: what every input passes before a byte of pixel data is decoded.

Each reader (the napari reader, ``convert``, ``predict``, ``evaluate``, the trainer's datasets and
config) reaches its file through :func:`napari_m2mrf.io.formats.inspect_source` /
:func:`~napari_m2mrf.io.formats.sniff_format` or the mask and config readers, which call the checks
below in this order:

1. :func:`check_path`: the path is a regular file or a folder, found with ``os.stat`` (a FIFO,
   device or socket is never opened; a symlink loop or a dangling link is named as such).
2. Header checks against :class:`~napari_m2mrf.io.limits.Limits`: :func:`pil_header` (Pillow's
   header, with ``Image.MAX_IMAGE_PIXELS`` from the limits), :func:`check_tiff_level` (tifffile's
   page structure), :func:`check_zarr_store` and :func:`check_zarr_levels` (store layout and array
   metadata), :func:`check_safetensors_header`, :func:`load_yaml`.
3. Pixel types (:func:`check_lazy_dtype`): images read lazily (slides, zarr stores, workspaces)
   are uint8 or uint16 with 1–4 channels; a photograph decoded whole may also be 1-bit or float
   (0..1 or 0..255, converted to 8 bits; NaN or infinity refused). Labels are uint8.
4. Decoding itself goes through :class:`CheckedArray`: a chunk or tile that fails to decode is a
   :class:`~napari_m2mrf.errors.CorruptData` naming the array and the chunk, not a codec traceback;
   :func:`verify_decodes` decodes every chunk of a small pyramid (and the corners of a large one)
   before anything is written.

Every refusal is a :class:`~napari_m2mrf.errors.UserError` subclass: one line naming the file, the
problem and, for a limit, the ``NAPARI_M2MRF_MAX_…`` variable that raises it.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import CorruptData, InputRefused, LimitExceeded, UserError, first_line
from napari_m2mrf.io.arrays import LazyArray
from napari_m2mrf.io.limits import Limits, current_limits

# A tiled source is compared with its stored bytes only when it declares more than this.
RATIO_CHECK_BYTES = 1 << 30
# verify_decodes decodes every chunk of pyramids up to this many bytes (decoded), else corners only.
FULL_VERIFY_BYTES = 64 << 20
_ZARR_METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
LAZY_IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
LABEL_DTYPES = (np.dtype(np.uint8),)


# -- 1. what kind of path -----------------------------------------------------------------------------


def check_path(path: str | os.PathLike[str], *, folder_ok: bool = True) -> os.stat_result:
    """``os.stat`` of ``path`` once it is known to be a regular, readable file (or a folder if ``folder_ok``).

    Never opens the path. ``InputRefused`` for a FIFO, device, socket, symlink loop, dangling link,
    unreadable or empty file; ``UserError`` when it does not exist.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputRefused(f"{path}: a symbolic link to a missing file") from None
        raise UserError(f"{path}: no such file or folder") from None
    except PermissionError:
        raise InputRefused(f"{path}: permission denied (cannot read the file)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputRefused(f"{path}: a symbolic link loop") from None
        raise InputRefused(f"{path}: cannot be read ({exc.strerror or exc})") from None
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        if not folder_ok:
            raise InputRefused(f"{path}: is a folder, not an image file")
        if not os.access(path, os.R_OK | os.X_OK):
            raise InputRefused(f"{path}: permission denied (cannot read the folder)")
        return info
    if not stat.S_ISREG(mode):
        raise InputRefused(f"{path}: is a {_kind_of(mode)}, not a regular file (refused without opening it)")
    if not os.access(path, os.R_OK):
        raise InputRefused(f"{path}: permission denied (cannot read the file)")
    if info.st_size == 0:
        raise InputRefused(f"{path}: the file is empty (0 bytes)")
    return info


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def read_head(path: str | os.PathLike[str], size: int) -> bytes:
    """The first ``size`` bytes of the regular file ``path`` (checked by :func:`check_path` first)."""
    path = Path(path)
    check_path(path, folder_ok=False)
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except PermissionError:
        raise InputRefused(f"{path}: permission denied (cannot read the file)") from None
    except OSError as exc:
        raise InputRefused(f"{path}: cannot be read ({exc.strerror or exc})") from None


# -- 2. headers ---------------------------------------------------------------------------------------


@contextmanager
def pil_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's ``MAX_IMAGE_PIXELS`` set to ``max_pixels`` (restored after), its bomb warning silenced."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def pil_header(path: str | os.PathLike[str], limits: Limits | None = None) -> tuple[int, int, str]:
    """``(width, height, mode)`` from the header of a JPEG/PNG/BMP/GIF, checked against the limits.

    Nothing is decoded. ``LimitExceeded`` for more than ``max_image_pixels``; ``InputRefused`` for a
    header Pillow cannot parse.
    """
    from PIL import Image, UnidentifiedImageError

    limits = limits or current_limits()
    path = Path(path)
    check_path(path, folder_ok=False)
    try:
        with pil_pixel_limit(limits.max_image_pixels), Image.open(path) as image:
            width, height = image.size
            mode = image.mode
    except Image.DecompressionBombError:
        raise too_many_pixels(path, None, None, limits) from None
    except PermissionError:
        raise InputRefused(f"{path}: permission denied (cannot read the file)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise InputRefused(f"{path}: not a readable image ({first_line(exc)})") from None
    check_pixels(path, height, width, limits.max_image_pixels, "max_image_pixels", limits)
    return width, height, mode


def too_many_pixels(path: Path, height: int | None, width: int | None, limits: Limits, field: str = "max_image_pixels") -> LimitExceeded:
    size = f"{width}×{height} pixels" if height is not None else "more pixels than allowed"
    return LimitExceeded(f"{path}: the header claims {size}, over the limit of {getattr(limits, field):,} pixels; {limits.how_to_raise(field)}")


def check_pixels(path: Path, height: int, width: int, limit: int, field: str, limits: Limits) -> None:
    """``InputRefused`` for an empty size; ``LimitExceeded`` when ``height·width`` exceeds ``limit``."""
    if height < 1 or width < 1:
        raise InputRefused(f"{path}: declares an empty image ({width}×{height} pixels)")
    if height * width > limit:
        raise too_many_pixels(path, height, width, limits, field)


def check_tiff_level(path: Path, level_index: int, page: Any, stored_bytes: int, limits: Limits) -> None:
    """Limits on one TIFF pyramid level, from its header: pixels, channels, type, stored vs declared size."""
    height, width = int(page.imagelength), int(page.imagewidth)
    check_pixels(path, height, width, limits.max_slide_pixels, "max_slide_pixels", limits)
    channels = int(page.samplesperpixel)
    if channels > limits.max_channels:
        raise InputRefused(f"{path}: {channels} samples per pixel; images have 1 to {limits.max_channels} (grey, RGB, RGBA)")
    declared = height * width * channels * max(1, int(page.bitspersample) // 8)
    if declared > RATIO_CHECK_BYTES and declared > limits.max_compression_ratio * max(1, stored_bytes):
        raise LimitExceeded(
            f"{path}: level {level_index} declares {width}×{height} pixels ({declared / 2**30:.1f} GiB) but the file "
            f"stores {stored_bytes:,} bytes for it (ratio {declared // max(1, stored_bytes):,}, over "
            f"{limits.max_compression_ratio:,}); {limits.how_to_raise('max_compression_ratio')}"
        )


def check_lazy_dtype(where: Any, dtype: Any, *, labels: bool = False) -> None:
    """``InputRefused`` unless ``dtype`` is a pixel type read lazily: uint8/uint16 images, uint8 labels."""
    dtype = np.dtype(dtype)
    allowed = LABEL_DTYPES if labels else LAZY_IMAGE_DTYPES
    if dtype not in allowed:
        what = "labels must be uint8" if labels else "slides and stores must hold uint8 or uint16 pixels"
        hint = "" if labels else " (convert float or signed images to 8 or 16 bits first)"
        raise InputRefused(f"{where}: unsupported pixel type {dtype}; {what}{hint}")


# -- zarr stores --------------------------------------------------------------------------------------


def check_zarr_store(path: str | os.PathLike[str], limits: Limits | None = None) -> int:
    """Walk the store at ``path`` without following links; return its stored bytes.

    ``InputRefused`` for a symbolic link that resolves outside the store (or not at all), a
    non-regular file, or a metadata file over ``max_metadata_bytes``.
    """
    limits = limits or current_limits()
    root = Path(path)
    check_path(root)
    real_root = os.path.realpath(root)
    total = 0
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise InputRefused(f"{folder}: cannot be listed ({exc.strerror or exc})") from None
        for entry in entries:
            if entry.is_symlink():
                _check_link_inside(entry.path, real_root, root)
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
                continue
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                raise InputRefused(f"{entry.path}: a {_kind_of(info.st_mode)} inside the zarr store {root}")
            if entry.name in _ZARR_METADATA and info.st_size > limits.max_metadata_bytes:
                raise LimitExceeded(
                    f"{entry.path}: {info.st_size:,} bytes of zarr metadata, over {limits.max_metadata_bytes:,}; "
                    f"{limits.how_to_raise('max_metadata_bytes')}"
                )
            total += info.st_size
    return total


def _check_link_inside(link: str, real_root: str, root: Path) -> None:
    try:
        target = os.path.realpath(link, strict=True)
    except OSError:
        raise InputRefused(f"{link}: a broken or looping symbolic link inside the zarr store {root}") from None
    if os.path.commonpath([real_root, target]) != real_root:
        raise InputRefused(f"{link}: a symbolic link out of the zarr store {root} (to {target}); refused")
    if not (os.path.isdir(target) or stat.S_ISREG(os.stat(target).st_mode)):
        raise InputRefused(f"{link}: a symbolic link to a special file inside the zarr store {root}")


def check_store_key(where: Any, key: str) -> str:
    """``key`` (a multiscale dataset path or a label name) if it stays inside the store, else ``InputRefused``."""
    text = str(key)
    parts = text.replace("\\", "/").split("/")
    if not text or text.startswith(("/", "\\")) or ":" in text or any(part in ("", ".", "..") for part in parts):
        raise InputRefused(f"{where}: the metadata names the path {text!r}, which leaves the store or is empty; refused")
    return text


def check_zarr_levels(
    where: Any, shapes: Sequence[Sequence[int]], dtypes: Sequence[Any], chunks: Sequence[Sequence[int]] | None,
    stored_bytes: int | None, limits: Limits | None = None, *, labels: bool = False,
) -> None:
    """Limits on a pyramid's levels from metadata only: count, type, shapes (coarser never larger), chunk size."""
    limits = limits or current_limits()
    if not shapes:
        raise InputRefused(f"{where}: the multiscale lists no levels")
    if len(shapes) > limits.max_levels:
        raise LimitExceeded(f"{where}: {len(shapes)} pyramid levels, over {limits.max_levels}; {limits.how_to_raise('max_levels')}")
    previous: tuple[int, ...] | None = None
    for index, (shape, dtype) in enumerate(zip(shapes, dtypes, strict=True)):
        shape = tuple(int(n) for n in shape)
        check_lazy_dtype(f"{where} level {index}", dtype, labels=labels)
        height, width = shape[-2], shape[-1]
        check_pixels(Path(str(where)), height, width, limits.max_slide_pixels, "max_slide_pixels", limits)
        if not labels and len(shape) >= 3 and int(np.prod(shape[:-2])) > limits.max_channels:
            raise InputRefused(f"{where} level {index}: {int(np.prod(shape[:-2]))} channels; at most {limits.max_channels}")
        if previous is not None and (height > previous[-2] or width > previous[-1] or shape[:-2] != previous[:-2]):
            raise InputRefused(
                f"{where}: level {index} has shape {shape} but level {index - 1} {previous}; each level must be "
                "no larger than the one before, with the same channels"
            )
        if chunks is not None:
            chunk_bytes = int(np.prod([int(c) for c in chunks[index]])) * np.dtype(dtype).itemsize
            if chunk_bytes > limits.max_chunk_bytes:
                raise LimitExceeded(
                    f"{where} level {index}: chunks of {chunk_bytes:,} bytes, over {limits.max_chunk_bytes:,}; "
                    f"{limits.how_to_raise('max_chunk_bytes')}"
                )
        previous = shape
    if stored_bytes is not None and not labels:
        declared = int(np.prod([int(n) for n in shapes[0]])) * np.dtype(dtypes[0]).itemsize
        if declared > RATIO_CHECK_BYTES and declared > limits.max_compression_ratio * max(1, stored_bytes):
            raise LimitExceeded(
                f"{where}: level 0 declares {tuple(shapes[0])} ({declared / 2**30:.1f} GiB) but the store holds "
                f"{stored_bytes:,} bytes (ratio over {limits.max_compression_ratio:,}); "
                f"{limits.how_to_raise('max_compression_ratio')}"
            )


# -- 4. decoding --------------------------------------------------------------------------------------


class CheckedArray(LazyArray):
    """An array-like whose reads turn decoder failures into one :class:`CorruptData` naming ``where`` and the chunk.

    ``on_error``: when given, called with the error instead of raising, and the read returns zeros
    (the napari reader uses it to notify once and keep the viewer usable). Other attributes
    (``shape``, ``dtype``, ``chunks``, ``store``…) are those of the wrapped array.
    """

    def __init__(self, array: Any, where: str, on_error: Callable[[CorruptData], None] | None = None) -> None:
        self._array = array
        self._where = where
        self._on_error = on_error
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(getattr(array, "chunks", None) or self.shape)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._array, name)

    def __repr__(self) -> str:
        return f"CheckedArray({self._where}, {self.shape}, {self.dtype})"

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self._array[key])
        except (UserError, IndexError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - every codec error means the same to the user
            error = CorruptData(f"{self._where}: {self._locate(key)} cannot be decoded ({first_line(exc)})")
        if self._on_error is None:
            raise error
        self._on_error(error)
        return np.zeros(np.broadcast_to(np.zeros((), self.dtype), self.shape)[key].shape, self.dtype)

    def _locate(self, key: Any) -> str:
        """The first chunk in ``key``'s region that fails to decode, as ``chunk (i, j, …)``."""
        starts, stops = _region(key, self.shape)
        grid = [range(a // c, max(a // c + 1, -(-b // c))) for a, b, c in zip(starts, stops, self.chunks, strict=True)]
        for count, index in enumerate(np.ndindex(*[len(r) for r in grid])):
            if count >= 256:
                break
            chunk = tuple(r[i] for r, i in zip(grid, index, strict=True))
            region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(chunk, self.chunks, self.shape, strict=True))
            try:
                np.asarray(self._array[region])
            except Exception:  # noqa: BLE001
                return f"chunk {chunk}"
        return f"region {tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))}"


def _region(key: Any, shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - len(key) + 1) + key[at + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    starts, stops = [], []
    for k, n in zip(key, shape, strict=False):
        if isinstance(k, slice):
            a, b, _ = k.indices(n)
        else:
            a = int(k) % n if n else 0
            b = a + 1
        starts.append(a)
        stops.append(max(a + 1, b))
    return starts, stops


def checked_levels(levels: Sequence[Any], where: str, on_error: Callable[[CorruptData], None] | None = None) -> list[Any]:
    """Every level wrapped in a :class:`CheckedArray` named ``<where> level <k>``."""
    return [level if isinstance(level, CheckedArray) else CheckedArray(level, f"{where} level {k}", on_error) for k, level in enumerate(levels)]


def verify_decodes(
    levels: Sequence[Any], where: str, budget_bytes: int = FULL_VERIFY_BYTES, *, first_level: int = 0
) -> None:
    """Decode every chunk of ``levels`` when they hold at most ``budget_bytes``, else each level's corner chunks.

    Raises :class:`CorruptData` naming the level and chunk of the first one that fails.
    """
    total = sum(int(np.prod(level.shape)) * np.dtype(level.dtype).itemsize for level in levels)
    for k, level in enumerate(levels):
        array = level if isinstance(level, CheckedArray) else CheckedArray(level, f"{where} level {first_level + k}")
        chunks = array.chunks
        grid = [max(1, -(-n // c)) for n, c in zip(array.shape, chunks, strict=True)]
        if total <= budget_bytes:
            indices: Iterator[tuple[int, ...]] | list[tuple[int, ...]] = np.ndindex(*grid)
        else:
            last = tuple(g - 1 for g in grid)
            indices = [tuple(0 for _ in grid), last]
        for index in indices:
            region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, array.shape, strict=True))
            array[region]


# -- safetensors --------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


def check_safetensors_header(path: str | os.PathLike[str], limits: Limits | None = None) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked before any tensor is read.

    Checks: a regular file; the 8-byte header length within ``max_header_bytes`` and the file; the
    header UTF-8 JSON object; every tensor entry a known dtype, a shape of non-negative ints and
    data offsets inside the data area whose length matches dtype × shape; ``__metadata__`` a
    string-to-string map. ``InputRefused``/``LimitExceeded`` naming the file otherwise.
    """
    limits = limits or current_limits()
    path = Path(path)
    size = check_path(path, folder_ok=False).st_size
    if size < 8:
        raise InputRefused(f"{path}: not a safetensors file ({size} bytes, shorter than its 8-byte header length)")
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > limits.max_header_bytes:
            raise LimitExceeded(
                f"{path}: the safetensors header declares {length:,} bytes, over {limits.max_header_bytes:,}; "
                f"{limits.how_to_raise('max_header_bytes')}"
            )
        if 8 + length > size:
            raise InputRefused(f"{path}: truncated safetensors file (header of {length:,} bytes, file of {size:,})")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputRefused(f"{path}: the safetensors header is not JSON ({first_line(exc)})") from None
    if not isinstance(header, dict):
        raise InputRefused(f"{path}: the safetensors header is not a JSON object")
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in entry.items()):
                raise InputRefused(f"{path}: safetensors __metadata__ must map strings to strings")
            continue
        _check_tensor_entry(path, name, entry, data_size)
    return header


def _check_tensor_entry(path: Path, name: str, entry: Any, data_size: int) -> None:
    if not isinstance(entry, dict):
        raise InputRefused(f"{path}: safetensors entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _SAFETENSORS_DTYPES:
        raise InputRefused(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise InputRefused(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list) or len(offsets) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
        or not 0 <= offsets[0] <= offsets[1] <= data_size
    ):
        raise InputRefused(f"{path}: tensor {name!r} has data offsets {offsets!r} outside the file's {data_size:,} data bytes")
    if offsets[1] - offsets[0] != math.prod(shape) * _SAFETENSORS_DTYPES[dtype]:
        raise InputRefused(f"{path}: tensor {name!r}: {offsets[1] - offsets[0]} bytes stored for shape {shape} of {dtype}")


# -- YAML ---------------------------------------------------------------------------------------------


def load_yaml(source: str | os.PathLike[str], limits: Limits | None = None, *, name: str | None = None) -> Any:
    """Safely parse YAML: ``source`` is a path (``os.PathLike``) or the YAML text itself (``str``).

    Only plain YAML types (SafeLoader: no Python tags). Refused with ``InputRefused``/``LimitExceeded``:
    a file that is not regular, text over ``max_yaml_bytes``, a document whose node count with every
    alias expanded exceeds ``max_yaml_nodes`` (alias bombs) or that refers to itself, nesting too
    deep to parse, invalid YAML. ``name`` names the source in messages (default: the path or "YAML text").
    """
    import yaml

    limits = limits or current_limits()
    if isinstance(source, os.PathLike):
        path = Path(source)
        where = name or str(path)
        size = check_path(path, folder_ok=False).st_size
        if size > limits.max_yaml_bytes:
            raise LimitExceeded(f"{where}: {size:,} bytes of YAML, over {limits.max_yaml_bytes:,}; {limits.how_to_raise('max_yaml_bytes')}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputRefused(f"{where}: not UTF-8 text ({exc.reason})") from None
    else:
        text, where = str(source), name or "YAML text"
        if len(text.encode("utf-8", "surrogatepass")) > limits.max_yaml_bytes:
            raise LimitExceeded(f"{where}: more than {limits.max_yaml_bytes:,} bytes of YAML; {limits.how_to_raise('max_yaml_bytes')}")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _count_nodes(node, limits.max_yaml_nodes, where, limits)
        return loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        raise InputRefused(f"{where}: YAML with a tag that is not allowed ({first_line(exc)})") from None
    except yaml.YAMLError as exc:
        raise InputRefused(f"{where}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise InputRefused(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def _count_nodes(root: Any, limit: int, where: str, limits: Limits) -> int:
    """The node count of ``root`` with aliases expanded (memoised per node); refuses cycles and bombs."""
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise InputRefused(f"{where}: YAML that contains itself (a recursive alias)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > limit:
            raise LimitExceeded(
                f"{where}: the YAML expands to more than {limit:,} nodes (aliases of aliases); "
                f"{limits.how_to_raise('max_yaml_nodes')}"
            )
        sizes[key] = total
        return total

    return size(root)


# -- masks and predictions ----------------------------------------------------------------------------


def mask_header(
    path: str | os.PathLike[str], expected: tuple[int, int] | None = None, limits: Limits | None = None
) -> tuple[int, int]:
    """``(height, width)`` of a mask or prediction file (TIFF, PNG, BMP, GIF, JPEG) from its header.

    Refused before decoding: a path that is not a regular file, more than ``max_image_pixels``, more
    than ``max_channels`` samples, or (``expected`` given) a size other than ``expected`` (a
    ``UserError`` naming both sizes).
    """
    limits = limits or current_limits()
    path = Path(path)
    head = read_head(path, 4)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        height, width, channels = _tiff_first_page(path)
        check_pixels(path, height, width, limits.max_image_pixels, "max_image_pixels", limits)
        if channels > limits.max_channels:
            raise InputRefused(f"{path}: {channels} samples per pixel; a mask has 1 (or grey/RGB/RGBA colours)")
    else:
        width, height, _ = pil_header(path, limits)
    if expected is not None and (height, width) != tuple(expected):
        raise UserError(
            f"{path}: the mask is {width}×{height} pixels but {expected[1]}×{expected[0]} are expected "
            "(checked from the header, nothing decoded)"
        )
    return height, width


def _tiff_first_page(path: Path) -> tuple[int, int, int]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            return int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel)
    except (tifffile.TiffFileError, struct.error, IndexError, KeyError, ValueError, OSError) as exc:
        raise InputRefused(f"{path}: not a readable TIFF mask ({first_line(exc)})") from None
