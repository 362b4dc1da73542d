"""Bad input: every broken file gives one clear message naming it and the problem, quickly; nothing is written.

The corpus is generated here: truncated JPEG/TIFF, empty files, wrong extensions, corrupt zarr
metadata, missing chunks, a 1×1 image, a TIFF header claiming 10⁶×10⁶ pixels, NaN pixels, an
unsupported pixel type, unreadable permissions, and dataset folders with bad masks.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_m2mrf.cli import main
from napari_m2mrf.errors import UserError
from napari_m2mrf.napari_io import get_reader, layer_data_for_path, read_paths

_Y, _X = np.mgrid[0:256, 0:320]
SMOOTH = np.dstack([_X // 2, _Y, np.full_like(_Y, 90)]).astype(np.uint8)


def truncated_jpeg(folder: Path) -> Path:
    path = folder / "truncated.jpg"
    Image.fromarray(SMOOTH).save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def truncated_tiff(folder: Path) -> Path:
    path = folder / "truncated.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 7, np.uint8), tile=(128, 128), photometric="rgb", compression="zlib")
    path.write_bytes(path.read_bytes()[:400])
    return path


def empty_jpeg(folder: Path) -> Path:
    path = folder / "empty.jpg"
    path.write_bytes(b"")
    return path


def text_named_tiff(folder: Path) -> Path:
    path = folder / "notes.tif"
    path.write_text("these are not pixels\n")
    return path


def corrupt_zarr_metadata(folder: Path) -> Path:
    path = folder / "corrupt.ome.zarr"
    zarr.open_group(str(path), mode="w").create_array("0", shape=(3, 64, 64), dtype=np.uint8)
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {"ome": ')
    return path


def missing_chunks(folder: Path) -> Path:
    from napari_m2mrf.io import Workspace

    workspace = Workspace.create(folder / "holes.m2mrf.zarr")
    workspace.write_image(np.full((3, 512, 512), 9, np.uint8), chunk=128)
    next(p for p in sorted((workspace.path / "0").rglob("*")) if p.is_file() and p.name != "zarr.json").unlink()
    return workspace.path


def one_pixel(folder: Path) -> Path:
    path = folder / "dot.png"
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(path)
    return path


def huge_header(folder: Path) -> Path:
    """A valid small uncompressed TIFF whose width and length tags are patched to 1,000,000."""
    path = folder / "huge.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        offsets = [tags["ImageWidth"].offset, tags["ImageLength"].offset]
    for entry in offsets:  # each IFD entry: tag, type, count, value
        data[entry + 2 : entry + 12] = struct.pack("<HII", 4, 1, 1_000_000)
    path.write_bytes(bytes(data))
    return path


def nan_float(folder: Path) -> Path:
    path = folder / "nan.tif"
    image = np.full((64, 64), np.nan, np.float32)
    tifffile.imwrite(path, image)
    return path


def int32_pixels(folder: Path) -> Path:
    path = folder / "int32.tif"
    tifffile.imwrite(path, np.arange(64 * 64, dtype=np.int32).reshape(64, 64))
    return path


def bad_size_mask(folder: Path) -> Path:
    image = folder / "dataset" / "images" / "eye.png"
    image.parent.mkdir(parents=True)
    Image.fromarray(SMOOTH).save(image)
    (folder / "dataset" / "masks" / "EX").mkdir(parents=True)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "dataset" / "masks" / "EX" / "eye.png")
    return image


def broken_mask(folder: Path) -> Path:
    image = folder / "ddr" / "valid" / "image" / "007.jpg"
    image.parent.mkdir(parents=True)
    Image.fromarray(SMOOTH).save(image)
    (folder / "ddr" / "valid" / "label" / "HE").mkdir(parents=True)
    (folder / "ddr" / "valid" / "label" / "HE" / "007.tif").write_bytes(b"II*\x00\x08\x00\x00\x00")
    return image


CORPUS: list[tuple[Callable[[Path], Path], str]] = [
    (truncated_jpeg, r"cannot be decoded .*truncated"),
    (truncated_tiff, r"truncated"),
    (empty_jpeg, r"the file is empty \(0 bytes\)"),
    (text_named_tiff, r"not a supported image"),
    (corrupt_zarr_metadata, r"corrupt zarr metadata"),
    (missing_chunks, r"1 of 16 chunks are missing"),
    (one_pixel, r"1×1 pixels; at least 16×16"),
    (huge_header, r"claims 1000000×1000000 pixels"),
    (nan_float, r"NaN"),
    (int32_pixels, r"unsupported pixel type int32"),
    (bad_size_mask, r"the mask is 10×10 pixels but the image eye\.png is 320×256"),
    (broken_mask, r"007\.tif: not a readable TIFF mask"),
]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("make", "problem"), CORPUS, ids=[make.__name__ for make, _ in CORPUS])
def test_reader_names_the_file_and_the_problem(tmp_path: Path, make: Callable[[Path], Path], problem: str) -> None:
    path = make(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(UserError, match=problem) as raised:
        layer_data_for_path(path)
    message = str(raised.value)
    assert "\n" not in message and (str(path) in message or path.name in message or "mask" in message)
    assert _files(tmp_path) == before  # nothing written (no workspace, no temporary files)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("make", "problem"), CORPUS[:6], ids=[make.__name__ for make, _ in CORPUS[:6]])
def test_convert_fails_in_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], problem: str
) -> None:
    path = make(tmp_path)
    out = tmp_path / "out.zarr"
    assert main(["convert", str(path), str(out), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("napari-m2mrf: error: ") and "\n" not in error and "Traceback" not in error
    assert not out.exists()


def test_napari_reader_notifies_and_returns_no_layers(tmp_path: Path) -> None:
    from napari.utils.notifications import notification_manager

    path = truncated_tiff(tmp_path)
    reader = get_reader(str(path))
    assert reader is not None  # the plugin claims a .tif, so a broken one is reported, not passed on
    received = []
    notification_manager.notification_ready.connect(received.append)
    try:
        assert reader(str(path)) == [(None,)]
    finally:
        notification_manager.notification_ready.disconnect(received.append)
    assert any(str(path) in str(n.message) and "truncated" in str(n.message) for n in received)


def test_files_the_plugin_does_not_read_are_passed_on(tmp_path: Path) -> None:
    text = tmp_path / "table.csv"
    text.write_text("a,b\n1,2\n")
    folder = tmp_path / "plain_folder"
    folder.mkdir()
    assert get_reader(str(text)) is None
    assert get_reader(str(folder)) is None
    assert get_reader(str(tmp_path / "absent.tif")) is None
    assert read_paths  # the reader function itself is importable without napari running


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not restrict root")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    Image.fromarray(SMOOTH).save(path)
    path.chmod(0)
    try:
        with pytest.raises(UserError, match="permission denied"):
            layer_data_for_path(path)
    finally:
        path.chmod(0o644)
