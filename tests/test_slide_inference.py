"""Deformed-downsample slide inference on a real (small, synthetic) pyramid, written into a real workspace."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from slide_helpers import save_slide_model, small_slide

from napari_m2mrf.classes import LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.inference.slide import (
    CORRECTED,
    PREDICTION,
    SlideRequest,
    probability_downsample,
    relative_sample_density,
    run_slide_segmentation,
)
from napari_m2mrf.io.workspace import Workspace
from napari_m2mrf.jobs import Cancelled, CancelToken
from napari_m2mrf.models import build_model, fundus_metadata, save_checkpoint
from napari_m2mrf.models.outputs import class_probabilities, logits_to_labels
from napari_m2mrf.models.checkpoints import is_deformed, load_checkpoint as load_model_file
from napari_m2mrf.sampling.pyramid import level_bytes


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return small_slide(tmp_path_factory.mktemp("slide"))


@pytest.fixture(scope="module")
def slide_model(tmp_path_factory) -> Path:
    return save_slide_model(tmp_path_factory.mktemp("model") / "slide.safetensors")


def _run(slide, model: Path, workspace: Path, **kwargs):
    request = SlideRequest(str(model), device="cpu", workspace=workspace, **kwargs)
    return run_slide_segmentation(slide.ome_zarr, request)


def test_deformed_checkpoint_round_trip_gives_the_same_model(slide_model, tmp_path) -> None:
    model, meta = load_model_file(slide_model)
    assert is_deformed(meta) and meta["deformed"]["sampler"] == "deformed" and meta["deformed"]["sigma"] == 4.0
    image = torch.rand(1, 3, 96, 80)
    again, _ = load_model_file(slide_model)
    with torch.no_grad():
        first, second = model(image), again(image)
    torch.testing.assert_close(first.logits, second.logits)
    torch.testing.assert_close(first.grid, second.grid)
    damaged = tmp_path / "damaged.safetensors"
    payload = bytearray(slide_model.read_bytes())
    payload[-100] ^= 0xFF
    damaged.write_bytes(bytes(payload))
    with pytest.raises(UserError, match="sha256"):
        load_model_file(damaged)


def test_trainer_export_of_a_deformed_model_loads(tmp_path) -> None:
    from training.checkpointing import export_model, model_metadata
    from training.config import TrainingConfig
    from training.networks import deformed

    config = TrainingConfig()
    config.model.name, config.model.options = "hrnetv2_w18s", {}
    config.deform.enabled, config.deform.output_size, config.deform.sigma = True, [32, 48], 3.0
    classes = (LesionClass(1, "T", "tumour", (1.0, 0.5, 0.0, 1.0)),)
    model = deformed(build_model("hrnetv2_w18s", num_classes=2), config.deform, 100.0).eval()
    path = export_model(tmp_path / "best.safetensors", model, model_metadata(config, classes, False, 10, None))
    assert path.name == "best.safetensors"  # a plugin checkpoint, no pickle
    loaded, meta = load_model_file(path)
    assert is_deformed(meta) and meta["deformed"]["output_size"] == [32, 48]
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image).logits, model(image).logits)


def test_slide_run_writes_prediction_pyramid_points_and_deformation(slide, slide_model, tmp_path) -> None:
    workspace_path = tmp_path / "slide.m2mrf.zarr"
    result = _run(slide, slide_model, workspace_path)
    workspace = Workspace.open(workspace_path, mode="r")
    prediction = workspace.labels(PREDICTION)
    assert prediction.shape == (2048, 2048) and len(prediction.levels) >= 3
    assert prediction.levels[1].shape == (1024, 1024)
    assert prediction.names == {1: "tumour", 2: "vessel", 3: "necrosis"}
    level0 = np.asarray(prediction.levels[0][:])
    # every sample's own pixel carries that sample's low-resolution label (nearest-sample fill)
    rows = np.clip(np.rint(result.points[..., 0]).astype(int), 0, 2047)
    cols = np.clip(np.rint(result.points[..., 1]).astype(int), 0, 2047)
    np.testing.assert_array_equal(level0[rows, cols], result.labels)
    assert set(np.unique(level0)) == set(np.unique(result.labels))
    np.testing.assert_allclose(workspace.sampling_points(), result.points.reshape(-1, 2))
    density, downsample = workspace.deformation()
    assert density.shape == (32, 32) and downsample == 64.0
    assert density.sum() == pytest.approx(1.0, abs=1e-4)
    assert workspace.provenance["sampler"] == "learned" and workspace.provenance["model"] == str(slide_model)
    assert result.deformed_image.shape == (64, 64, 3) and result.deformed_image.dtype == np.uint8
    # probability pyramid: float16, 16 level-0 px per pixel (two per sample spacing), background left out
    maps, factor, codes = workspace.probability_pyramid()
    assert factor == result.probability_downsample == 16 and codes == ["tumour", "vessel", "necrosis"]
    assert [level.shape for level in maps.levels] == [(3, 128, 128)] and maps.levels[0].dtype == np.float16
    assert maps.pixel_size_um == pytest.approx(16 * slide.pixel_size_um)
    finest = np.asarray(maps.levels[0][:], np.float32)
    assert 0.0 <= finest.min() and finest.sum(axis=0).max() <= 1.0 + 1e-2
    # the most probable class of each map pixel (background = 1 − the rest) is the prediction under its centre
    with_background = np.concatenate((1.0 - finest.sum(axis=0, keepdims=True), finest))
    under_centres = level0[8::16, 8::16]
    assert (with_background.argmax(axis=0) == under_centres).mean() > 0.95
    # the 64×64 samples are ~32 px apart: read from a coarse level, far less than level 0
    from napari_m2mrf.io.slides import open_pyramid

    assert result.read.bytes_decoded < level_bytes(open_pyramid(slide.ome_zarr).levels[0]) / 4


def test_uniform_baseline_samples_the_pixel_centres_of_a_uniform_grid(slide, slide_model, tmp_path) -> None:
    result = _run(slide, slide_model, tmp_path / "uniform.m2mrf.zarr", sampler="uniform", output_size=(16, 32))
    centres_y = (np.arange(16) + 0.5) * 2048 / 16 - 0.5
    centres_x = (np.arange(32) + 0.5) * 2048 / 32 - 0.5
    np.testing.assert_allclose(result.points[:, 0, 0], centres_y, atol=1e-2)
    np.testing.assert_allclose(result.points[0, :, 1], centres_x, atol=1e-2)
    np.testing.assert_allclose(result.relative_density, 1.0, atol=1e-3)


def test_a_new_prediction_never_touches_corrections(slide, slide_model, tmp_path) -> None:
    workspace_path = tmp_path / "kept.m2mrf.zarr"
    workspace = Workspace.create(workspace_path, source=slide.ome_zarr)
    edits = np.zeros((2048, 2048), np.uint8)
    edits[100:300, 200:260] = 2
    workspace.write_labels(CORRECTED, edits, colors={2: (0, 1, 1, 1)}, names={2: "vessel"})
    _run(slide, slide_model, workspace_path)
    np.testing.assert_array_equal(np.asarray(Workspace.open(workspace_path).labels(CORRECTED).levels[0][:]), edits)


def test_cancel_stops_within_two_seconds_and_leaves_the_workspace_unchanged(slide, tmp_path) -> None:
    model = save_slide_model(tmp_path / "bigger.safetensors", output_size=(256, 256), density_size=(64, 64))
    workspace_path = tmp_path / "cancel.m2mrf.zarr"
    stages: list[str] = []
    token = CancelToken()
    cancelled_at: list[float] = []

    def cancel_when_segmenting() -> None:
        while not any(s.startswith("segmenting") for s in stages):
            time.sleep(0.01)
        time.sleep(0.2)  # inside the network's forward pass
        cancelled_at.append(time.perf_counter())
        token.set()

    watcher = threading.Thread(target=cancel_when_segmenting, daemon=True)
    watcher.start()
    request = SlideRequest(str(model), device="cpu", workspace=workspace_path)
    with pytest.raises(Cancelled):
        run_slide_segmentation(slide.ome_zarr, request, progress=lambda d, t, m: stages.append(m), cancel=token)
    stopped_after = time.perf_counter() - cancelled_at[0]
    assert stopped_after <= 2.0
    assert not (workspace_path / "labels" / PREDICTION).exists()


def test_cancel_while_building_levels_keeps_the_previous_prediction(slide, slide_model, tmp_path) -> None:
    workspace_path = tmp_path / "previous.m2mrf.zarr"
    _run(slide, slide_model, workspace_path)
    before = np.asarray(Workspace.open(workspace_path).labels(PREDICTION).levels[1][:])
    token = CancelToken()

    def progress(done: int, total: int, message: str) -> None:
        if message.startswith("building coarser levels"):
            token.set()

    other = save_slide_model(tmp_path / "other.safetensors", seed=5)
    with pytest.raises(Cancelled):
        run_slide_segmentation(slide.ome_zarr, SlideRequest(str(other), device="cpu", workspace=workspace_path),
                               progress=progress, cancel=token)
    after = Workspace.open(workspace_path).labels(PREDICTION)
    np.testing.assert_array_equal(np.asarray(after.levels[1][:]), before)


def test_a_fundus_model_or_a_non_slide_is_a_user_error(slide, tmp_path) -> None:
    fundus = tmp_path / "fundus.safetensors"
    save_checkpoint(fundus, build_model("hrnetv2_w18s", num_classes=4), fundus_metadata("idrid"))
    with pytest.raises(UserError, match="fundus model"):
        run_slide_segmentation(slide.ome_zarr, SlideRequest(str(fundus), device="cpu", workspace=tmp_path / "w"))
    not_a_slide = tmp_path / "notes.tif"
    not_a_slide.write_bytes(b"not a tiff at all")
    model = save_slide_model(tmp_path / "slide.safetensors")
    with pytest.raises(UserError, match="notes.tif"):
        run_slide_segmentation(not_a_slide, SlideRequest(str(model), device="cpu", workspace=tmp_path / "w2"))


def test_logits_become_the_checkpoint_label_values() -> None:
    logits = torch.tensor([[[5.0, -5.0]], [[-5.0, 0.0]], [[-5.0, 6.0]]])  # 3 channels, 1×2 pixels
    softmax_meta = {"output": "softmax", "classes": [{"label": 0}, {"label": 7}, {"label": 9}]}
    np.testing.assert_array_equal(logits_to_labels(logits, softmax_meta), [[0, 9]])
    sigmoid_meta = {"output": "sigmoid", "classes": [{"label": 1, "code": "A"}, {"label": 2, "code": "B"},
                                                     {"label": 4, "code": "D"}]}
    np.testing.assert_array_equal(logits_to_labels(logits, sigmoid_meta), [[1, 4]])
    np.testing.assert_array_equal(logits_to_labels(logits, sigmoid_meta, thresholds=[0.5, 0.5, 0.999]), [[1, 0]])
    # the checkpoint's calibrated thresholds are the default; given ones override them
    calibrated = {**sigmoid_meta, "thresholds": {"D": 0.999}}
    np.testing.assert_array_equal(logits_to_labels(logits, calibrated), [[1, 0]])
    np.testing.assert_array_equal(logits_to_labels(logits, calibrated, thresholds=[0.5] * 3), [[1, 4]])
    with pytest.raises(UserError, match="2 thresholds given for the model's 3 classes"):
        logits_to_labels(logits, sigmoid_meta, thresholds=[0.5, 0.5])
    with pytest.raises(UserError, match="between 0 and 1"):
        logits_to_labels(logits, {**sigmoid_meta, "thresholds": {"A": 1.5}})
    uncalibrated = {**sigmoid_meta, "thresholds": {"A": None, "D": float("nan")}}  # no lesion to calibrate on
    np.testing.assert_array_equal(logits_to_labels(logits, uncalibrated), [[1, 4]])
    # softmax: every channel's probability, background left out; sigmoid: every channel's sigmoid
    probabilities, classes = class_probabilities(logits, softmax_meta)
    assert [c["label"] for c in classes] == [7, 9]
    np.testing.assert_allclose(probabilities, torch.softmax(logits, dim=0)[1:].numpy(), rtol=1e-6)
    probabilities, classes = class_probabilities(logits, sigmoid_meta)
    assert len(classes) == 3
    np.testing.assert_allclose(probabilities, torch.sigmoid(logits).numpy(), rtol=1e-6)


def test_probability_maps_have_two_to_four_pixels_per_sample_spacing() -> None:
    assert probability_downsample((2048, 2048), 64 * 64) == 16  # samples 32 px apart
    assert probability_downsample((32768, 32768), 512 * 512) == 32  # 64 px apart
    assert probability_downsample((100_000, 100_000), 512 * 512) == 64  # 195 px apart
    assert probability_downsample((500, 500), 512 * 512) == 1


def test_relative_density_is_one_on_a_uniform_grid_and_four_where_twice_as_dense() -> None:
    ys, xs = np.meshgrid(np.arange(8) * 16.0 + 8, np.arange(8) * 16.0 + 8, indexing="ij")
    uniform = np.stack((ys, xs), axis=-1)
    np.testing.assert_allclose(relative_sample_density(uniform, (128, 128)), 1.0)
    np.testing.assert_allclose(relative_sample_density(uniform / 2, (128, 128)), 4.0)


def test_the_lazy_result_comes_before_the_save_and_equals_the_stored_pyramids(slide, slide_model, tmp_path) -> None:
    workspace_path = tmp_path / "lazy.m2mrf.zarr"
    seen: list = []

    def on_result(result) -> None:  # before anything is written
        assert not result.saved and not (workspace_path / "labels" / PREDICTION).exists()
        seen.append(result)

    result = run_slide_segmentation(slide.ome_zarr, SlideRequest(str(slide_model), device="cpu",
                                                                  workspace=workspace_path), on_result=on_result)
    assert seen == [result] and result.saved and result.save_seconds > 0
    workspace = Workspace.open(workspace_path, mode="r")
    stored = workspace.labels(PREDICTION)
    assert [level.shape for level in result.label_levels] == [level.shape for level in stored.levels]
    for lazy, level in zip(result.label_levels, stored.levels):
        np.testing.assert_array_equal(np.asarray(lazy), np.asarray(level[:]))
    # a region of level 0 and of level 1, as napari asks for them
    np.testing.assert_array_equal(result.label_levels[0][300:700, 1000:1900], np.asarray(stored.levels[0][300:700, 1000:1900]))
    maps, _, codes = workspace.probability_pyramid()
    for k, code in enumerate(codes):
        for lazy, level in zip(result.probability_levels[code], maps.levels):
            np.testing.assert_array_equal(np.asarray(lazy), np.asarray(level[k]))
    assert workspace.provenance["run_id"] == result.run_id


def test_save_false_writes_nothing_and_a_cancelled_save_keeps_the_previous_run(slide, slide_model, tmp_path) -> None:
    workspace_path = tmp_path / "kept.m2mrf.zarr"
    _run(slide, slide_model, workspace_path)
    before = Workspace.open(workspace_path, mode="r")
    stored = [np.asarray(level[:]) for level in before.labels(PREDICTION).levels]
    provenance = before.provenance
    other = save_slide_model(tmp_path / "other.safetensors", seed=7)
    lazy = run_slide_segmentation(slide.ome_zarr, SlideRequest(str(other), device="cpu", workspace=workspace_path),
                                  save=False)
    assert not lazy.saved and Workspace.open(workspace_path, mode="r").provenance == provenance
    from napari_m2mrf.inference.slide import save_slide_result

    token = CancelToken()

    def progress(done: int, total: int, message: str) -> None:
        if message.startswith("reverse mapping"):  # level 0 of the new prediction half-way
            token.set()

    with pytest.raises(Cancelled):
        save_slide_result(lazy, progress, token)
    after = Workspace.open(workspace_path, mode="r")
    for level, old in zip(after.labels(PREDICTION).levels, stored):
        np.testing.assert_array_equal(np.asarray(level[:]), old)
    assert after.provenance == provenance and not lazy.saved
    assert not [p for p in workspace_path.rglob(".*") if ".tmp-" in p.name]
