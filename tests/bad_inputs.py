"""A generated corpus of bad inputs for the read side (no stored blobs: every file is made here).

``CASES`` lists :class:`Case` objects; ``case.make(folder)`` writes the input into ``folder`` and
returns ``(path, context)`` where ``context`` holds what an entry point needs besides the path
(for ``evaluate``: the prediction and ground-truth folders). ``case.entries`` names the entry
points that accept this kind of input: ``reader`` (napari reader), ``convert``, ``predict``,
``evaluate``, ``config`` (training config loader), ``safetensors`` (checkpoint header check).

``python tests/bad_inputs.py FOLDER`` writes the whole corpus into FOLDER (one sub-folder a case).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_ENTRIES = ("reader", "convert")
PATH_KIND_ENTRIES = ("reader", "convert", "predict")  # refused by check_path before any model loads


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    make: Callable[[Path], tuple[Path, dict[str, Any]]]
    entries: tuple[str, ...]
    problem: str = ""  # a regex the message must match (empty: any one-line message)
    needs_non_root: bool = False
    env: dict[str, str] = field(default_factory=dict)


CASES: list[Case] = []


def case(name: str, category: str, entries: tuple[str, ...], problem: str = "", **kw: Any) -> Callable:
    def register(make: Callable[[Path], Any]) -> Callable[[Path], Any]:
        def wrapped(folder: Path) -> tuple[Path, dict[str, Any]]:
            made = make(folder)
            return made if isinstance(made, tuple) else (made, {})

        CASES.append(Case(name, category, wrapped, entries, problem, **kw))
        return make

    return register


# -- small builders ------------------------------------------------------------------------------------

_Y, _X = np.mgrid[0:64, 0:80]
RGB = np.dstack([_X * 3, _Y * 4, np.full_like(_Y, 90)]).astype(np.uint8)
NOISE = np.random.default_rng(12).integers(0, 256, (64, 80, 3), dtype=np.uint8)  # compresses badly: cuts hit pixel data


def png_bytes(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(array: np.ndarray, fmt: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def png_with_size(width: int, height: int, mode_bytes: bytes = b"\x08\x02\x00\x00\x00") -> bytes:
    """A PNG whose IHDR declares ``width``×``height`` (valid CRC) followed by a tiny IDAT and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">II", width, height) + mode_bytes
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is patched to declare ``width``×``height``."""
    data = bytearray(encoded(RGB, "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(encoded(RGB, "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def tiff_bytes(
    width: int,
    height: int,
    *,
    samples: int = 3,
    bits: int = 8,
    sample_format: int = 1,
    tile: int | None = 256,
    rows_per_strip: int = 64,
    piece: bytes | None = None,
    compression: int = 8,
) -> bytes:
    """A little-endian classic TIFF, tiled (``tile``) or in strips, every piece pointing at ``piece``.

    ``piece`` defaults to the zlib-compressed bytes of one all-zero tile/strip, so a file declaring
    100,000² pixels stays small (one shared piece and the offset tables).
    """
    if tile:
        across, down = -(-width // tile), -(-height // tile)
        count, piece_pixels = across * down, tile * tile
    else:
        count, piece_pixels = -(-height // rows_per_strip), rows_per_strip * width
    if piece is None:
        raw = b"\0" * (piece_pixels * samples * bits // 8)
        piece = zlib.compress(raw, 9) if compression == 8 else raw
    entries: list[tuple[int, int, list[int]]] = [
        (256, 4, [width]), (257, 4, [height]), (258, 3, [bits] * samples), (259, 3, [compression]),
        (262, 3, [2 if samples >= 3 else 1]), (277, 3, [samples]), (284, 3, [1]), (339, 3, [sample_format] * samples),
    ]
    if tile:
        entries += [(322, 3, [tile]), (323, 3, [tile])]
    else:
        entries += [(278, 4, [rows_per_strip])]
    entries.sort()
    offsets_tag, counts_tag = (324, 325) if tile else (273, 279)
    n = len(entries) + 2
    ifd_at = 8
    values_at = ifd_at + 2 + 12 * n + 4
    blob = bytearray()
    packed_entries = []
    piece_at_placeholder: list[int] = []

    def put(field_type: int, values: list[int]) -> bytes:
        code = {3: "H", 4: "I"}[field_type]
        payload = struct.pack(f"<{len(values)}{code}", *values)
        if len(payload) <= 4:
            return payload.ljust(4, b"\0")
        offset = values_at + len(blob)
        blob.extend(payload + (b"\0" if len(payload) % 2 else b""))
        return struct.pack("<I", offset)

    for tag, field_type, values in entries:
        packed_entries.append((tag, struct.pack("<HHI", tag, field_type, len(values)) + put(field_type, values)))
    counts_field = put(4, [len(piece)] * count)
    offsets_start = values_at + len(blob)
    blob.extend(b"\0" * 4 * count)  # offsets, filled below
    piece_at = values_at + len(blob)
    blob[offsets_start - values_at : offsets_start - values_at + 4 * count] = struct.pack(f"<{count}I", *([piece_at] * count))
    blob.extend(piece)
    offsets_field = struct.pack("<I", offsets_start) if count > 1 else struct.pack("<I", piece_at)
    counts_value = counts_field if count > 1 else struct.pack("<I", len(piece))
    packed_entries.append((offsets_tag, struct.pack("<HHI", offsets_tag, 4, count) + offsets_field))
    packed_entries.append((counts_tag, struct.pack("<HHI", counts_tag, 4, count) + counts_value))
    packed_entries.sort()
    del piece_at_placeholder
    ifd = struct.pack("<H", n) + b"".join(e for _, e in packed_entries) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_at) + ifd + bytes(blob)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tif(path: Path, array: np.ndarray, **kw: Any) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, **kw)
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def symlink(path: Path, target: str | Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


# -- fundus photographs --------------------------------------------------------------------------------

for ext in (".jpg", ".png", ".tif", ".bmp"):
    case(f"empty{ext}", "fundus", PATH_KIND_ENTRIES, r"empty")(lambda f, ext=ext: write(f / f"empty{ext}", b""))
    case(f"text_named{ext}", "fundus", IMAGE_ENTRIES, r"not a supported image|not a readable")(
        lambda f, ext=ext: write(f / f"notes{ext}", b"these are not pixels\n" * 4)
    )

for fmt, ext, magic in (("JPEG", ".jpg", b"\xff\xd8\xff"), ("PNG", ".png", b"\x89PNG\r\n\x1a\n"), ("BMP", ".bmp", b"BM")):
    for fraction in (0.1, 0.5, 0.9):
        case(f"truncated_{fmt.lower()}_{int(fraction * 100)}", "fundus", IMAGE_ENTRIES)(
            lambda f, fmt=fmt, ext=ext, fraction=fraction: write(
                f / f"cut{ext}", (lambda b: b[: max(len(magic) + 2, int(len(b) * fraction))])(encoded(NOISE, fmt))
            )
        )
    case(f"magic_then_garbage{ext}", "fundus", IMAGE_ENTRIES)(
        lambda f, ext=ext, magic=magic: write(f / f"garbage{ext}", magic + bytes(range(256)) * 4)
    )

for fraction in (0.05, 0.3, 0.8):
    case(f"truncated_tiff_{int(fraction * 100)}", "fundus", IMAGE_ENTRIES)(
        lambda f, fraction=fraction: write(f / "cut.tif", (lambda b: b[: int(len(b) * fraction)])(tiff_bytes(300, 300, compression=1)))
    )
case("tiff_magic_then_garbage", "fundus", IMAGE_ENTRIES)(lambda f: write(f / "garbage.tif", b"II*\0" + b"\xff" * 200))
case("tiff_ifd_past_end", "fundus", IMAGE_ENTRIES)(lambda f: write(f / "ifd.tif", b"II*\0" + struct.pack("<I", 10**6) + b"\0" * 32))

for width, height in ((100_000, 100_000), (70_000, 70_000), (1, 4_000_000_000 // 1)):
    case(f"png_declares_{width}x{height}", "fundus", IMAGE_ENTRIES, r"over the limit|not a readable|claims")(
        lambda f, w=width, h=height: write(f / "huge.png", png_with_size(w, min(h, 2**31 - 1)))
    )
case("jpeg_declares_65000x65000", "fundus", IMAGE_ENTRIES, r"over the limit|claims|cannot be decoded")(
    lambda f: write(f / "huge.jpg", jpeg_with_size(65000, 65000))
)
case("bmp_declares_100000x100000", "fundus", IMAGE_ENTRIES)(lambda f: write(f / "huge.bmp", bmp_with_size(100_000, 100_000)))
case("bmp_negative_width", "fundus", IMAGE_ENTRIES)(lambda f: write(f / "neg.bmp", bmp_with_size(-80, 64)))
case("png_zero_width", "fundus", IMAGE_ENTRIES)(lambda f: write(f / "zero.png", png_with_size(0, 64)))

for name, array in (
    ("float32_nan", np.full((64, 64), np.nan, np.float32)),
    ("float64_nan_rgb", np.dstack([np.full((64, 64), np.nan)] * 3)),
    ("float32_inf", np.full((64, 64), np.inf, np.float32)),
    ("float32_range_minus1_to_2", np.linspace(-1, 2, 64 * 64, dtype=np.float32).reshape(64, 64)),
    ("float16_nan", np.full((64, 64), np.nan, np.float16)),
    ("int16_negative", np.full((64, 64), -5, np.int16)),
    ("int32", np.arange(64 * 64, dtype=np.int32).reshape(64, 64)),
    ("int64", np.arange(64 * 64, dtype=np.int64).reshape(64, 64)),
    ("uint32", np.arange(64 * 64, dtype=np.uint32).reshape(64, 64)),
    ("complex64", np.zeros((64, 64), np.complex64)),
    ("five_channels", np.zeros((64, 64, 5), np.uint8)),
    ("six_channels_uint16", np.zeros((64, 64, 6), np.uint16)),
    ("stack_of_5", np.zeros((5, 64, 64), np.uint8)),
):
    extra = {"photometric": "minisblack", "planarconfig": "contig"} if name in ("five_channels", "six_channels_uint16") else {}
    case(f"tiff_{name}", "fundus", IMAGE_ENTRIES)(lambda f, name=name, array=array, extra=extra: tif(f / f"{name}.tif", array, **extra))

for name, array in (("tiny_1x1", np.zeros((1, 1, 3), np.uint8)), ("tiny_8x8", np.zeros((8, 8), np.uint8))):
    case(f"tiff_{name}", "fundus", ("reader",), r"at least 16")(lambda f, name=name, array=array: tif(f / f"{name}.tif", array))

case("tiff_declares_1e6_squared", "fundus", IMAGE_ENTRIES, r"claims|over the limit|lists")(
    lambda f: write(f / "huge.tif", tiff_bytes(1_000_000, 1_000_000, samples=1, tile=None, rows_per_strip=1_000_000, piece=b"\0" * 64))
)
case("tiff_16_samples_declared", "fundus", IMAGE_ENTRIES, r"samples per pixel|channels|unsupported|readable")(
    lambda f: write(f / "many.tif", tiff_bytes(64, 64, samples=16, tile=None, compression=1))
)

for ext in (".png", ".tif", ".jpg"):
    case(f"fifo{ext}", "fundus", PATH_KIND_ENTRIES, r"FIFO")(lambda f, ext=ext: fifo(f / f"pipe{ext}"))
case("fifo_no_extension", "fundus", PATH_KIND_ENTRIES, r"FIFO")(lambda f: fifo(f / "pipe"))
for ext in (".png", ".jpg", ".tif"):
    case(f"folder_named{ext}", "fundus", ("reader", "convert"), r"not a supported|folder")(
        lambda f, ext=ext: (f / f"folder{ext}").mkdir() or (f / f"folder{ext}")
    )
case("symlink_loop.png", "fundus", PATH_KIND_ENTRIES, r"loop")(lambda f: symlink(f / "loop.png", "loop.png"))
case("symlink_pair_loop.tif", "fundus", PATH_KIND_ENTRIES, r"loop|no such file")(
    lambda f: (symlink(f / "b.tif", "a.tif"), symlink(f / "a.tif", "b.tif"))[1]
)
case("symlink_to_dev_zero.tif", "fundus", PATH_KIND_ENTRIES, r"character device")(lambda f: symlink(f / "zero.tif", "/dev/zero"))
case("symlink_to_dev_zero.png", "fundus", PATH_KIND_ENTRIES, r"character device")(lambda f: symlink(f / "zero.png", "/dev/zero"))
case("symlink_to_dev_null.jpg", "fundus", PATH_KIND_ENTRIES, r"character device")(lambda f: symlink(f / "null.jpg", "/dev/null"))
case("dangling_symlink.jpg", "fundus", ("convert", "predict"), r"missing|no such")(lambda f: symlink(f / "gone.jpg", f / "absent.jpg"))


def _unreadable(folder: Path) -> Path:
    path = write(folder / "locked.png", encoded(RGB, "PNG"))
    path.chmod(0)
    return path


case("unreadable_permission.png", "fundus", PATH_KIND_ENTRIES, r"permission denied", needs_non_root=True)(_unreadable)


# -- slides (TIFF) -------------------------------------------------------------------------------------

case("tiled_tiff_declares_100000_squared", "slide", IMAGE_ENTRIES, r"ratio|over the limit|claims")(
    lambda f: write(f / "bomb.tif", tiff_bytes(100_000, 100_000, tile=1024))
)
case("strip_tiff_declares_60000_squared", "slide", IMAGE_ENTRIES, r"ratio|over the limit|claims")(
    lambda f: write(f / "strips.tif", tiff_bytes(60_000, 60_000, tile=None, rows_per_strip=16))
)
case("tiled_tiff_declares_300000_squared", "slide", IMAGE_ENTRIES, r"over the limit|claims|ratio")(
    lambda f: write(f / "wide.tif", tiff_bytes(300_000, 300_000, tile=4096))
)
case("strip_tiff_one_giant_strip", "slide", IMAGE_ENTRIES, r"pieces|GiB|ratio|over the limit")(
    lambda f: write(f / "onestrip.tif", tiff_bytes(40_000, 40_000, tile=None, rows_per_strip=40_000, piece=b"x" * 100))
)
case("tiled_tiff_corrupt_tiles", "slide", IMAGE_ENTRIES, r"cannot be decoded|corrupt|decod")(
    lambda f: write(f / "corrupt_tiles.tif", tiff_bytes(1024, 1024, tile=256, piece=b"\x78\x9c" + b"\xff" * 300))
)
case("tiled_tiff_float32_nan_pyramid", "slide", IMAGE_ENTRIES, r"NaN|unsupported pixel type")(
    lambda f: write(f / "nan_tiles.tif", tiff_bytes(512, 512, samples=1, bits=32, sample_format=3, tile=256,
                                                     piece=np.full(256 * 256, np.nan, np.float32).tobytes(), compression=1))
)


def _pyramid_tiff_corrupt(folder: Path, which: str) -> Path:
    import tifffile

    path = folder / f"pyramid_{which}.ome.tif"
    data = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(data, tile=(256, 256), subifds=1, compression="zlib", photometric="rgb")
        writer.write(data[::4, ::4], tile=(256, 256), subfiletype=1, compression="zlib", photometric="rgb")
    raw = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        level = tiff.series[0].levels[0 if which == "level0" else -1]
        page = level.keyframe
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    raw[offset : offset + count] = b"\x78\x9c" + b"\xff" * (count - 2)
    path.write_bytes(bytes(raw))
    return path


case("pyramid_tiff_corrupt_coarsest_tile", "slide", IMAGE_ENTRIES, r"level 1: chunk .* cannot be decoded")(
    lambda f: _pyramid_tiff_corrupt(f, "coarsest")
)
case("pyramid_tiff_corrupt_level0_tile", "slide", IMAGE_ENTRIES, r"level 0: chunk .* cannot be decoded")(
    lambda f: _pyramid_tiff_corrupt(f, "level0")
)


# -- OME-Zarr stores and workspaces --------------------------------------------------------------------


def _store(folder: Path, workspace: bool, levels: list[np.ndarray] | None = None, axes: str = "cyx") -> Path:
    """An NGFF 0.4 (zarr v2) store with ``levels`` written as given (dtype kept), multiscales metadata."""
    import zarr

    levels = levels if levels is not None else [np.full((3, 64, 64), 50, np.uint8), np.full((3, 32, 32), 50, np.uint8)]
    path = folder / ("image.m2mrf.zarr" if workspace else "image.ome.zarr")
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    for k, data in enumerate(levels):
        chunks = tuple(min(n, 32) if a in "yx" else n for a, n in zip(axes, data.shape))
        array = group.create_array(str(k), shape=data.shape, dtype=data.dtype, chunks=chunks,
                                   chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=0)
        array[...] = data
    axis_types = {"c": "channel", "y": "space", "x": "space"}
    attrs: dict[str, Any] = {
        "multiscales": [{
            "version": "0.4", "name": "image",
            "axes": [{"name": a, "type": axis_types[a]} for a in axes],
            "datasets": [{"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [1.0] * (len(axes) - 2) + [2.0**k, 2.0**k]}]}
                         for k in range(len(levels))],
        }]
    }
    if workspace:
        attrs["m2mrf"] = {"workspace": 1, "complete": True, "created": "2025-01-01T00:00:00+00:00"}
    group.attrs.update(attrs)
    return path


def _edit_attrs(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    attrs_file = path / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    change(attrs)
    attrs_file.write_text(json.dumps(attrs))
    return path


def _datasets(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return attrs["multiscales"][0]["datasets"]


ZARR_CASES: list[tuple[str, Callable[[Path, bool], Path], str]] = [
    ("float64_nan", lambda f, w: _store(f, w, [np.full((3, 64, 64), np.nan), np.full((3, 32, 32), np.nan)]), r"unsupported pixel type float64"),
    ("int64_negative", lambda f, w: _store(f, w, [np.full((3, 64, 64), -7, np.int64), np.full((3, 32, 32), -7, np.int64)]), r"unsupported pixel type int64"),
    ("bool", lambda f, w: _store(f, w, [np.ones((3, 64, 64), bool), np.ones((3, 32, 32), bool)]), r"unsupported pixel type bool"),
    ("float32", lambda f, w: _store(f, w, [np.zeros((3, 64, 64), np.float32)]), r"unsupported pixel type float32"),
    ("int8", lambda f, w: _store(f, w, [np.zeros((3, 64, 64), np.int8)]), r"unsupported pixel type int8"),
    ("five_channels", lambda f, w: _store(f, w, [np.zeros((5, 64, 64), np.uint8)]), r"5 channels"),
    ("level1_larger_than_level0", lambda f, w: _store(f, w, [np.zeros((3, 32, 32), np.uint8), np.zeros((3, 64, 64), np.uint8)]), r"no larger than"),
    ("levels_with_different_channels", lambda f, w: _store(f, w, [np.zeros((3, 64, 64), np.uint8), np.zeros((1, 32, 32), np.uint8)]), r"no larger than|same channels"),
    ("dataset_path_dotdot", lambda f, w: _edit_attrs(_store(f, w), lambda a: _datasets(a)[1].update(path="../outside")), r"leaves the store"),
    ("dataset_path_absolute", lambda f, w: _edit_attrs(_store(f, w), lambda a: _datasets(a)[1].update(path="/etc")), r"leaves the store"),
    ("dataset_path_empty", lambda f, w: _edit_attrs(_store(f, w), lambda a: _datasets(a)[0].update(path="")), r"leaves the store|empty"),
    ("multiscales_not_a_list", lambda f, w: _edit_attrs(_store(f, w), lambda a: a.update(multiscales={"x": 1})), r""),
    ("datasets_missing", lambda f, w: _edit_attrs(_store(f, w), lambda a: a["multiscales"][0].pop("datasets")), r""),
    ("axes_wrong", lambda f, w: _edit_attrs(_store(f, w), lambda a: a["multiscales"][0].update(axes=[{"name": "t"}])), r""),
    ("level_missing", lambda f, w: _edit_attrs(_store(f, w), lambda a: _datasets(a).append({"path": "7", "coordinateTransformations": [{"type": "scale", "scale": [1, 4, 4]}]})), r"missing"),
    ("attrs_not_json", lambda f, w: (lambda p: ((p / ".zattrs").write_text("{not json"), p)[1])(_store(f, w)), r"metadata|readable"),
    ("array_meta_not_json", lambda f, w: (lambda p: ((p / "0" / ".zarray").write_text("{"), p)[1])(_store(f, w)), r"metadata|readable"),
    ("symlinked_level_out_of_store", lambda f, w: _symlinked_level(f, w), r"out of the zarr store"),
    ("symlinked_chunk_out_of_store", lambda f, w: _symlinked_chunk(f, w), r"out of the zarr store"),
    ("symlink_loop_in_store", lambda f, w: (lambda p: (os.symlink("loop", p / "0" / "loop"), p)[1])(_store(f, w)), r"looping|broken"),
    ("fifo_in_store", lambda f, w: (lambda p: (os.mkfifo(p / "0" / "0" / "9"), p)[1])(_store(f, w)), r"FIFO"),
    ("corrupt_chunk_level0", lambda f, w: _corrupt_chunk(_store(f, w), "0"), r"level 0: chunk .* cannot be decoded"),
    ("corrupt_chunk_coarsest", lambda f, w: _corrupt_chunk(_store(f, w), "1"), r"level 1: chunk .* cannot be decoded"),
    ("declares_1e6_squared_no_chunks", lambda f, w: _declared_only(f, w, 1_000_000), r"over the limit|ratio"),
    ("declares_100000_squared_no_chunks", lambda f, w: _declared_only(f, w, 100_000), r"ratio"),
]


def _symlinked_level(folder: Path, workspace: bool) -> Path:
    import shutil

    path = _store(folder, workspace)
    outside = folder / "outside_level"
    shutil.move(str(path / "1"), str(outside))
    os.symlink(outside, path / "1")
    return path


def _symlinked_chunk(folder: Path, workspace: bool) -> Path:
    path = _store(folder, workspace)
    secret = write(folder / "secret.bin", b"outside the store")
    chunk = path / "0" / "0" / "0" / "0"
    chunk.unlink()
    os.symlink(secret, chunk)
    return path


def _corrupt_chunk(path: Path, level: str) -> Path:
    chunk = path / level / "0" / "0" / "0"
    chunk.write_bytes(b"\x28\xb5\x2f\xfd" + b"\xff" * 40)  # zstd magic, garbage frame
    return path


def _declared_only(folder: Path, workspace: bool, side: int) -> Path:
    import zarr

    path = _store(folder, workspace)
    group = zarr.open_group(str(path), mode="r+")
    for k, shape in enumerate(((3, side, side), (3, side // 2, side // 2))):
        group.create_array(str(k), shape=shape, dtype=np.uint8, chunks=(3, 1024, 1024), overwrite=True,
                           chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=0)
    return path


for name, make, problem in ZARR_CASES:
    for workspace in (False, True):
        category = "workspace" if workspace else "ome-zarr"
        case(f"{category}_{name}", category, IMAGE_ENTRIES, problem)(lambda f, make=make, w=workspace: make(f, w))


# -- masks and predictions (evaluate; dataset ground truth through the reader) -------------------------

GT_SIZE = (64, 80)  # (H, W)


def _evaluation(folder: Path, *, prediction: bytes | Callable[[Path], Path] | None = None,
                truth: bytes | Callable[[Path], Path] | None = None, pred_ext: str = ".png",
                truth_ext: str = ".png") -> tuple[Path, dict[str, Any]]:
    """A folder-layout dataset (images/eye.png, masks/EX/eye.png) and predictions PRED/eye_EX.<ext>."""
    root = folder / "dataset"
    write(root / "images" / "eye.png", encoded(RGB, "PNG"))
    mask = (np.arange(GT_SIZE[0] * GT_SIZE[1]).reshape(GT_SIZE) % 7 == 0).astype(np.uint8) * 255
    truth_path = root / "masks" / "EX" / f"eye{truth_ext}"
    if callable(truth):
        truth(truth_path)
    else:
        write(truth_path, truth if truth is not None else encoded(mask, "PNG"))
    pred_path = folder / "pred" / f"eye_EX{pred_ext}"
    if callable(prediction):
        prediction(pred_path)
    else:
        write(pred_path, prediction if prediction is not None else encoded(mask, "PNG"))
    return pred_path, {"pred": folder / "pred", "gt": root, "image": root / "images" / "eye.png"}


def _tif_at(array: np.ndarray, **kw: Any) -> Callable[[Path], Path]:
    return lambda path: tif(path, array, **kw)


PREDICTION_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("png_declares_100000_squared", {"prediction": png_with_size(100_000, 100_000, b"\x08\x00\x00\x00\x00")}, r"over the limit|are expected"),
    ("png_declares_12000_squared", {"prediction": png_with_size(12_000, 12_000, b"\x08\x00\x00\x00\x00")}, r"differs|are expected"),
    ("tiff_declares_1e6_squared", {"prediction": tiff_bytes(1_000_000, 1_000_000, samples=1, tile=None, rows_per_strip=1_000_000, piece=b"\0" * 64), "pred_ext": ".tif"}, r"over the limit|claims"),
    ("tiff_declares_12000_squared", {"prediction": tiff_bytes(12_000, 12_000, samples=1, tile=512), "pred_ext": ".tif"}, r"differs|are expected"),
    ("wrong_size_png", {"prediction": encoded(np.zeros((10, 10), np.uint8), "PNG")}, r"differs|are expected"),
    ("wrong_size_tiff", {"prediction": _tif_at(np.zeros((10, 10), np.uint8)), "pred_ext": ".tif"}, r"differs|are expected"),
    ("float_nan_tiff", {"prediction": _tif_at(np.full(GT_SIZE, np.nan, np.float32)), "pred_ext": ".tif"}, r"NaN"),
    ("float_out_of_range_tiff", {"prediction": _tif_at(np.full(GT_SIZE, 7.5, np.float32)), "pred_ext": ".tif"}, r""),
    ("complex_tiff", {"prediction": _tif_at(np.zeros(GT_SIZE, np.complex64)), "pred_ext": ".tif"}, r"unsupported|type"),
    ("five_channel_tiff", {"prediction": _tif_at(np.zeros((*GT_SIZE, 5), np.uint8), photometric="minisblack", planarconfig="contig"), "pred_ext": ".tif"}, r""),
    ("colour_palette_png", {"prediction": None}, r"single-channel|shape"),
    ("truncated_png", {"prediction": encoded(np.zeros(GT_SIZE, np.uint8), "PNG")[:40]}, r""),
    ("zero_byte_png", {"prediction": b""}, r"empty"),
    ("fifo_png", {"prediction": fifo}, r"FIFO|missing prediction"),
    ("folder_named_png", {"prediction": lambda p: (p.mkdir(parents=True), p)[1]}, r""),
    ("symlink_to_dev_zero_png", {"prediction": lambda p: symlink(p, "/dev/zero")}, r"character device|missing prediction"),
    ("truth_png_declares_100000_squared", {"truth": png_with_size(100_000, 100_000, b"\x08\x00\x00\x00\x00")}, r"over the limit"),
    ("truth_tiff_declares_1e6_squared", {"truth": tiff_bytes(1_000_000, 1_000_000, samples=1, tile=None, rows_per_strip=1_000_000, piece=b"\0" * 64), "truth_ext": ".tif"}, r"over the limit|claims"),
    ("truth_truncated_tiff", {"truth": b"II*\x00\x08\x00\x00\x00", "truth_ext": ".tif"}, r"readable"),
    ("truth_fifo", {"truth": fifo}, r"FIFO|hold no masks"),
]


def _palette_prediction(folder: Path) -> tuple[Path, dict[str, Any]]:
    from PIL import Image

    made = _evaluation(folder)
    image = Image.fromarray((np.arange(GT_SIZE[0] * GT_SIZE[1]).reshape(GT_SIZE) % 3).astype(np.uint8), mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    image.save(made[0])
    return made


for name, kwargs, problem in PREDICTION_CASES:
    # reader_image: the napari reader on the dataset's photograph, whose ground truth is this mask
    # (a FIFO mask is not a file: the photograph opens without ground truth, correctly)
    entries = ("evaluate", "reader_image") if name.startswith("truth") and name != "truth_fifo" else ("evaluate",)
    if name == "colour_palette_png":
        case(f"prediction_{name}", "prediction", entries, problem)(_palette_prediction)
        continue
    category = "mask" if name.startswith("truth") else "prediction"
    case(f"{category}_{name}", category, entries, problem)(lambda f, kwargs=kwargs: _evaluation(f, **kwargs))


# -- YAML training configs -----------------------------------------------------------------------------

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + k)}: &{chr(98 + k)} [{', '.join(['*' + chr(97 + k)] * 9)}]\n" for k in range(8)
)
YAML_CASES: list[tuple[str, str | bytes | Callable[[Path], Path], str]] = [
    ("alias_bomb", ALIAS_BOMB, r"expands to more than"),
    ("alias_bomb_in_section", "data:\n  root: &r [" + ", ".join(["x"] * 50) + "]\n" + "".join(f"  k{k}: &k{k} [" + ", ".join([f"*{'r' if k == 0 else 'k' + str(k - 1)}"] * 20) + "]\n" for k in range(6)), r"expands to more than"),
    ("recursive_alias", "a: &a [*a]\n", r"itself|recursive|not valid"),
    ("python_object_tag", "data: !!python/object/apply:os.system ['echo hi']\n", r"tag"),
    ("python_name_tag", "model: !!python/name:os.system\n", r"tag"),
    ("custom_tag", "model: !include other.yaml\n", r"tag"),
    ("huge", "run:\n  notes: '" + "x" * (1 << 20) + "'\n", r"over|more than"),
    ("deep_nesting", "[" * 5000 + "]" * 5000, r"nested|not valid|expected a mapping"),
    ("not_a_mapping_list", "- data\n- model\n", r"mapping"),
    ("not_a_mapping_scalar", "42\n", r"mapping"),
    ("wrong_types", "optim:\n  lr: [1, 2]\n", r""),
    ("unknown_section", "nonsense:\n  a: 1\n", r""),
    ("invalid_syntax", "data: [unclosed\n", r"not valid YAML"),
    ("not_utf8", b"data:\n  root: \xff\xfe\xfa\n", r"UTF-8|utf-8|decode|not valid"),
    ("fifo", fifo, r"FIFO|no such config"),
    ("folder", lambda p: (p.mkdir(), p)[1], r"folder|no such config"),
    ("symlink_to_dev_zero", lambda p: symlink(p, "/dev/zero"), r"character device|no such config"),
]

CONFIG_ONLY = ("not_a_mapping_list", "not_a_mapping_scalar", "wrong_types", "unknown_section", "deep_nesting")
for name, content, problem in YAML_CASES:
    def _make_yaml(folder: Path, content: Any = content, name: str = name) -> Path:
        path = folder / f"{name}.yaml"
        if callable(content):
            return content(path)
        return write(path, content if isinstance(content, bytes) else content.encode())

    # "yaml": the gate's load_yaml; "config": training.config.load_config (its own read of the text
    # decodes UTF-8 before load_yaml sees it: not_utf8 is load_yaml's alone, see the report)
    entries = ("config",) if name in CONFIG_ONLY else ("yaml",) if name == "not_utf8" else ("yaml", "config")
    case(f"yaml_{name}", "yaml", entries, problem)(_make_yaml)


# -- safetensors headers -------------------------------------------------------------------------------


def _safetensors(header: bytes | dict[str, Any], *, length: int | None = None, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


SAFETENSORS_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("length_beyond_file", lambda p: write(p, _safetensors({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, length=10_000)), r"truncated"),
    ("huge_length", lambda p: write(p, _safetensors(b"{}", length=1 << 60)), r"over"),
    ("not_json", lambda p: write(p, _safetensors(b"this is not json at all")), r"not JSON"),
    ("not_utf8", lambda p: write(p, _safetensors(b"\xff\xfe{}")), r"not JSON"),
    ("not_an_object", lambda p: write(p, _safetensors(b"[1, 2, 3]")), r"not a JSON object"),
    ("unknown_dtype", lambda p: write(p, _safetensors({"w": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}, data=b"\0" * 4)), r"dtype"),
    ("offsets_beyond_data", lambda p: write(p, _safetensors({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, data=b"\0" * 4)), r"outside"),
    ("size_mismatch", lambda p: write(p, _safetensors({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 4]}}, data=b"\0" * 4)), r"bytes stored"),
    ("negative_shape", lambda p: write(p, _safetensors({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, data=b"\0" * 4)), r"shape"),
    ("metadata_not_strings", lambda p: write(p, _safetensors({"__metadata__": {"a": 1}})), r"__metadata__"),
    ("shorter_than_8_bytes", lambda p: write(p, b"\x01\x02"), r"shorter"),
    ("empty", lambda p: write(p, b""), r"empty"),
    ("fifo", fifo, r"FIFO"),
    ("symlink_to_dev_zero", lambda p: symlink(p, "/dev/zero"), r"character device"),
]

for name, make, problem in SAFETENSORS_CASES:
    case(f"safetensors_{name}", "safetensors", ("safetensors",), problem)(
        lambda f, make=make, name=name: make(f / f"{name}.safetensors")
    )


def counts() -> dict[str, int]:
    """Cases per category."""
    found: dict[str, int] = {}
    for item in CASES:
        found[item.category] = found.get(item.category, 0) + 1
    return found


if __name__ == "__main__":
    target = Path(sys.argv[1])
    for item in CASES:
        (target / item.name).mkdir(parents=True, exist_ok=True)
        print(item.name, item.make(target / item.name)[0])
    print(counts(), len(CASES))
