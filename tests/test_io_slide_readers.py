"""Slide formats through well-kept readers (OpenSlide, wsidicom, tifffile) and huge flat tiled images shown lazily.

Real files: the Aperio SVS and the generic tiled TIFF in ``../shared/data/slides`` (skipped when absent).
Generated here: Aperio-style SVS and Philips-style TIFF (tifffile, detected by OpenSlide from their
ImageDescription), a generic tiled TIFF, a DICOM WSI written by wsidicom (``tests/dicom_wsi.py``), a
sparse 100,000² tiled TIFF (pre-encoded tiles) and a one-strip 100,000² TIFF (sparse file).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_m2mrf.errors import LimitExceeded, UserError
from napari_m2mrf.io.formats import claims_support, inspect_source, sniff_format
from napari_m2mrf.io.slides import open_for_viewing, open_pyramid
from napari_m2mrf.napari_io import layer_data_for_path

RNG = np.random.default_rng(7)
PHILIPS_XML = (
    '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
    '<Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x1001" Element="0x0003" PMSVR="IDataObjectArray"><Array>'
    '<DataObject ObjectType="DPScannedImage">'
    '<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x101D" Element="0x1004" PMSVR="IString">WSI</Attribute>'
    '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" Element="0x8B01" PMSVR="IDataObjectArray">'
    '<Array><DataObject ObjectType="PixelDataRepresentation">'
    '<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">'
    "&quot;0.00025&quot; &quot;0.00025&quot;</Attribute>"
    '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_NUMBER" Group="0x101D" Element="0x1008" PMSVR="IUInt16">0</Attribute>'
    "</DataObject></Array></Attribute></DataObject></Array></Attribute></DataObject>"
)


def _image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    noise = RNG.integers(0, 40, (height, width), dtype=np.int64)
    return np.dstack([(x + noise) % 256, (y * 3) % 256, (x + y + noise) % 256]).astype(np.uint8)


def _write_aperio(path: Path, image: np.ndarray, compression: str) -> None:
    description = (
        f"Aperio Image Library v12.0.15\r\n{image.shape[1]}x{image.shape[0]} [0,0 {image.shape[1]}x{image.shape[0]}] "
        "(256x256) JPEG/RGB Q=70|AppMag = 20|MPP = 0.25"
    )
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), photometric="rgb", compression=compression, description=description, metadata=None)
        tif.write(image[::4, ::4], photometric="rgb", description="Aperio Image Library thumbnail", metadata=None)
        tif.write(image[::2, ::2], tile=(256, 256), photometric="rgb", compression=compression,
                  description="Aperio Image Library level 1", metadata=None)


def _reference(path: Path, level: int = 0) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[level].asarray() if level else tif.pages[0].asarray()


# -- real files ------------------------------------------------------------------------------------


def test_real_svs_through_openslide(shared_data: Path) -> None:
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.skip("the real SVS is not here")
    info = inspect_source(path)
    assert info.format == "openslide" and info.kind == "slide" and (info.height, info.width) == (2967, 2220)
    pyramid = open_pyramid(path)
    assert type(pyramid.levels[0]).__name__ == "OpenSlideLevel" and pyramid.levels[0].chunks == (3, 240, 240)
    assert pyramid.pixel_size_um == pytest.approx(0.499)
    reference = _reference(path)
    assert np.array_equal(pyramid.channel_last()[0][1000:1240, 500:740].compute(), reference[1000:1240, 500:740])
    assert np.array_equal(pyramid.levels[0][1, 7, 3:9], reference[7, 3:9, 1])
    data, meta, kind = layer_data_for_path(path)[0]
    assert kind == "image" and meta["scale"] == pytest.approx((0.499, 0.499)) and meta["rgb"]


def test_real_generic_tiled_tiff_stays_with_tifffile(shared_data: Path) -> None:
    path = shared_data / "slides" / "boxes_synthetic_4level.tiff"
    if not path.exists():
        pytest.skip("the real tiled TIFF is not here")
    assert sniff_format(path) == "tiff" and len(open_pyramid(path).levels) == 4


# -- generated vendor files ---------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zlib", "jpeg"])
def test_generated_aperio_svs(tmp_path: Path, compression: str) -> None:
    image = _image(600, 700)
    path = tmp_path / "scan.svs"
    _write_aperio(path, image, compression)
    assert sniff_format(path) == "openslide"
    pyramid = open_pyramid(path)
    assert [level.shape for level in pyramid.levels] == [(3, 600, 700), (3, 300, 350)]
    assert pyramid.downsamples == pytest.approx([1.0, 2.0]) and pyramid.pixel_size_um == pytest.approx(0.25)
    assert np.array_equal(np.asarray(pyramid.levels[0]).transpose(1, 2, 0), _reference(path))  # same decoded pixels
    with tifffile.TiffFile(path) as tif:
        level1 = tif.pages[2].asarray()
    assert np.array_equal(pyramid.levels[1][:, 40:170, 33:300].transpose(1, 2, 0), level1[40:170, 33:300])
    if compression == "zlib":
        assert np.array_equal(pyramid.levels[0][:, 100:357, 250:600].transpose(1, 2, 0), image[100:357, 250:600])


def test_generated_philips_tiff(tmp_path: Path) -> None:
    image = _image(520, 610)
    path = tmp_path / "scan.tiff"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), photometric="rgb", compression="jpeg", description=PHILIPS_XML,
                  software="Philips DP v1.0", metadata=None)
    assert sniff_format(path) == "openslide"
    pyramid = open_pyramid(path)
    assert pyramid.shape == (3, 520, 610) and pyramid.pixel_size_um == pytest.approx(0.25)
    with tifffile.TiffFile(path) as tif:
        reference = tif.pages[0].asarray()
    assert np.array_equal(np.asarray(pyramid.levels[0]).transpose(1, 2, 0), reference)


def test_generic_tiled_tiff_and_ome_tiff_stay_with_tifffile(tmp_path: Path) -> None:
    image = _image(700, 500)
    generic = tmp_path / "generic.tif"
    tifffile.imwrite(generic, image, tile=(128, 128), photometric="rgb", compression="zlib")
    ome = tmp_path / "slide.ome.tif"
    tifffile.imwrite(ome, image, tile=(128, 128), photometric="rgb", ome=True, metadata={"axes": "YXS", "PhysicalSizeX": 0.5})
    for path in (generic, ome):
        assert sniff_format(path) == "tiff"
        assert np.array_equal(np.asarray(open_pyramid(path).levels[0]).transpose(1, 2, 0), image)
    assert open_pyramid(ome).pixel_size_um == pytest.approx(0.5)


# -- DICOM --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicom_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    from dicom_wsi import write_dicom_wsi

    image = _image(600, 700)
    levels = [image, image[::2, ::2].copy()]
    folder = tmp_path_factory.mktemp("dicom") / "slide"
    write_dicom_wsi(folder, levels, tile=128, pixel_size_um=0.25)
    return folder, levels


def test_dicom_folder(dicom_slide: tuple[Path, list[np.ndarray]]) -> None:
    folder, levels = dicom_slide
    assert sniff_format(folder) == "dicom" and claims_support(folder)
    info = inspect_source(folder)
    assert info.kind == "slide" and (info.height, info.width, info.levels) == (600, 700, 2)
    pyramid = open_pyramid(folder)
    assert [level.shape for level in pyramid.levels] == [(3, 600, 700), (3, 300, 350)]
    assert pyramid.levels[0].chunks == (3, 128, 128) and pyramid.downsamples == pytest.approx([1.0, 2.0])
    assert pyramid.pixel_size_um == pytest.approx(0.25)
    for level, expected in zip(pyramid.levels, levels, strict=True):
        assert np.array_equal(np.asarray(level).transpose(1, 2, 0), expected)
    assert np.array_equal(pyramid.levels[0][:, 130:260, 250:517].transpose(1, 2, 0), levels[0][130:260, 250:517])
    data, meta, kind = layer_data_for_path(folder)[0]
    assert meta["multiscale"] and meta["scale"] == pytest.approx((0.25, 0.25)) and len(data) == 2


def test_dicom_single_file(dicom_slide: tuple[Path, list[np.ndarray]]) -> None:
    folder, levels = dicom_slide
    files = sorted(folder.glob("*.dcm"), key=lambda p: -p.stat().st_size)
    assert sniff_format(files[0]) == "dicom" and claims_support(files[0])
    pyramid = open_pyramid(files[0])
    assert pyramid.shape == (3, 600, 700) and np.array_equal(np.asarray(pyramid.levels[0]).transpose(1, 2, 0), levels[0])


def test_declared_sizes_are_checked_before_a_tile_is_read(
    tmp_path: Path, dicom_slide: tuple[Path, list[np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    svs = tmp_path / "scan.svs"
    _write_aperio(svs, _image(300, 300), "zlib")
    monkeypatch.setenv("NAPARI_M2MRF_MAX_SLIDE_PIXELS", "50000")
    for path in (svs, dicom_slide[0]):
        with pytest.raises(LimitExceeded, match="NAPARI_M2MRF_MAX_SLIDE_PIXELS"):
            inspect_source(path)


def test_convert_dicom_and_svs_to_ome_ngff(tmp_path: Path, dicom_slide: tuple[Path, list[np.ndarray]]) -> None:
    from napari_m2mrf.cli import main
    from napari_m2mrf.io import Workspace

    svs = tmp_path / "scan.svs"
    image = _image(600, 700)
    _write_aperio(svs, image, "zlib")
    for source, expected in ((svs, image), (dicom_slide[0], dicom_slide[1][0])):
        out = tmp_path / f"{source.stem}.ome.zarr"
        assert main(["convert", str(source), str(out), "--chunk", "256", "--quiet"]) == 0
        converted = Workspace.open(out).image
        assert converted.pixel_size_um == pytest.approx(0.25)
        assert np.array_equal(np.asarray(converted.levels[0][...]).transpose(1, 2, 0), expected)


def test_vendor_extensions_are_claimed(tmp_path: Path) -> None:
    for name in ("a.mrxs", "a.ndpi", "a.scn", "a.bif", "a.vms", "a.dcm"):
        assert claims_support(tmp_path / name)
    not_a_slide = tmp_path / "broken.mrxs"
    not_a_slide.write_bytes(b"not a slide at all")
    with pytest.raises(UserError):
        inspect_source(not_a_slide)


# -- huge flat images ---------------------------------------------------------------------------------

HUGE = 100_000
TILE = 256
SPECIAL_TILE = (3, 5)


@pytest.fixture(scope="module")
def huge_tiff(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 100,000² RGB tiled TIFF (27.9 GiB declared): every tile a flat grey, one tile random; 35 MB on disk."""
    import imagecodecs

    folder = tmp_path_factory.mktemp("huge")
    path = folder / "huge.tif"
    special = RNG.integers(0, 255, (TILE, TILE, 3), dtype=np.uint8)
    blank = imagecodecs.zlib_encode(np.full((TILE, TILE, 3), 240, np.uint8).tobytes())
    across = -(-HUGE // TILE)

    def tiles():  # noqa: ANN202
        for row in range(across):
            for col in range(across):
                yield imagecodecs.zlib_encode(special.tobytes()) if (row, col) == SPECIAL_TILE else blank

    tifffile.imwrite(path, tiles(), shape=(HUGE, HUGE, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                     compression="zlib", bigtiff=True)
    return path, special


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts tifffile tile decodes (``TiffPage.decode`` calls) while the test runs."""
    calls = [0]
    original = tifffile.TiffPage.__dict__["decode"]  # a cached_property giving the page's decode function

    def counting_decode(page):  # noqa: ANN001, ANN202
        decode = original.__get__(page, type(page))

        def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[0] += 1
            return decode(*args, **kwargs)

        return counted

    monkeypatch.setattr(tifffile.TiffPage, "decode", property(counting_decode))
    return calls


def test_huge_flat_tiled_tiff_shows_at_once_with_levels_on_demand(huge_tiff: tuple[Path, np.ndarray], count_decodes: list[int]) -> None:
    from napari_m2mrf.io.lazy_overview import MAX_TILES_PER_CHUNK, OVERVIEW_SIDE, OverviewLevel

    path, special = huge_tiff
    count_decodes[0] = 0
    started = time.perf_counter()
    layers = layer_data_for_path(path)  # the reader checks the coarsest level decodes: it is computed (and cached) now
    opened = time.perf_counter() - started
    data, meta, kind = layers[0]
    assert opened < 5, f"opening took {opened:.1f} s"
    assert sorted(p.name for p in path.parent.iterdir()) == ["huge.tif"]  # nothing built or written next to it
    assert meta["multiscale"] and data[0].shape == (HUGE, HUGE, 3) and max(data[-1].shape[:2]) <= OVERVIEW_SIDE
    assert meta["metadata"]["downsamples"][:3] == [1.0, 2.0, 4.0]
    chunks = len(data[-1].chunks[0]) * len(data[-1].chunks[1])
    assert 0 < count_decodes[0] <= chunks * MAX_TILES_PER_CHUNK < (HUGE // TILE) ** 2 // 20, count_decodes[0]
    count_decodes[0] = 0
    coarsest = data[-1].compute()  # shown again: from the in-memory cache
    assert count_decodes[0] == 0 and np.all(coarsest[-3:, -3:] == 240)
    # a fine overview level is an exact strided subsample (centre pixel of each 2×2 block)
    r, c = SPECIAL_TILE
    half = data[1][r * TILE // 2 : (r + 1) * TILE // 2, c * TILE // 2 : (c + 1) * TILE // 2].compute()
    assert np.array_equal(half, special[1::2, 1::2])
    assert np.array_equal(data[0][r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE].compute(), special)
    pyramid = open_for_viewing(path)
    assert isinstance(pyramid.levels[-1], OverviewLevel)


def test_huge_one_strip_tiff_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "strip.tif"  # a sparse file: 28 GiB declared, a few kB on disk
    tifffile.imwrite(path, shape=(HUGE, HUGE, 3), dtype=np.uint8, photometric="rgb", rowsperstrip=HUGE, bigtiff=True)
    with pytest.raises(UserError, match="cannot be read in parts"):
        layer_data_for_path(path)


@pytest.mark.gui
def test_viewer_opens_a_huge_flat_tiff_within_seconds(make_napari_viewer, huge_tiff: tuple[Path, np.ndarray]) -> None:
    pytest.importorskip("napari")
    path, _ = huge_tiff
    viewer = make_napari_viewer()
    started = time.perf_counter()
    layers = viewer.open(str(path), plugin="napari-m2mrf")
    elapsed = time.perf_counter() - started
    assert layers[0].multiscale and layers[0].data[0].shape == (HUGE, HUGE, 3)
    assert elapsed < 10, f"viewer.open took {elapsed:.1f} s"
