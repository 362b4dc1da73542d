"""The synthetic slide sample: both formats, their metadata, level consistency, tissue look, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_m2mrf.io.downsample import mean_2x2, mode_2x2
from napari_m2mrf.io.slides import open_label_pyramids, open_pyramid
from napari_m2mrf.napari_io import slide_layer_data
from sample_data.slide_sample import SLIDE_CLASSES, generate_slide, sample_slide
from sample_data.slide_texture import TissueSynth

SIZE = 2048


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory):
    return generate_slide(tmp_path_factory.mktemp("slide"), size=SIZE, levels=4, seed=3)


def test_ome_zarr_metadata_and_readback(slide) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(str(slide.ome_zarr)))())
    image = nodes[0]
    assert [tuple(level.shape) for level in image.data] == [(3, SIZE >> k, SIZE >> k) for k in range(4)]
    truth = next(node for node in nodes if "ground_truth" in str(node.zarr))
    assert set(truth.metadata["color"]) >= {1, 2, 3}
    pyramid = open_pyramid(slide.ome_zarr)
    assert pyramid.pixel_size_um == pytest.approx(0.25) and pyramid.downsamples == [1.0, 2.0, 4.0, 8.0]
    assert isinstance(pyramid.levels[0], zarr.Array)
    assert pyramid.levels[0].chunks == (3, 256, 256)  # small chunks: sparse reads decode little


def test_ome_tiff_structure(slide) -> None:
    with tifffile.TiffFile(slide.ome_tiff) as tif:
        assert tif.is_ome and tif.is_bigtiff
        image, truth = tif.series
        assert (image.name, truth.name) == ("image", "ground_truth")
        assert len(image.levels) == 4 and len(truth.levels) == 4  # SubIFD pyramids
        page = image.levels[0].keyframe
        assert (page.tilewidth, page.tilelength) == (512, 512) and page.compression == tifffile.COMPRESSION.JPEG
        assert truth.levels[0].keyframe.compression == tifffile.COMPRESSION.ZSTD
    assert open_pyramid(slide.ome_tiff).pixel_size_um == pytest.approx(0.25)


def test_both_formats_hold_the_same_slide(slide) -> None:
    from_zarr, from_tiff = open_pyramid(slide.ome_zarr), open_pyramid(slide.ome_tiff)
    window = np.s_[:, 512:1024, 1024:1536]
    difference = np.abs(from_zarr.levels[0][window].astype(int) - from_tiff.levels[0][window])
    assert difference.mean() < 4  # JPEG quality 85
    truths = [open_label_pyramids(path)[0] for path in (slide.ome_zarr, slide.ome_tiff)]
    for level_a, level_b in zip(truths[0].levels, truths[1].levels, strict=True):
        assert np.array_equal(np.asarray(level_a[...]), np.asarray(level_b[...]))


def test_each_level_is_the_previous_one_reduced(slide) -> None:
    image = open_pyramid(slide.ome_zarr)
    truth = open_label_pyramids(slide.ome_zarr)[0]
    for k in range(1, 4):
        assert np.array_equal(image.levels[k][...], mean_2x2(np.asarray(image.levels[k - 1][...])))
        assert np.array_equal(truth.levels[k][...], mode_2x2(np.asarray(truth.levels[k - 1][...])))


def test_tissue_looks_like_h_and_e_with_small_targets(slide) -> None:
    rgb = np.asarray(open_pyramid(slide.ome_zarr).levels[0][...]).transpose(1, 2, 0).astype(int)
    labels = np.asarray(open_label_pyramids(slide.ome_zarr)[0].levels[0][...])
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    fractions = np.bincount(labels.ravel(), minlength=4)[1:] / labels.size
    assert np.all(fractions > 0) and fractions.sum() < 0.25
    glass = rgb.sum(axis=2) > 3 * 235
    assert 0.05 < glass.mean() < 0.9  # white background around the tissue
    stroma = (labels == 0) & ~glass
    tumour = labels == 1
    mean_stroma, mean_tumour = rgb[stroma].mean(axis=0), rgb[tumour].mean(axis=0)
    assert mean_stroma[0] > mean_stroma[1] and mean_stroma[2] > mean_stroma[1]  # pink: red and blue over green
    assert mean_tumour.sum() < mean_stroma.sum() - 60  # nuclei-dense nests are darker
    assert mean_tumour[2] > mean_tumour[0]  # and bluer (haematoxylin)


def test_tiles_are_a_pure_function_of_position_and_seed(slide) -> None:
    stored = np.asarray(open_pyramid(slide.ome_zarr).levels[0][:, 512:1024, 1024:1536]).transpose(1, 2, 0)
    rgb, _ = TissueSynth(SIZE, seed=3).tile(1, 2)
    assert np.array_equal(rgb, stored)
    assert not np.array_equal(TissueSynth(SIZE, seed=4).tile(1, 2)[0], rgb)


def test_layer_data_for_the_lead_sample_command(slide) -> None:
    layers = slide_layer_data(slide.ome_zarr)
    (image, image_meta, image_kind), (labels, labels_meta, labels_kind) = layers
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image_meta["multiscale"] and image_meta["rgb"] and image_meta["scale"] == (0.25, 0.25)
    assert image[0].shape == (SIZE, SIZE, 3) and len(labels) == 4
    assert labels_meta["colormap"][1] == pytest.approx(SLIDE_CLASSES[1][1])


def test_sample_is_generated_once_into_the_cache(private_cache: Path) -> None:
    first = sample_slide(size=1024, seed=0)
    assert first.ome_zarr.is_dir() and first.ome_tiff.is_file()
    stamp = first.ome_tiff.stat().st_mtime_ns
    again = sample_slide(size=1024, seed=0)
    assert again == first and again.ome_tiff.stat().st_mtime_ns == stamp
    assert [p.name for p in first.ome_zarr.parent.parent.iterdir() if ".tmp-" in p.name] == []
