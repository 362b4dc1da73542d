"""The workspace store: image pyramid, labels, probabilities, sampling, provenance, atomic replacement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from napari_m2mrf.io import Workspace
from napari_m2mrf.io.workspace import workspace_path_for

COLORS = {c.label: c.color for c in FUNDUS_CLASSES}
NAMES = {c.label: c.code for c in FUNDUS_CLASSES}
RNG = np.random.default_rng(2)
IMAGE = RNG.integers(0, 255, (3, 600, 700), dtype=np.uint8)


def _labels() -> np.ndarray:
    labels = np.zeros(IMAGE.shape[1:], np.uint8)
    labels[100:180, 200:300] = 1
    labels[400:403, 50:53] = 4
    return labels


@pytest.fixture(params=["0.5", "0.4"])
def workspace(tmp_path: Path, request: pytest.FixtureRequest) -> Workspace:
    created = Workspace.create(tmp_path / "eye.m2mrf.zarr", ngff_version=request.param)
    created.write_image(IMAGE, pixel_size_um=2.5, name="eye", chunk=256)
    return created


def test_image_pyramid(workspace: Workspace) -> None:
    pyramid = workspace.image
    assert [level.shape for level in pyramid.levels] == [(3, 600, 700), (3, 300, 350), (3, 150, 175)]
    assert isinstance(pyramid.levels[0], zarr.Array)  # the deformed sampler reads these directly
    assert pyramid.downsamples == [1.0, 2.0, 4.0] and pyramid.pixel_size_um == pytest.approx(2.5)
    assert np.array_equal(pyramid.levels[0][...], IMAGE)
    assert [pyramid.level_for_downsample(f) for f in (0.5, 1, 3.9, 4, 100)] == [0, 0, 1, 2, 2]
    reopened = Workspace.open(workspace.path, mode="r")
    assert reopened.has_image and reopened.version == workspace.version


def test_labels_read_back_by_ome_zarr_py(workspace: Workspace) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    workspace.write_labels("prediction", _labels(), colors=COLORS, names=NAMES, pixel_size_um=2.5)
    nodes = list(Reader(parse_url(str(workspace.path)))())
    image = nodes[0]
    assert [tuple(level.shape) for level in image.data] == [(3, 600, 700), (3, 300, 350), (3, 150, 175)]
    assert np.array_equal(np.asarray(image.data[0]), IMAGE)
    labels = next(node for node in nodes if "prediction" in str(node.zarr))
    assert np.array_equal(np.asarray(labels.data[0]), _labels())
    colors = labels.metadata["color"]
    assert tuple(colors[1]) == pytest.approx((1.0, 0.0, 0.0, 1.0)) and tuple(colors[4]) == pytest.approx((0, 0, 1, 1))


def test_labels_pyramid_keeps_tiny_lesions(workspace: Workspace) -> None:
    pyramid = workspace.write_labels("prediction", _labels(), colors=COLORS, names=NAMES)
    assert workspace.label_names() == ["prediction"]
    assert pyramid.names[4] == "MA" and pyramid.colors[1] == pytest.approx((1.0, 0.0, 0.0, 1.0))
    assert 4 in np.unique(pyramid.levels[1][...])  # a 3×3 microaneurysm survives the 2×2 mode


def test_region_write_updates_coarser_levels(workspace: Workspace) -> None:
    workspace.write_labels("corrected", _labels(), colors=COLORS, names=NAMES)
    workspace.write_labels_region("corrected", np.full((40, 60), 2, np.uint8), 500, 600)
    pyramid = workspace.labels("corrected")
    assert np.all(pyramid.levels[0][500:540, 600:660] == 2)
    assert np.all(pyramid.levels[1][250:270, 300:330] == 2) and np.all(pyramid.levels[2][125:135, 150:165] == 2)
    assert pyramid.levels[1][0, 0] == 0
    with pytest.raises(UserError, match="outside"):
        workspace.write_labels_region("corrected", np.ones((10, 10), np.uint8), 595, 0)


def test_a_failed_write_keeps_the_previous_labels(workspace: Workspace) -> None:
    workspace.write_labels("prediction", _labels(), colors=COLORS, names=NAMES)
    with pytest.raises(RuntimeError):
        with workspace.new_labels("prediction", (600, 700), colors=COLORS, names=NAMES) as level0:
            level0[:300] = 3
            raise RuntimeError("crash half-way")
    assert np.array_equal(workspace.labels("prediction").levels[0][...], _labels())
    leftovers = [p.name for p in (workspace.path / "labels").iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_prediction_does_not_touch_corrections(workspace: Workspace) -> None:
    corrected = _labels()
    corrected[0:10, 0:10] = 2
    workspace.write_labels("corrected", corrected, colors=COLORS, names=NAMES)
    workspace.write_labels("prediction", np.zeros((600, 700), np.uint8), colors=COLORS, names=NAMES)
    assert np.array_equal(workspace.labels("corrected").levels[0][...], corrected)
    assert sorted(workspace.label_names()) == ["corrected", "prediction"]


def test_probabilities_sampling_deformation_provenance(workspace: Workspace) -> None:
    probabilities = RNG.random((4, 75, 88)).astype(np.float32)
    workspace.write_probabilities(probabilities, downsample=8, class_names=["EX", "HE", "SE", "MA"])
    stored, downsample, names = workspace.probabilities()
    assert stored.dtype == np.float16 and downsample == 8 and names == ["EX", "HE", "SE", "MA"]
    assert np.allclose(stored[...], probabilities, atol=1e-3)
    points = RNG.random((1000, 2)) * 600
    workspace.write_sampling_points(points)
    assert np.allclose(workspace.sampling_points(), points, atol=1e-3)
    density = RNG.random((32, 32))
    workspace.write_deformation(density, downsample=20)
    stored_density, factor = workspace.deformation()
    assert np.allclose(stored_density, density) and factor == 20
    workspace.record_provenance(model="m2mrf_hrnet_w48", variant="A", checkpoint_sha256="ab" * 32)
    provenance = Workspace.open(workspace.path).provenance
    assert provenance["variant"] == "A" and "time" in provenance


def test_probability_pyramid_is_published_whole_or_not_at_all(workspace: Workspace) -> None:
    workspace.write_probabilities(RNG.random((4, 75, 88)), downsample=8, class_names=["EX", "HE", "SE", "MA"])
    with pytest.raises(UserError, match="no probability pyramid"):
        workspace.probability_pyramid()  # a fundus run's single map is not a pyramid
    maps = RNG.random((2, 700, 600)).astype(np.float16)
    with workspace.new_probabilities((2, 700, 600), downsample=4, class_codes=["T", "V"], pixel_size_um=2.5,
                                     chunk=256) as level0:
        level0[:, :400] = maps[:, :400]
        level0[:, 400:] = maps[:, 400:]
    pyramid, downsample, codes = workspace.probability_pyramid()
    assert downsample == 4.0 and codes == ["T", "V"] and pyramid.pixel_size_um == pytest.approx(10.0)
    assert [level.shape for level in pyramid.levels] == [(2, 700, 600), (2, 350, 300), (2, 175, 150)]
    np.testing.assert_array_equal(pyramid.levels[0][...], maps)
    np.testing.assert_allclose(pyramid.levels[1][:, 10, 20], maps[:, 20:22, 40:42].astype(np.float32).mean(axis=(1, 2)),
                               atol=1e-3)
    with pytest.raises(RuntimeError), workspace.new_probabilities((1, 10, 10), downsample=1, class_codes=["T"]) as level0:
        level0[...] = 1.0
        raise RuntimeError("interrupted")
    assert workspace.probability_pyramid()[2] == ["T", "V"]
    assert not list(workspace.path.glob(".probabilities.tmp-*"))
    with pytest.raises(UserError, match="slide pyramid"):
        workspace.probabilities()


def test_missing_chunk_in_a_complete_store_is_reported(workspace: Workspace) -> None:
    chunk = next(p for p in sorted((workspace.path / "1").rglob("*")) if p.is_file() and not p.name.startswith((".", "zarr")))
    chunk.unlink()
    with pytest.raises(UserError, match=r"1: 1 of \d+ chunks are missing"):
        Workspace.open(workspace.path).image


def test_workspace_path_and_errors(tmp_path: Path) -> None:
    source = tmp_path / "IDRiD_01.jpg"
    source.write_bytes(b"")
    assert workspace_path_for(source) == tmp_path / "IDRiD_01.m2mrf.zarr"
    with pytest.raises(UserError, match="no such workspace"):
        Workspace.open(tmp_path / "absent.m2mrf.zarr")
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.attrs["x"] = 1
    with pytest.raises(UserError, match="not a napari-m2mrf workspace"):
        Workspace.open(tmp_path / "plain.zarr")
    empty = Workspace.create(tmp_path / "empty.m2mrf.zarr")
    with pytest.raises(UserError, match="holds no image"):
        empty.image
    with pytest.raises(UserError, match="no 'probabilities'"):
        empty.probabilities()
