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
    known_bug: str = ""  # a traceback today, to be fixed where named (the test is a strict xfail until then)


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


# -- vendor slides through OpenSlide (generated by tests/slide_formats.py) -----------------------------


def _vendor_slide(name: str, damage: Callable[[Path], Any]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        from slide_formats import WRITERS

        path = WRITERS[name](folder).path
        damage(path)
        return path

    return make


def _damaged_tile(page: int, tile: int = 0) -> Callable[[Path], None]:
    from slide_formats import damage_tile

    return lambda path: damage_tile(path, page, tile)


def _missing_companion(name: str) -> Callable[[Path], None]:
    return lambda path: (path.with_suffix("") / name).unlink()


def _cut(fraction: float) -> Callable[[Path], None]:
    from slide_formats import truncate

    return lambda path: truncate(path, fraction)


for _case, _name, _damage, _problem in (
    ("svs_jp2k_corrupt_tile", "svs_jp2k_ycbcr", _damaged_tile(0, 1), r"level 0: chunk .* cannot be decoded"),
    ("svs_jp2k_truncated", "svs_jp2k_rgb", _cut(0.5), r"truncated"),
    ("scn_corrupt_tile", "scn", _damaged_tile(1), r"level 0: chunk .* cannot be decoded"),
    ("scn_truncated", "scn", _cut(0.5), r"truncated"),
    ("bif_corrupt_tile", "bif", _damaged_tile(2, 1), r"level 0: chunk .* cannot be decoded"),
    ("bif_truncated", "bif", _cut(0.6), r"truncated"),
    ("ndpi_corrupt_jpeg_header", "ndpi", _damaged_tile(0), r"OpenSlide cannot open|cannot be decoded"),
    ("ndpi_truncated", "ndpi", _cut(0.5), r"truncated"),
    ("mrxs_missing_data_file", "mrxs", _missing_companion("Data0000.dat"), r"OpenSlide cannot open the slide .*Data0000\.dat"),
    ("mrxs_truncated_index", "mrxs", lambda path: _cut(0.3)(path.with_suffix("") / "Index.dat"), r"OpenSlide cannot open"),
):
    case(_case, "slide", IMAGE_ENTRIES, _problem)(_vendor_slide(_name, _damage))


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


# -- dataset folders (train through a config pointing at them; evaluate on their masks) -----------------
#
# ``context["config"]``: a training config naming the dataset (a tiny model, one iteration, CPU) so that
# ``train`` must refuse at data loading, before any model is built or output written; ``context["pred"]``
# holds a correct prediction of the dataset's image (eye_EX.png, 64×80) for ``evaluate``.

TINY_RUN = {
    "model": {"name": "hrnetv2_w18s", "options": {}},
    "augment": {"resize": [64, 80], "crop": [], "scale_range": [1.0, 1.0], "rotate90": False, "photometric": False},
    "run": {"iterations": 1, "batch_size": 1, "device": "cpu", "amp": False, "checkpoint_every": 0, "threads": 1},
}
MASK = (np.arange(GT_SIZE[0] * GT_SIZE[1]).reshape(GT_SIZE) % 7 == 0).astype(np.uint8) * 255


def _layout_paths(root: Path, layout: str, stem: str = "eye") -> tuple[Path, Path]:
    """(image path, EX mask path) of image ``stem`` in ``layout``."""
    from napari_m2mrf.classes import IDRID_FOLDERS
    from napari_m2mrf.io.idrid_masks import IDRID_GROUNDTRUTH_FOLDER, IDRID_IMAGES_FOLDER, IDRID_SPLITS

    if layout == "idrid":
        split = IDRID_SPLITS[0]
        return (root / IDRID_IMAGES_FOLDER / split / f"{stem}.jpg",
                root / IDRID_GROUNDTRUTH_FOLDER / split / IDRID_FOLDERS["EX"] / f"{stem}_EX.tif")
    if layout == "ddr":
        return root / "lesion_segmentation" / "train" / "image" / f"{stem}.jpg", root / "lesion_segmentation" / "train" / "label" / "EX" / f"{stem}.tif"
    return root / "images" / f"{stem}.png", root / "masks" / "EX" / f"{stem}.png"


def _dataset(folder: Path, layout: str = "folder", *, image: bytes | Callable[[Path], Any] | None = None,
             mask: bytes | Callable[[Path], Any] | None = None, kind: str | None = None,
             data: dict[str, Any] | None = None, prediction: bool = True) -> tuple[Path, dict[str, Any]]:
    """A one-image dataset under ``folder/dataset`` (``image``/``mask``: bytes, a maker, or None for a good
    file; a maker may also delete or replace things), its training config and a prediction folder."""
    root = folder / "dataset"
    image_path, mask_path = _layout_paths(root, layout)
    if callable(image):
        image_path.parent.mkdir(parents=True, exist_ok=True)
        image(image_path)
    else:
        write(image_path, image if image is not None else encoded(RGB, "JPEG" if image_path.suffix == ".jpg" else "PNG"))
    if callable(mask):
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        mask(mask_path)
    elif mask_path.suffix == ".tif" and mask is None:
        tif(mask_path, MASK)
    else:
        write(mask_path, mask if mask is not None else encoded(MASK, "PNG"))
    config = {**TINY_RUN, "data": {"kind": kind or layout, "root": str(root), "classes": ["EX"], **(data or {})}}
    config_path = write(folder / "train.yaml", json.dumps(config).encode())  # JSON is YAML
    if prediction:
        write(folder / "pred" / "eye_EX.png", encoded(MASK, "PNG"))
    return config_path, {"config": config_path, "pred": folder / "pred", "gt": root}


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _replace_with_loop(target: Path) -> Path:
    """``target`` (a folder) becomes a symbolic link to itself."""
    _remove(target)
    os.symlink(target.name, target)
    return target


def _empty_dataset(folder: Path, layout: str) -> tuple[Path, dict[str, Any]]:
    path, context = _dataset(folder, layout)
    image, mask = _layout_paths(context["gt"], layout)
    image.unlink()
    mask.unlink()
    return path, context


DATASET_BOTH = ("train", "evaluate")
DATASET_CASES: list[tuple[str, Callable[[Path], tuple[Path, dict[str, Any]]], tuple[str, ...], str]] = [
    ("root_missing", lambda f: (lambda made: (_remove(made[1]["gt"]), made)[1])(_dataset(f)), DATASET_BOTH, r"no such"),
    ("root_is_a_file", lambda f: (lambda made: (_remove(made[1]["gt"]), write(made[1]["gt"], b"x"), made)[2])(_dataset(f)), DATASET_BOTH, r"no such|not a folder"),
    ("root_symlink_loop", lambda f: (lambda made: (_replace_with_loop(made[1]["gt"]), made)[1])(_dataset(f)), DATASET_BOTH, r"no such|loop"),
    ("images_folder_symlink_loop", lambda f: (lambda made: (_replace_with_loop(made[1]["gt"] / "images"), made)[1])(_dataset(f)), ("train",), r"no images"),
    ("masks_folder_symlink_loop", lambda f: (lambda made: (_replace_with_loop(made[1]["gt"] / "masks" / "EX"), made)[1])(_dataset(f)), DATASET_BOTH, r"no ground.truth|no EX"),
    ("mask_file_symlink_loop", lambda f: _dataset(f, mask=lambda p: os.symlink(p.name, p)), DATASET_BOTH, r"no ground.truth|hold no masks|loop"),
    ("mask_is_a_fifo", lambda f: _dataset(f, mask=fifo), DATASET_BOTH, r"no ground.truth|hold no masks|FIFO"),
    ("mask_symlink_to_dev_zero", lambda f: _dataset(f, mask=lambda p: os.symlink("/dev/zero", p)), DATASET_BOTH, r"no ground.truth|hold no masks|character device"),
    ("image_without_masks", lambda f: _dataset(f, mask=lambda p: None), ("train",), r"no ground.truth mask"),
    ("mask_size_mismatch", lambda f: _dataset(f, mask=encoded(MASK[:32, :40], "PNG")), DATASET_BOTH, r"32|40"),
    ("mask_size_transposed", lambda f: _dataset(f, mask=encoded(np.ascontiguousarray(MASK[:, :64].T[:64, :64]), "PNG")), DATASET_BOTH, r"64"),
    ("mask_empty_file", lambda f: _dataset(f, mask=b""), DATASET_BOTH, r"empty"),
    ("mask_text_file", lambda f: _dataset(f, mask=b"lesions here\n" * 8), DATASET_BOTH, r"not a|readable|unsupported"),
    ("mask_truncated_png", lambda f: _dataset(f, mask=encoded(NOISE[..., 0], "PNG")[:60]), DATASET_BOTH, r""),
    ("mask_declares_100000_squared", lambda f: _dataset(f, mask=png_with_size(100_000, 100_000, b"\x08\x00\x00\x00\x00")), DATASET_BOTH, r"over the limit|differs|but"),
    ("mask_float_nan_tiff", lambda f: _dataset(f, "idrid", mask=lambda p: tif(p, np.full(GT_SIZE, np.nan, np.float32))), DATASET_BOTH, r"NaN|type|float"),
    ("mask_complex_tiff", lambda f: _dataset(f, "ddr", mask=lambda p: tif(p, np.zeros(GT_SIZE, np.complex64))), DATASET_BOTH, r"type|complex|unsupported"),
    ("mask_five_channels_tiff", lambda f: _dataset(f, "ddr", mask=lambda p: tif(p, np.zeros((*GT_SIZE, 5), np.uint8), photometric="minisblack", planarconfig="contig")), DATASET_BOTH, r""),
    ("idrid_mask_size_mismatch", lambda f: _dataset(f, "idrid", mask=lambda p: tif(p, MASK[:32])), DATASET_BOTH, r"32"),
    ("ddr_mask_size_mismatch", lambda f: _dataset(f, "ddr", mask=lambda p: tif(p, MASK[:, :40])), DATASET_BOTH, r"40"),
    ("image_not_an_image", lambda f: _dataset(f, image=b"not a photograph\n" * 8), ("train",), r"not a supported image|not a readable|readable"),
    ("image_empty_file", lambda f: _dataset(f, image=b""), ("train",), r"empty"),
    ("image_declares_100000_squared", lambda f: _dataset(f, image=png_with_size(100_000, 100_000)), ("train",), r"over the limit|claims"),
    ("image_is_a_fifo", lambda f: _dataset(f, image=fifo), ("train",), r"no images|FIFO"),
    ("image_float_nan_tiff", lambda f: _dataset(f, image=lambda p: (p.unlink(missing_ok=True), tif(p.with_suffix(".tif"), np.full((*GT_SIZE, 3), np.nan, np.float32)))), ("train",), r"NaN"),
    ("empty_folder_layout", lambda f: _empty_dataset(f, "folder"), DATASET_BOTH, r"no images|no ground truth|hold no masks"),
    ("empty_idrid_layout", lambda f: _empty_dataset(f, "idrid"), DATASET_BOTH, r"no images|no ground truth|hold no masks"),
    ("empty_ddr_layout", lambda f: _empty_dataset(f, "ddr"), DATASET_BOTH, r"no images|no ground truth|hold no masks"),
    ("idrid_wrong_split", lambda f: _dataset(f, "idrid", data={"train_split": "valid"}), ("train",), r"no images in split"),
    ("folder_config_as_idrid", lambda f: _dataset(f, "folder", kind="idrid", data={"val_split": "test"}), ("train",), r"split"),
    ("val_root_empty_folder", lambda f: (lambda made: ((f / "empty_val").mkdir(), made)[1])(_dataset(f, data={"val_root": str(f / "empty_val")})), ("train",), r"no images"),
    ("pairs_labels_float", lambda f: _pairs(f, lambda p: np.save(p, np.zeros(GT_SIZE, np.float32)), ".npy"), ("train",), r"integer label image"),
    ("pairs_labels_wrong_size", lambda f: _pairs(f, lambda p: tif(p, np.zeros((10, 10), np.uint8)), ".tif"), ("train",), r"10"),
    ("pairs_labels_pickled_npy", lambda f: _pairs(f, lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), ".npy"), ("train",), r"readable|pickle"),
    ("pairs_image_missing", lambda f: _pairs(f, lambda p: tif(p, np.zeros(GT_SIZE, np.uint8)), ".tif", image=False), ("train",), r"no such file"),
    ("pairs_labels_fifo", lambda f: _pairs(f, fifo, ".png"), ("train",), r"no such file|FIFO"),
]


def _pairs(folder: Path, make_labels: Callable[[Path], Any], suffix: str, image: bool = True) -> tuple[Path, dict[str, Any]]:
    image_path = folder / "pairs" / "eye.png"
    if image:
        write(image_path, encoded(RGB, "PNG"))
    labels = folder / "pairs" / f"eye_labels{suffix}"
    labels.parent.mkdir(parents=True, exist_ok=True)
    make_labels(labels)
    config = {**TINY_RUN, "data": {"kind": "pairs", "pairs": [{"image": str(image_path), "labels": str(labels)}], "classes": ["EX"]}}
    config_path = write(folder / "train.yaml", json.dumps(config).encode())
    return config_path, {"config": config_path}


for name, make, entries, problem in DATASET_CASES:
    case(f"dataset_{name}", "dataset", entries, problem)(make)


# -- checkpoints (predict --model FILE, convert-checkpoint, the checkpoint loader) ---------------------


def _bundled_checkpoint() -> Path:
    from napari_m2mrf.catalog import bundled_models

    return next(path for name, path in bundled_models().items() if name.startswith("fundus"))


def _split_safetensors(raw: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def _edited_checkpoint(change: Callable[[dict[str, Any], dict[str, Any]], Any]) -> Callable[[Path], Path]:
    """The bundled fundus checkpoint with ``change(header, metadata)`` applied (tensor bytes kept)."""

    def make(path: Path) -> Path:
        header, data = _split_safetensors(_bundled_checkpoint().read_bytes())
        meta = json.loads(header["__metadata__"]["napari_m2mrf"])
        change(header, meta)
        if "__metadata__" in header:
            header["__metadata__"]["napari_m2mrf"] = json.dumps(meta)
        return write(path, _safetensors(header, data=data))

    return make


def _meta_set(key: str, value: Any, sub: str | None = None) -> Callable[[Path], Path]:
    return _edited_checkpoint(lambda h, m: (m[sub] if sub else m).__setitem__(key, value))


def _transposed_tensor(header: dict[str, Any], meta: dict[str, Any]) -> None:
    name = next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 4 and v["shape"][0] != v["shape"][1])
    shape = header[name]["shape"]
    header[name]["shape"] = [shape[1], shape[0], *shape[2:]]


def _overlapping_offsets(header: dict[str, Any], meta: dict[str, Any]) -> None:
    entries = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")
    (start, end), name = entries[1]
    header[name]["data_offsets"] = [start - 2, end - 2]


def _cut_file(fraction: float) -> Callable[[Path], Path]:
    return lambda p: write(p, (lambda raw: raw[: int(len(raw) * fraction)])(_bundled_checkpoint().read_bytes()))


def _flipped_weight_byte(path: Path) -> Path:
    raw = bytearray(_bundled_checkpoint().read_bytes())
    raw[-100] ^= 0xFF
    return write(path, bytes(raw))


CHECKPOINT_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("truncated_at_10_percent", _cut_file(0.1), r"truncated|not a safetensors|outside|shorter"),
    ("truncated_at_90_percent", _cut_file(0.9), r"truncated|not a safetensors|outside"),
    ("header_only", lambda p: write(p, (lambda raw: raw[: 8 + struct.unpack("<Q", raw[:8])[0]])(_bundled_checkpoint().read_bytes())), r"outside|truncated|not a safetensors"),
    ("overlapping_offsets", _edited_checkpoint(_overlapping_offsets), r"offset|overlap|not a safetensors|outside|bytes"),
    ("transposed_tensor_shape", _edited_checkpoint(_transposed_tensor), r"shape|do not fit|sha256"),
    ("weight_byte_flipped", _flipped_weight_byte, r"sha256"),
    ("huge_declared_header", lambda p: write(p, _safetensors(b"{}", length=1 << 40)), r"over|truncated"),
    ("no_napari_metadata", _edited_checkpoint(lambda h, m: h.pop("__metadata__")), r"metadata"),
    ("metadata_not_json", lambda p: _edited_checkpoint(lambda h, m: None)(p) and write(p, (lambda hd: _safetensors(hd[0] | {"__metadata__": {"napari_m2mrf": "{not json"}}, data=hd[1]))(_split_safetensors(p.read_bytes()))), r"JSON"),
    ("format_version_99", _meta_set("format_version", 99), r"newer"),
    ("format_version_string", _meta_set("format_version", "1"), r"not a napari-m2mrf"),
    ("arch_other_architecture", _meta_set("arch", "hrnetv2_w48"), r"do not fit|weights|does not take"),
    ("arch_unknown", _meta_set("arch", "resnet50"), r"resnet50|unknown"),
    ("arch_not_a_string", _meta_set("arch", ["m2mrf"]), r"arch|unknown"),
    ("model_not_a_mapping", _meta_set("model", "m2mrf"), r"model"),
    ("num_classes_zero", _meta_set("num_classes", 0, "model"), r"num_classes|classes"),
    ("num_classes_negative", _meta_set("num_classes", -4, "model"), r"num_classes|classes"),
    ("num_classes_string", _meta_set("num_classes", "four", "model"), r"num_classes|classes"),
    ("num_classes_huge", _meta_set("num_classes", 10**9, "model"), r"num_classes|classes"),
    ("num_classes_5_vs_4_classes", _meta_set("num_classes", 5, "model"), r"classes|fit"),
    ("unknown_model_option", _meta_set("wings", 2, "model"), r"wings|option|unexpected"),
    ("patch_size_zero", _meta_set("patch_size", 0, "model"), r"patch_size"),
    ("patch_size_negative", _meta_set("patch_size", -8, "model"), r"patch_size"),
    ("patch_size_huge", _meta_set("patch_size", 10**6, "model"), r"patch_size|fit"),
    ("patch_size_string", _meta_set("patch_size", "8", "model"), r"patch_size"),
    ("variant_unknown", _meta_set("variant", "Z", "model"), r"variant"),
    ("input_size_zero", _meta_set("input_size", [0, 0]), r"input_size"),
    ("input_size_negative", _meta_set("input_size", [-960, 1440]), r"input_size"),
    ("input_size_absurd", _meta_set("input_size", [10**9, 10**9]), r"input_size"),
    ("input_size_strings", _meta_set("input_size", ["960", "1440"]), r"input_size"),
    ("input_size_three_values", _meta_set("input_size", [960, 1440, 3]), r"input_size"),
    ("input_size_float", _meta_set("input_size", [960.5, 1440.25]), r"input_size"),
    ("normalization_std_zero", _meta_set("normalization", {"mean": [0, 0, 0], "std": [0, 0, 0]}), r"normali[sz]ation|std"),
    ("normalization_strings", _meta_set("normalization", {"mean": ["a", "b", "c"], "std": [1, 1, 1]}), r"normali[sz]ation|mean"),
    ("normalization_nan", _meta_set("normalization", {"mean": [float("nan")] * 3, "std": [1, 1, 1]}), r"normali[sz]ation|mean|NaN"),
    ("normalization_two_values", _meta_set("normalization", {"mean": [1, 2], "std": [1, 1]}), r"normali[sz]ation"),
    ("classes_not_a_list", _meta_set("classes", "EX,HE,SE,MA"), r"classes"),
    ("classes_missing_fields", _meta_set("classes", [{"label": 1}] * 4), r"class"),
    ("thresholds_out_of_range", _meta_set("thresholds", {"EX": 7, "HE": -1, "SE": "x", "MA": None}), r"threshold"),
    ("kind_deformed_on_fundus", _meta_set("kind", "deformed"), r"deformed|slide|metadata|lacks"),
    ("empty_file", lambda p: write(p, b""), r"empty"),
    ("text_file", lambda p: write(p, b"weights: none\n" * 20), r"over|truncated|not"),
]

LOADER_SKIPS = ("thresholds_out_of_range",)  # thresholds are the predictor's to check, not the loader's
for name, make, problem in CHECKPOINT_CASES:
    case(f"checkpoint_{name}", "checkpoint", ("predict_model",) if name in LOADER_SKIPS else ("predict_model", "loader"), problem)(
        lambda f, make=make, name=name: make(f / f"{name}.safetensors")
    )


MARKER = "code_ran.marker"


class _WritesMarker:
    """Unpickling this would create ``MARKER`` next to the file (the test proves it never appears)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


class _RunsSystem:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _pth(content: Callable[[Path], Any], *, legacy: bool = False) -> Callable[[Path], Path]:
    """A ``torch.save`` file of ``content(folder)`` (``legacy``: the old non-zip pickle format)."""

    def make(path: Path) -> Path:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(content(path.parent), path, _use_new_zipfile_serialization=not legacy)
        return path

    return make


def _raw_pickle(content: Callable[[Path], Any]) -> Callable[[Path], Path]:
    import pickle

    return lambda p: write(p, pickle.dumps(content(p.parent), protocol=2))


def _official_like(shape_change: bool) -> Callable[[Path], dict[str, Any]]:
    def content(folder: Path) -> dict[str, Any]:
        import torch

        seg = torch.zeros((4, 720, 1, 1) if not shape_change else (4, 3, 7, 7))
        return {"meta": {"config": "idrid"}, "state_dict": {"decode_head.conv_seg.weight": seg, "decode_head.conv_seg.bias": torch.zeros(4)}}

    return content


PTH_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("reduce_opens_marker", _pth(lambda f: {"state_dict": {"w": _WritesMarker(str(f / MARKER))}}), r"refused|Python object|could run code"),
    ("reduce_os_system", _pth(lambda f: {"state_dict": _RunsSystem(str(f / MARKER))}), r"refused|Python object|could run code|unreadable pickle"),
    ("legacy_pickle_reduce", _pth(lambda f: {"state_dict": {"w": _WritesMarker(str(f / MARKER))}}, legacy=True), r"refused|Python object|could run code|readable"),
    ("raw_pickle_reduce", _raw_pickle(lambda f: _WritesMarker(str(f / MARKER))), r"refused|Python object|could run code|readable|pickle"),
    ("plain_list", _pth(lambda f: [1, 2, 3]), r"expected a dict"),
    ("no_tensors", _pth(lambda f: {"state_dict": {"a": 1, "b": "x"}}), r"no tensors"),
    ("foreign_keys", _pth(lambda f: {"state_dict": {"backbone.fc.weight": __import__("torch").zeros(3, 3)}}), r"missing|unexpected|keys|classes|fit"),
    ("head_only_official_keys", _pth(_official_like(False)), r"missing|keys|fit|variant"),
    ("head_wrong_shape", _pth(_official_like(True)), r"missing|shape|keys|fit|variant"),
    ("truncated_zip", lambda p: (_pth(_official_like(False))(p), write(p, p.read_bytes()[:200]))[1], r"readable|pickle|checkpoint"),
    ("empty_file", lambda p: write(p, b""), r"empty|readable|checkpoint"),
    ("text_file", lambda p: write(p, b"state_dict: none\n" * 10), r"readable|pickle|checkpoint"),
    ("fifo", fifo, r"FIFO|no such"),
    ("symlink_to_dev_zero", lambda p: symlink(p, "/dev/zero"), r"character device|no such"),
    ("folder", lambda p: (p.mkdir(parents=True), p)[1], r"folder|no such"),
]

KNOWN_PTH_BUGS: dict[str, str] = {}
for name, make, problem in PTH_CASES:
    suffix = ".pt" if name.startswith("raw") or name.startswith("legacy") else ".pth"
    # predict --model reads any file as a safetensors checkpoint: a pickle is refused from its header
    case(f"pth_{name}", "checkpoint", ("convert_checkpoint", "predict_model"), problem + r"|not a safetensors",
         known_bug=KNOWN_PTH_BUGS.get(name, ""))(
        lambda f, make=make, name=name, suffix=suffix: make(f / f"{name}{suffix}")
    )


# -- command-line arguments (napari_m2mrf.cli.main in-process; exit code 2, one error line) ------------
#
# ``context["argv"]`` is the whole command line; ``{good_image}``, ``{folder}`` and the like are filled in
# by ``_cli``'s maker from files it writes first (a good photograph, a good dataset, a good config).


def _cli_inputs(folder: Path) -> dict[str, str]:
    image = write(folder / "eye.png", encoded(RGB, "PNG"))
    made = _dataset(folder / "data")
    write(folder / "not_a_folder", b"a file\n")
    write(folder / "file.zarr", b"a file named like a store\n")
    (folder / "empty").mkdir()
    store = folder / "image.ome.zarr"
    _store(folder, False)
    return {"image": str(image), "folder": str(folder), "config": str(made[0]), "pred": str(made[1]["pred"]),
            "gt": str(made[1]["gt"]), "file": str(folder / "not_a_folder"), "store": str(store),
            "out": str(folder / "out"), "model": "fundus_m2mrf_w18s"}


def _cli(argv: list[str], prepare: Callable[[Path, dict[str, str]], Any] | None = None) -> Callable[[Path], tuple[Path, dict[str, Any]]]:
    def make(folder: Path) -> tuple[Path, dict[str, Any]]:
        values = _cli_inputs(folder)
        if prepare is not None:
            prepare(folder, values)
        return Path(values["image"]), {"argv": [part.format(**values) for part in argv]}

    return make


PREDICT = ["predict", "{image}", "--model", "{model}", "--out", "{out}"]
CONVERT = ["convert", "{image}", "{out}.zarr", "--quiet"]
EVALUATE = ["evaluate", "{pred}", "{gt}", "--classes", "EX"]
TRAIN = ["train", "{config}", "--output-dir", "{out}"]
CKPT = ["convert-checkpoint", "{folder}/official.pth", "{out}.safetensors", "--arch", "m2mrf_hrnetv2_w18s"]
ODD = "ta\tb\nnew line ✓ -- $(touch x) ;'\""

CLI_CASES: list[tuple[str, list[str], str]] = [
    # top level
    ("no_arguments", [], r"required|COMMAND"),
    ("unknown_subcommand", ["frobnicate"], r"invalid choice"),
    ("unknown_option", ["--frobnicate", "predict"], r"unrecognized|required"),
    # predict
    ("predict_tile_zero", PREDICT + ["--mode", "tiles", "--tile", "0"], r"--tile"),
    ("predict_tile_negative", PREDICT + ["--mode", "tiles", "--tile", "-512"], r"--tile"),
    ("predict_tile_huge", PREDICT + ["--mode", "tiles", "--tile", str(10**9)], r"--tile"),
    ("predict_tile_not_a_number", PREDICT + ["--tile", "big"], r"--tile|invalid int"),
    ("predict_tile_float", PREDICT + ["--tile", "512.5"], r"--tile|invalid int"),
    ("predict_workers_negative", PREDICT + ["--workers", "-1"], r"--workers"),
    ("predict_workers_huge", PREDICT + ["--workers", str(10**6)], r"--workers"),
    ("predict_workers_and_scheduler", PREDICT + ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], r"not allowed with"),
    ("predict_device_unknown", PREDICT + ["--device", "quantum"], r"device"),
    ("predict_device_empty", PREDICT + ["--device", ""], r"device"),
    ("predict_device_cuda_99", PREDICT + ["--device", "cuda:99"], r"cuda|CUDA|device"),
    ("predict_device_cuda_word", PREDICT + ["--device", "cuda:first"], r"device"),
    ("predict_thresholds_words", PREDICT + ["--thresholds", "a,b,c,d"], r"--thresholds"),
    ("predict_thresholds_two", PREDICT + ["--thresholds", "0.5,0.5"], r"--thresholds"),
    ("predict_thresholds_zero_one", PREDICT + ["--thresholds", "0,1,0.5,0.5"], r"--thresholds"),
    ("predict_thresholds_nan", PREDICT + ["--thresholds", "nan,nan,nan,nan"], r"--thresholds"),
    ("predict_thresholds_empty", PREDICT + ["--thresholds", ""], r"--thresholds"),
    ("predict_mode_unknown", PREDICT + ["--mode", "fast"], r"invalid choice"),
    ("predict_model_missing_file", ["predict", "{image}", "--model", "{folder}/missing.safetensors", "--out", "{out}"], r"no such|missing"),
    ("predict_model_unknown_name", ["predict", "{image}", "--model", "gpt5", "--out", "{out}"], r"unknown model"),
    ("predict_model_empty", ["predict", "{image}", "--model", "", "--out", "{out}"], r"model"),
    ("predict_out_is_a_file", ["predict", "{image}", "--model", "{model}", "--out", "{file}"], r"not a folder|exists|file"),
    ("predict_out_under_a_file", ["predict", "{image}", "--model", "{model}", "--out", "{file}/sub"], r"not a folder|exists|file"),
    ("predict_input_missing", ["predict", "{folder}/absent.png", "--model", "{model}", "--out", "{out}"], r"no such"),
    ("predict_input_odd_name_missing", ["predict", "{folder}/" + ODD + ".png", "--model", "{model}", "--out", "{out}"], r"no such"),
    ("predict_no_images_in_folder", ["predict", "{folder}/empty", "--model", "{model}", "--out", "{out}"], r"no images|no such"),
    ("predict_no_inputs", ["predict", "--model", "{model}", "--out", "{out}"], r"required|INPUT"),
    ("predict_missing_out", ["predict", "{image}", "--model", "{model}"], r"required|--out"),
    # convert
    ("convert_chunk_zero", CONVERT + ["--chunk", "0"], r"--chunk"),
    ("convert_chunk_negative", CONVERT + ["--chunk", "-64"], r"--chunk"),
    ("convert_chunk_huge", CONVERT + ["--chunk", str(10**9)], r"--chunk"),
    ("convert_chunk_not_a_number", CONVERT + ["--chunk", "1e3"], r"--chunk|invalid int"),
    ("convert_ngff_unknown", CONVERT + ["--ngff", "0.3"], r"invalid choice"),
    ("convert_output_not_zarr", ["convert", "{image}", "{out}.tif", "--quiet"], r"\.zarr"),
    ("convert_output_is_input", ["convert", "{store}", "{store}", "--quiet"], r"cannot be the input|inside"),
    ("convert_output_inside_input", ["convert", "{store}", "{store}/nested.zarr", "--quiet"], r"inside|cannot be"),
    ("convert_output_is_a_file", ["convert", "{image}", "{folder}/file.zarr", "--quiet"], r"not a workspace|exists|file"),
    ("convert_input_missing", ["convert", "{folder}/absent.png", "{out}.zarr", "--quiet"], r"no such|missing"),
    ("convert_odd_name_missing", ["convert", "{folder}/" + ODD + ".tif", "{out}.zarr", "--quiet"], r"no such|missing"),
    # evaluate
    ("evaluate_classes_empty", EVALUATE[:-1] + [""], r"--classes"),
    ("evaluate_classes_unknown", EVALUATE[:-1] + ["EX,XX"], r"XX|--classes|class"),
    ("evaluate_classes_absent_in_gt", EVALUATE[:-1] + ["HE"], r"HE"),
    ("evaluate_format_unknown", EVALUATE + ["--format", "xml"], r"invalid choice"),
    ("evaluate_split_unknown", EVALUATE + ["--split", "holiday"], r"split|holiday"),
    ("evaluate_pred_missing", ["evaluate", "{folder}/absent", "{gt}", "--classes", "EX"], r"no such|absent"),
    ("evaluate_gt_is_a_file", ["evaluate", "{pred}", "{file}", "--classes", "EX"], r"no such|not a folder"),
    ("evaluate_pred_is_gt", ["evaluate", "{gt}", "{gt}", "--classes", "EX"], r"prediction|no .*predictions|missing"),
    # train
    ("train_config_missing", ["train", "{folder}/absent.yaml", "--output-dir", "{out}"], r"no such config"),
    ("train_config_is_a_folder", ["train", "{folder}", "--output-dir", "{out}"], r"no such config|folder"),
    ("train_set_without_equals", TRAIN + ["--set", "run.iterations"], r"--set"),
    ("train_set_unknown_key", TRAIN + ["--set", "run.wings=2"], r"--set"),
    ("train_set_negative_iterations", TRAIN + ["--set", "run.iterations=-1"], r"iterations"),
    ("train_set_bad_yaml", TRAIN + ["--set", "run.iterations=[1,"], r"--set"),
    ("train_set_device_unknown", TRAIN + ["--set", "run.device=quantum"], r"run.device"),
    ("train_set_huge_batch_string", TRAIN + ["--set", "run.batch_size=lots"], r"batch_size"),
    ("train_resume_missing", TRAIN + ["--resume", "{folder}/absent.pt"], r"no such resume"),
    ("train_output_dir_is_a_file", ["train", "{config}", "--output-dir", "{file}"], r"not a folder|exists|file"),
    ("train_output_dir_under_a_file", ["train", "{config}", "--output-dir", "{file}/run"], r"not a folder|exists|file"),
    # convert-checkpoint
    ("convert_checkpoint_missing", CKPT, r"no such"),
    ("convert_checkpoint_arch_unknown", ["convert-checkpoint", "{image}", "{out}.safetensors", "--arch", "resnet50"], r"resnet50|unknown"),
    ("convert_checkpoint_variant_unknown", CKPT + ["--variant", "E"], r"invalid choice"),
    ("convert_checkpoint_variant_on_vanilla", ["convert-checkpoint", "{image}", "{out}.safetensors", "--arch", "hrnetv2_w18s", "--variant", "A"], r"--variant"),
    ("convert_checkpoint_dataset_unknown", CKPT + ["--dataset", "kaggle"], r"invalid choice"),
    ("convert_checkpoint_no_arch", CKPT[:3], r"required|--arch"),
    # sample / models
    ("sample_kind_unknown", ["sample", "dogs", "{out}"], r"invalid choice"),
    ("sample_count_zero", ["sample", "fundus_lesions", "{out}", "--count", "0"], r"--count"),
    ("sample_count_negative", ["sample", "fundus_lesions", "{out}", "--count", "-3"], r"--count"),
    ("sample_count_huge", ["sample", "fundus_lesions", "{out}", "--count", str(10**9)], r"--count"),
    ("sample_scale_zero", ["sample", "fundus_lesions", "{out}", "--scale", "0"], r"scale"),
    ("sample_scale_nan", ["sample", "fundus_lesions", "{out}", "--scale", "nan"], r"scale"),
    ("sample_scale_huge", ["sample", "fundus_lesions", "{out}", "--scale", "1e6"], r"scale"),
    ("sample_slide_size_not_multiple", ["sample", "slide", "{out}", "--size", "1000"], r"multiple of 512"),
    ("sample_out_is_a_file", ["sample", "fundus_lesions", "{file}"], r"not a folder"),
    ("models_pattern_matches_none", ["models", "resnet"], r"no model name"),
    ("models_num_classes_zero", ["models", "w18s", "--params", "--num-classes", "0"], r"num.classes"),
]

KNOWN_CLI_BUGS: dict[str, str] = {}  # case name -> the bug it shows (an xfail, strict), while one is open
for name, argv, problem in CLI_CASES:
    case(f"cli_{name}", "cli", ("cli",), problem, known_bug=KNOWN_CLI_BUGS.get(name, ""))(_cli(argv))


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
