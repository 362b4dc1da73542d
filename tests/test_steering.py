"""Steering the deformed sampler with a given density map (issue 17), without a viewer: resampling and
checking maps, steered densities, the preview being the run, the same budget, stored provenance, map files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from slide_helpers import save_slide_model, small_slide

from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation
from napari_m2mrf.inference.steering import preview, sampler_for
from napari_m2mrf.io.density_maps import read_density_map, write_density_map
from napari_m2mrf.io.workspace import Workspace
from napari_m2mrf.models.deform import DeformedSampler, grid_to_pixels, uniform_grid
from napari_m2mrf.sampling import density as density_module
from napari_m2mrf.sampling.density import (
    MIN_RELATIVE_DENSITY,
    brush_factors,
    region_factors,
    resample_density,
    steer_density,
)


def test_resampling_takes_exact_area_means_in_bands(monkeypatch) -> None:
    values = np.arange(16, dtype=np.float64).reshape(4, 4) + 1
    means = resample_density(values, (2, 2), normalise=False)
    np.testing.assert_allclose(means, values.reshape(2, 2, 2, 2).mean(axis=(1, 3)))
    np.testing.assert_allclose(resample_density(values, (8, 8), normalise=False), values.repeat(2, 0).repeat(2, 1))
    odd = np.random.default_rng(0).random((37, 53))
    assert resample_density(odd, (16, 24), normalise=False).mean() == pytest.approx(odd.mean())
    whole = resample_density(odd, (16, 24))
    monkeypatch.setattr(density_module, "BAND_BYTES", 8 * 53 * 3)  # three rows per band
    np.testing.assert_allclose(resample_density(odd, (16, 24)), whole)
    assert whole.sum() == pytest.approx(1.0)


def test_bad_maps_are_refused_with_one_line() -> None:
    for bad, pattern in [(np.full((4, 4), np.nan), "NaN"), (-np.ones((4, 4)), "negative"),
                         (np.zeros((4, 4)), "zero everywhere"), (np.ones((1, 1)), "at least 2×2"),
                         (np.ones((2, 4, 4)), "2-D"), (np.ones((4, 4), complex), "numbers")]:
        with pytest.raises(UserError, match=pattern) as raised:
            resample_density(bad, (8, 8))
        assert "\n" not in str(raised.value)


def test_steered_density_multiplies_the_base_where_painted_and_keeps_the_floor() -> None:
    base = np.full((8, 8), 1 / 64)
    factors = np.ones((16, 16))
    factors[:8, :8] = 4.0
    steered = steer_density(base, factors)
    assert steered.sum() == pytest.approx(1.0)
    assert steered[:4, :4].mean() / steered[4:, 4:].mean() == pytest.approx(4.0)
    np.testing.assert_allclose(steer_density(base, None), base)
    zeros = np.zeros((8, 8))
    zeros[0, 0] = 1.0
    assert steer_density(zeros, None).min() == pytest.approx(MIN_RELATIVE_DENSITY * steer_density(zeros, None).mean(),
                                                             rel=1e-2)
    assert brush_factors(np.array([[0, 1, 4], [5, 8, 200]])).tolist() == [[1, 2, 16], [0.5, 1 / 16, 1]]
    a, b = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    a[:2], b[:, :2] = True, True
    assert region_factors((4, 4), [(a, 4.0), (b, 0.5)])[0, 0] == 2.0


def test_uniform_density_gives_the_uniform_grid_through_the_preview() -> None:
    sampler = DeformedSampler(sigma=3.0)
    points, relative = preview(sampler, np.ones((7, 9)), (16, 16), (12, 10), (1200, 1000))
    expected = grid_to_pixels(uniform_grid(1, (12, 10))[0], (1200, 1000)).numpy()
    np.testing.assert_allclose(points, expected, atol=1e-3)
    np.testing.assert_allclose(relative, 1.0, atol=1e-3)


@pytest.fixture(scope="module")
def slide_and_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("steer")
    return small_slide(folder / "slide"), save_slide_model(folder / "model.safetensors")


def test_a_run_with_an_edited_map_moves_samples_at_the_same_budget(slide_and_model, tmp_path) -> None:
    slide, model = slide_and_model
    workspace = tmp_path / "slide.m2mrf.zarr"
    learned = run_slide_segmentation(slide.ome_zarr, SlideRequest(str(model), device="cpu", workspace=workspace))
    factors = np.ones((64, 64))
    factors[40:56, 8:24] = 8.0  # level-0 rows 1280–1792, columns 256–768
    edited = steer_density(learned.density, factors)
    sampler = sampler_for(learned.model.metadata)  # the checkpoint's sampler, rebuilt without its weights
    points, _ = preview(sampler, edited, learned.density_size, learned.labels.shape, learned.image_shape)
    source = {"source": "edited by the user", "base": {"source": "learned", "run_id": learned.run_id}}
    steered = run_slide_segmentation(slide.ome_zarr, SlideRequest(str(model), device="cpu", workspace=workspace,
                                                                  density=edited, density_source=source))
    np.testing.assert_array_equal(steered.points, points)  # the preview is the run
    assert steered.labels.shape == learned.labels.shape  # the same budget

    def inside(p: np.ndarray) -> int:
        return int(((p[..., 0] >= 1280) & (p[..., 0] < 1792) & (p[..., 1] >= 256) & (p[..., 1] < 768)).sum())

    assert inside(steered.points) > 1.5 * inside(learned.points)  # ×8 in the box; the kernel (σ = 4 cells) spreads it
    stored = Workspace.open(workspace, mode="r")
    assert stored.deformation_source() == source and stored.provenance["density"] == source
    np.testing.assert_allclose(stored.deformation()[0], edited, rtol=1e-5)
    # the stored map, reused from the workspace as a file (predict --density WORKSPACE), gives the same samples
    again = read_density_map(workspace)
    assert again.provenance["source"] == "workspace" and again.provenance["stored_as"] == source
    rerun = run_slide_segmentation(slide.ome_zarr, SlideRequest(str(model), device="cpu", workspace=tmp_path / "b.zarr",
                                                                density=again.values, density_source=again.provenance))
    np.testing.assert_allclose(rerun.points, steered.points, atol=1e-3)
    with pytest.raises(UserError, match="uniform sampler"):
        run_slide_segmentation(slide.ome_zarr, SlideRequest(str(model), device="cpu", workspace=tmp_path / "c.zarr",
                                                            sampler="uniform", density=edited))


def test_map_files_read_and_write(tmp_path: Path) -> None:
    from PIL import Image

    values = np.random.default_rng(1).random((300, 200)).astype(np.float32)
    written = write_density_map(tmp_path / "map.npy", values)
    read = read_density_map(written)
    assert isinstance(read.values, np.memmap) and read.provenance["shape"] == [300, 200]
    np.testing.assert_array_equal(np.asarray(read.values), values)
    assert len(read.provenance["sha256"]) == 64
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 10:30] = 200
    Image.fromarray(image).save(tmp_path / "map.png")
    brightness = read_density_map(tmp_path / "map.png").values
    assert brightness.shape == (40, 60) and brightness[15, 15] == 200 and brightness[0, 0] == 0
    with pytest.raises(UserError, match=r"\.npy"):
        write_density_map(tmp_path / "map.csv", values)
    assert not (tmp_path / "map.csv").exists()


def test_predict_runs_slides_with_an_image_map(slide_and_model, tmp_path: Path, capsys) -> None:
    import json

    from PIL import Image

    from napari_m2mrf.cli import main

    slide, model = slide_and_model
    brightness = np.full((300, 300), 20, np.uint8)
    brightness[:150, :150] = 200  # ten times the density in the top-left quarter, at a resolution of its own
    Image.fromarray(brightness).save(tmp_path / "map.png")
    assert main(["predict", str(slide.ome_zarr), "--model", str(model), "--density", str(tmp_path / "map.png"),
                 "--out", str(tmp_path / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["density"]["source"] == "file" and summary["samples"] == 64 * 64
    stored = Workspace.open(tmp_path / "out" / "slide.m2mrf.zarr", mode="r")
    assert stored.deformation_source()["sha256"] == summary["density"]["sha256"]
    points = stored.sampling_points()
    top_left = np.count_nonzero((points[:, 0] < 1024) & (points[:, 1] < 1024))
    # a uniform grid puts 32×32 samples there; eq. 3's kernel (σ = 4 map pixels) moves samples only near the step
    assert top_left > 1.2 * 32 * 32
