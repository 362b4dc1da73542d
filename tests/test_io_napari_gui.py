"""The reader and writers inside a real napari viewer (virtual display, software OpenGL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_m2mrf.classes import FUNDUS_CLASSES  # noqa: E402
from napari_m2mrf.io import Workspace, read_idrid_mask  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sample_data.slide_sample import generate_slide

    return generate_slide(tmp_path_factory.mktemp("gui-slide"), size=2048, levels=4, seed=1).ome_zarr


def test_slide_opens_as_multiscale_layers(make_napari_viewer, small_slide: Path) -> None:
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(small_slide), plugin="napari-m2mrf")
    image, truth = layers
    assert image.multiscale and image.rgb and len(image.data) == 4
    assert tuple(image.scale) == pytest.approx((0.25, 0.25))
    assert truth.multiscale and type(truth).__name__ == "Labels"
    assert tuple(np.ravel(truth.colormap.map(1))) == pytest.approx((1.0, 0.6, 0.0, 1.0))
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot[..., :3].std() > 5  # tissue is drawn, not a blank canvas


def test_fundus_with_ground_truth_and_idrid_export(make_napari_viewer, tmp_path: Path, shared_data: Path) -> None:
    image = shared_data / "idrid_subset" / "1. Original Images" / "a. Training Set" / "IDRiD_03.jpg"
    viewer = make_napari_viewer()
    photo, truth = viewer.open(str(image), plugin="napari-m2mrf")
    assert photo.rgb and photo.data.shape == (2848, 4288, 3)
    assert truth.name == "IDRiD_03 ground truth" and set(np.unique(truth.data)) == {0, 1, 2, 3, 4}
    paths = napari.save_layers(str(tmp_path / "IDRiD_03.tif"), [truth], plugin="napari-m2mrf")
    assert sorted(Path(p).name for p in paths) == sorted(f"IDRiD_03_{c.code}.tif" for c in FUNDUS_CLASSES)
    assert np.array_equal(read_idrid_mask(tmp_path / "IDRiD_03_MA.tif"), truth.data == 4)


def test_labels_saved_into_a_workspace(make_napari_viewer, tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    labels = np.zeros((64, 80), np.uint8)
    labels[10:20, 30:50] = 2
    layer = viewer.add_labels(labels, name="corrected")
    target = tmp_path / "eye.m2mrf.zarr"
    napari.save_layers(str(target), [layer], plugin="napari-m2mrf")
    stored = Workspace.open(target).labels("corrected")
    assert np.array_equal(stored.levels[0][...], labels)
    assert stored.colors[2] == pytest.approx(tuple(np.ravel(layer.colormap.map(2))), abs=1 / 255)
