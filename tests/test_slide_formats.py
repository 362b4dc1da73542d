"""Every vendor slide format OpenSlide reads, opened through the plugin's reader path (``tests/slide_formats.py``).

Each generated slide goes through what ``viewer.open`` calls (``napari_io.get_reader`` and the reader
it returns) and through :func:`~napari_m2mrf.io.slides.open_pyramid` (what the Segment widget and
the CLI use): the format is told from the content, the level count and shapes are OpenSlide's, the
pixels of every level match what was written (within the codec's tolerance), outside a Leica image
the background shows, and the level-0 pixel size reaches the layer's scale. Corrupt and truncated
variants live in ``tests/bad_inputs.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from slide_formats import WRITERS, GeneratedSlide  # noqa: E402

from napari_m2mrf.io.formats import inspect_source, sniff_format  # noqa: E402
from napari_m2mrf.io.openslide_reader import detect_vendor  # noqa: E402
from napari_m2mrf.io.slides import open_pyramid  # noqa: E402

EDGE = 2  # lossy codecs smear the last rows and columns into the tile padding (chroma upsampling)


@pytest.fixture(scope="module", params=sorted(WRITERS))
def slide(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> GeneratedSlide:
    return WRITERS[request.param](tmp_path_factory.mktemp(request.param))


def _read_through_viewer_reader(path: Path) -> list:
    from napari_m2mrf import napari_io

    reader = napari_io.get_reader(str(path))
    assert reader is not None, f"{path}: the plugin does not claim it"
    return reader(str(path))


def _layer_units(data: object, meta: dict, kind: str) -> tuple[str, ...]:
    """The units of the napari layer the viewer makes from a reader's layer data (no viewer, no Qt)."""
    pytest.importorskip("napari")
    from napari.layers import Layer

    return tuple(str(unit) for unit in Layer.create(data, meta, kind).units)


def _check_pixels(name: str, got: np.ndarray, expected: np.ndarray, tolerance: float) -> None:
    difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert difference.mean() <= tolerance, f"{name}: mean difference {difference.mean():.2f}"
    interior = difference[: -EDGE or None, : -EDGE or None] if tolerance else difference
    limit = 12 if tolerance else 0
    assert interior.max() <= limit, f"{name}: largest difference {interior.max()} away from the edges"


def test_format_is_told_from_the_content(slide: GeneratedSlide) -> None:
    assert sniff_format(slide.path) == "openslide" and detect_vendor(slide.path) == slide.vendor
    info = inspect_source(slide.path)
    assert info.kind == "slide" and (info.height, info.width) == slide.level_shapes[0]
    assert info.levels == len(slide.level_shapes)


def test_viewer_reader_gives_levels_pixels_and_scale(slide: GeneratedSlide) -> None:
    layers = _read_through_viewer_reader(slide.path)
    assert len(layers) == 1
    data, meta, kind = layers[0]
    assert kind == "image" and meta["rgb"] and meta["multiscale"]
    assert [tuple(level.shape) for level in data] == [(*shape, 3) for shape in slide.level_shapes]
    assert meta["scale"] == pytest.approx((slide.pixel_size_um,) * 2, rel=1e-6)
    assert meta["metadata"]["pixel_size_um"] == pytest.approx(slide.pixel_size_um, rel=1e-6)
    assert _layer_units(data, meta, kind) == ("micrometer", "micrometer")  # what napari's scale bar shows
    for k, written in enumerate(slide.levels):
        (y, x), (h, w) = slide.offset(k), written.shape[:2]
        got = np.asarray(data[k][y : y + h, x : x + w])
        _check_pixels(f"{slide.path.name} level {k}", got, written, slide.tolerance)


def test_pyramid_reads_parts_and_background(slide: GeneratedSlide) -> None:
    pyramid = open_pyramid(slide.path)
    assert pyramid.pixel_size_um == pytest.approx(slide.pixel_size_um, rel=1e-6)
    assert len(pyramid.levels) == len(slide.level_shapes)
    for level, shape in zip(pyramid.levels, slide.level_shapes, strict=True):
        assert level.shape == (3, *shape)
    ratios = [shape[1] / pyramid.levels[0].shape[2] for shape in [level.shape[1:] for level in pyramid.levels]]
    assert pyramid.downsamples == pytest.approx([1 / r for r in ratios], rel=0.01)
    (y, x), written = slide.offset(0), slide.levels[0]
    part = pyramid.levels[0][:, y + 37 : y + 301, x + 101 : x + 389].transpose(1, 2, 0)  # crosses tile borders
    _check_pixels(f"{slide.path.name} level 0 part", part, written[37:301, 101:389], slide.tolerance)
    if (y, x) != (0, 0):  # outside the scanned image: the slide's background (white)
        assert np.all(pyramid.levels[0][:, : y - 1, :] == 255) and np.all(pyramid.levels[0][:, :, : x - 1] == 255)


@pytest.mark.parametrize("name, page", [("scn", 1), ("svs_jp2k_ycbcr", 0)])
def test_a_corrupt_tile_fails_alone(name: str, page: int, tmp_path: Path) -> None:
    """OpenSlide's slide object stays in an error state after a failed read; the reader reopens it."""
    from slide_formats import damage_tile

    from napari_m2mrf.errors import CorruptData
    from napari_m2mrf.io.input_gate import checked_levels

    slide = WRITERS[name](tmp_path)
    damage_tile(slide.path, page, tile=1)  # level 0, first row, second tile
    pyramid = open_pyramid(slide.path)
    (level,) = checked_levels(pyramid.levels[:1], str(slide.path), None)
    (y, x), tile = slide.offset(0), 256
    with pytest.raises(CorruptData, match="cannot be decoded"):
        level[:, y : y + tile, x + tile : x + 2 * tile]
    good = level[:, y + tile : y + 2 * tile, x : x + tile].transpose(1, 2, 0)  # read after the failure
    _check_pixels(f"{name} tile after the bad one", good, slide.levels[0][tile : 2 * tile, :tile], slide.tolerance)


def test_ome_tiff_pyramid_pixel_size_in_nanometres_reaches_the_layer_scale(tmp_path: Path) -> None:
    """tifffile's formats: an OME-TIFF pyramid (sub-IFDs) whose pixel size is given in nm."""
    import tifffile

    from slide_formats import halve, pattern

    levels = [pattern(600, 700)]
    levels += [halve(levels[-1]), halve(halve(levels[-1]))]
    path = tmp_path / "slide.ome.tif"
    metadata = {"axes": "YXS", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 500, "PhysicalSizeYUnit": "nm"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(levels[0], tile=(256, 256), photometric="rgb", compression="zlib", subifds=2, metadata=metadata)
        for level in levels[1:]:
            tif.write(level, tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
    assert sniff_format(path) == "tiff"
    [(data, meta, kind)] = _read_through_viewer_reader(path)
    assert meta["scale"] == pytest.approx((0.5, 0.5)) and [level.shape[:2] for level in data] == [lv.shape[:2] for lv in levels]
    assert _layer_units(data, meta, kind) == ("micrometer", "micrometer")
    for got, written in zip(data, levels, strict=True):
        assert np.array_equal(np.asarray(got), written)


@pytest.mark.gui
def test_viewer_opens_a_mirax_slide_with_a_micrometre_scale_bar(make_napari_viewer, tmp_path: Path) -> None:
    pytest.importorskip("napari")
    slide = WRITERS["mrxs"](tmp_path)
    viewer = make_napari_viewer()
    layers = viewer.open(str(slide.path), plugin="napari-m2mrf")
    assert len(layers) == 1 and layers[0].multiscale and len(layers[0].data) == len(slide.level_shapes)
    assert tuple(layers[0].scale) == pytest.approx((slide.pixel_size_um,) * 2)
    viewer.canvas.overlays.scale_bar.visible = True
    assert [str(unit) for unit in viewer.layers.units] == ["micrometer", "micrometer"]


def test_a_real_dicom_file_that_is_not_a_slide_is_refused_in_one_line() -> None:
    """pydicom ships real DICOM files (a CT slice); the reader claims them by content and refuses them clearly."""
    pydicom_data = pytest.importorskip("pydicom.data")
    from napari_m2mrf.errors import UserError
    from napari_m2mrf.napari_io import layer_data_for_path

    path = Path(pydicom_data.get_testdata_file("CT_small.dcm"))
    assert sniff_format(path) == "dicom"
    with pytest.raises(UserError, match="not a readable DICOM whole-slide image") as raised:
        layer_data_for_path(path)
    assert "\n" not in str(raised.value)
