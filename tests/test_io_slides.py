"""Slides: TIFF pyramids (OME-TIFF, SVS, generic), OME-Zarr 0.4/0.5 from another writer, laziness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_m2mrf.io.arrays import AxesView
from napari_m2mrf.io.formats import inspect_source
from napari_m2mrf.io.slides import ensure_pyramid, open_pyramid
from napari_m2mrf.napari_io import layer_data_for_path

RNG = np.random.default_rng(1)


def _write_ome_tiff(path: Path, image: np.ndarray, levels: int, pixel_size: float) -> None:
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        metadata = {"axes": "YXS", "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size}
        tif.write(image, tile=(64, 64), photometric="rgb", subifds=levels - 1, metadata=metadata, compression="zlib")
        for level in range(1, levels):
            tif.write(image[:: 2**level, :: 2**level], tile=(64, 64), photometric="rgb", subfiletype=1, compression="zlib")


def test_ome_tiff_pyramid_is_lazy_with_pixel_size(tmp_path: Path) -> None:
    image = RNG.integers(0, 255, (512, 384, 3), dtype=np.uint8)
    path = tmp_path / "slide.ome.tif"
    _write_ome_tiff(path, image, levels=3, pixel_size=0.5)
    assert inspect_source(path).kind == "slide"
    pyramid = open_pyramid(path)
    assert isinstance(pyramid.levels[0], AxesView)
    assert [level.shape for level in pyramid.levels] == [(3, 512, 384), (3, 256, 192), (3, 128, 96)]
    assert pyramid.downsamples == [1.0, 2.0, 4.0] and pyramid.pixel_size_um == pytest.approx(0.5)
    assert np.array_equal(pyramid.levels[0][:, 100:150, 30:90], image[100:150, 30:90].transpose(2, 0, 1))
    assert np.array_equal(pyramid.channel_last()[2].compute(), image[::4, ::4])


def test_real_aperio_svs(shared_data: Path) -> None:
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    info = inspect_source(path)
    assert info.kind == "slide" and info.whole_slide  # a scanner file, though small and single-level
    pyramid = open_pyramid(path)
    assert pyramid.shape == (3, 2967, 2220) and pyramid.pixel_size_um == pytest.approx(0.499)
    with tifffile.TiffFile(path) as tif:
        reference = tif.series[0].asarray()
    assert np.array_equal(pyramid.channel_last()[0][1000:1240, 500:740].compute(), reference[1000:1240, 500:740])
    layers = layer_data_for_path(path)
    assert layers[0][1]["scale"] == pytest.approx((0.499, 0.499)) and layers[0][2] == "image"


def test_real_generic_tiled_pyramid(shared_data: Path) -> None:
    path = shared_data / "slides" / "boxes_synthetic_4level.tiff"
    pyramid = open_pyramid(path)
    assert [level.shape[1:] for level in pyramid.levels] == [(250, 300), (125, 150), (62, 75), (31, 37)]
    assert pyramid.pixel_size_um is None  # 72 dpi screen resolution is not a physical pixel size
    data, meta, kind = layer_data_for_path(path)[0]
    assert meta["multiscale"] and len(data) == 4 and meta["scale"] == (1.0, 1.0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ome_zarr")
@pytest.mark.parametrize("version", ["FormatV04", "FormatV05"])
def test_ome_zarr_written_by_ome_zarr_py(tmp_path: Path, version: str) -> None:
    import ome_zarr.format
    from ome_zarr.writer import write_image

    fmt = getattr(ome_zarr.format, version)()
    image = RNG.integers(0, 255, (3, 256, 320), dtype=np.uint8)
    store = tmp_path / "image.ome.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=fmt.zarr_format)
    write_image(
        image, group, fmt=fmt, axes="cyx", scale_factors=[2, 4], scale={"c": 1.0, "y": 0.3, "x": 0.3},
        axes_units={"y": "micrometer", "x": "micrometer"},
    )
    pyramid = open_pyramid(store)
    assert pyramid.downsamples == pytest.approx([1.0, 2.0, 4.0])
    assert pyramid.pixel_size_um == pytest.approx(0.3)
    assert np.array_equal(np.asarray(pyramid.levels[0][...]), image)
    assert inspect_source(store).kind == "slide"


def test_opening_reads_no_level_0_pixels(tmp_path: Path) -> None:
    """Level-0 chunks replaced by garbage: opening and showing the overview still works; reading them fails."""
    from napari_m2mrf.io.workspace import Workspace

    workspace = Workspace.create(tmp_path / "lazy.m2mrf.zarr")
    workspace.write_image(zarr.array(RNG.integers(0, 255, (3, 1024, 1024), dtype=np.uint8)), chunk=256)
    for chunk in (workspace.path / "0").rglob("*"):
        if chunk.is_file() and chunk.name != "zarr.json":
            chunk.write_bytes(b"not zstd data")
    layers = layer_data_for_path(workspace.path)
    overview = layers[0][0][-1].compute()
    assert overview.shape == (256, 256, 3)
    with pytest.raises(Exception):
        layers[0][0][0][:10, :10].compute()


def test_32k_slide_opens_with_bounded_memory(tmp_path: Path) -> None:
    """A 32768² OME-Zarr (3 GB of pixels) opens, and its overview and one tile load, with < 500 MB extra RSS."""
    import psutil

    from napari_m2mrf.io import ngff

    store = tmp_path / "big.ome.zarr"
    root = zarr.open_group(str(store), mode="w")
    size = 32768
    for level in range(7):
        side = size >> level
        array = root.create_array(str(level), shape=(3, side, side), chunks=(3, 512, 512), dtype=np.uint8, fill_value=200)
        if level == 6:
            array[...] = RNG.integers(0, 255, (3, side, side), dtype=np.uint8)
    entry = ngff.multiscales_entry("big", "cyx", [2.0**k for k in range(7)], 0.25, "0.5")
    root.attrs.put(ngff.wrap_attributes({"multiscales": [entry]}, "0.5"))
    before = psutil.Process().memory_info().rss
    layers = layer_data_for_path(store)
    levels = layers[0][0]
    overview = levels[-1].compute()
    tile = levels[0][20000:20512, 9000:9512].compute()
    grown = (psutil.Process().memory_info().rss - before) / 2**20
    assert len(levels) == 7 and levels[0].shape == (size, size, 3)
    assert overview.shape == (512, 512, 3) and np.all(tile == 200)
    assert grown < 500, f"opening grew RSS by {grown:.0f} MiB"


def test_large_single_level_tiff_gets_a_resumable_pyramid(tmp_path: Path) -> None:
    from napari_m2mrf.io import pyramid_build
    from napari_m2mrf.jobs import Cancelled, CancelToken

    image = np.zeros((7000, 6000, 3), np.uint8)
    image[::7] = 255
    image[:, ::5, 1] = 120
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image, tile=(512, 512), photometric="rgb", compression="zlib")
    assert inspect_source(path).kind == "slide" and inspect_source(path).levels == 1
    calls: list[tuple[int, int]] = []
    cancel = CancelToken()

    def progress(done: int, total: int, message: str) -> None:
        calls.append((done, total))
        if len(calls) > 20:
            cancel.set()

    with pytest.raises(Cancelled):
        ensure_pyramid(path, progress=progress, cancel=cancel)
    workspace_dir = tmp_path / "flat.m2mrf.zarr"
    assert workspace_dir.is_dir()
    stopped_at = dict(zarr.open_group(str(workspace_dir)).attrs[pyramid_build.BUILD_KEY])["done"]
    assert 0 < stopped_at == calls[-1][0] < calls[-1][1]
    resumed: list[int] = []
    pyramid = ensure_pyramid(path, progress=lambda done, total, message: resumed.append(done))
    assert resumed[0] == stopped_at  # it continued, not restarted
    assert np.array_equal(np.asarray(pyramid.levels[0][:, 3000:3600, 100:700]), image[3000:3600, 100:700].transpose(2, 0, 1))
    expected_level1 = image.reshape(3500, 2, 3000, 2, 3).astype(np.uint16).sum(axis=(1, 3))
    assert np.array_equal(
        np.asarray(pyramid.levels[1][:, :200, :200]), ((expected_level1[:200, :200] + 2) // 4).astype(np.uint8).transpose(2, 0, 1)
    )


def test_jpeg2000_tiled_pyramid(tmp_path: Path) -> None:
    """JPEG 2000 tiles (as in many Aperio files) decode through imagecodecs, lazily, per tile."""
    y, x = np.mgrid[0:512, 0:768]
    image = np.dstack([x // 3, y // 2, (x + y) // 5]).astype(np.uint8)
    path = tmp_path / "j2k.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), photometric="rgb", compression="jpeg2000", subifds=1)
        tif.write(image[::2, ::2], tile=(256, 256), photometric="rgb", compression="jpeg2000", subfiletype=1)
    pyramid = open_pyramid(path)
    assert pyramid.downsamples == [1.0, 2.0]
    region = np.asarray(pyramid.levels[0][:, 256:512, 256:512]).transpose(1, 2, 0)
    assert np.abs(region.astype(int) - image[256:512, 256:512]).mean() < 2
