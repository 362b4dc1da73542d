"""``napari-m2mrf predict``: one workspace per input, IDRiD masks, and the same outputs serially and on a
2-worker dask LocalCluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_m2mrf.io.idrid_masks import read_idrid_mask
from napari_m2mrf.io.workspace import Workspace
from napari_m2mrf.models import build_model, fundus_metadata, save_checkpoint
from sample_data.fundus_samples import write_fundus_dataset

CLI = str(Path(sys.executable).with_name("napari-m2mrf"))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) HRNetV2-W18-small checkpoint that runs the images at 256 px."""
    path = tmp_path_factory.mktemp("model") / "w18s.safetensors"
    meta = {**fundus_metadata("idrid", {"purpose": "test"}), "input_size": [256, 256]}
    save_checkpoint(path, build_model("hrnetv2_w18s", num_classes=4), meta)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_fundus_dataset(tmp_path_factory.mktemp("data"), 4, seed=3, scale=0.5)
    return root / "1. Original Images" / "a. Training Set"


def _predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "predict", *args], capture_output=True, text=True, timeout=600)


def _outputs(out: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for workspace_path in sorted(out.glob("*.m2mrf.zarr")):
        workspace = Workspace.open(workspace_path, mode="r")
        arrays[workspace_path.name] = np.asarray(workspace.labels("prediction").levels[0])
        arrays[workspace_path.name + ":probabilities"] = np.asarray(workspace.probabilities()[0])
    return arrays


def test_one_workspace_and_mask_set_per_input(small_model: Path, images: Path, tmp_path: Path) -> None:
    result = _predict(str(images), "--model", str(small_model), "--out", str(tmp_path / "out"), "--masks", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    for summary in lines:
        workspace = Workspace.open(summary["workspace"], mode="r")
        assert workspace.has_image and "prediction" in workspace.label_names()
        assert workspace.provenance["model"] == str(small_model)
        labels = np.asarray(workspace.labels("prediction").levels[0])
        stem = Path(summary["input"]).stem
        for code, value in (("EX", 1), ("HE", 2), ("SE", 3), ("MA", 4)):
            np.testing.assert_array_equal(read_idrid_mask(tmp_path / "out" / "masks" / f"{stem}_{code}.tif"), labels == value)


def test_probability_maps_are_scored_by_evaluate(small_model: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _predict(str(images), "--model", str(small_model), "--out", str(out), "--probability-maps")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((out / "probabilities").glob("*_MA.tif"))) == 4
    dataset_root = images.parents[1]
    scored = subprocess.run(
        [CLI, "evaluate", str(out / "probabilities"), str(dataset_root), "--format", "json"],
        capture_output=True, text=True, timeout=300,
    )
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads(scored.stdout)["metrics"]
    assert metrics["images"] == 4 and set(metrics["per_class"]) == {"EX", "HE", "SE", "MA"}


def test_8_bit_probability_maps_score_as_the_float_probabilities_do() -> None:
    from napari_m2mrf.classes import FUNDUS_CLASSES
    from napari_m2mrf.inference.batch import probability_codes
    from napari_m2mrf.metrics import LesionMetrics

    np.testing.assert_array_equal(probability_codes(np.array([0.0, 1e-9, 0.001, 0.1, 0.5, 0.9999, 1.0])), [0, 1, 1, 26, 128, 255, 255])
    rng = np.random.default_rng(0)  # most background and a fifth of the lesions below 0.002, as a sigmoid's map
    truth = rng.random((4, 200, 200)) < 0.05
    probabilities = np.where(truth, rng.beta(2, 1, truth.shape), rng.beta(1, 8, truth.shape) ** 4).astype(np.float32)
    probabilities[truth & (rng.random(truth.shape) < 0.2)] = 1e-4
    scores = {}
    for name, maps in (("float", probabilities), ("8-bit", probability_codes(probabilities) / np.float32(255))):
        metrics = LesionMetrics(FUNDUS_CLASSES)
        metrics.update(maps, truth)
        scores[name] = metrics.compute()["mean"]["aupr_official_11pt"]
    assert scores["8-bit"] == pytest.approx(scores["float"], abs=0.005)
    naive = LesionMetrics(FUNDUS_CLASSES)  # plain rounding drops every p < 0.002 from the first threshold
    naive.update(np.round(probabilities * 255) / 255, truth)
    assert naive.compute()["mean"]["aupr_official_11pt"] < scores["float"] - 0.02


def test_two_dask_workers_give_the_serial_outputs(small_model: Path, images: Path, tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    serial = _predict(str(images), "--model", str(small_model), "--out", str(tmp_path / "serial"))
    parallel = _predict(str(images), "--model", str(small_model), "--out", str(tmp_path / "dask"), "--workers", "2")
    assert serial.returncode == 0 and parallel.returncode == 0, parallel.stderr[-2000:]
    expected, got = _outputs(tmp_path / "serial"), _outputs(tmp_path / "dask")
    assert len(expected) == 8 and expected.keys() == got.keys()
    for key in expected:
        if key.endswith(":probabilities"):
            np.testing.assert_allclose(got[key].astype(np.float32), expected[key].astype(np.float32), atol=1e-3)
        else:
            assert (got[key] == expected[key]).mean() > 0.9999


def test_thresholds_calibrated_in_the_checkpoint_are_the_default(images: Path, tmp_path: Path) -> None:
    network = build_model("hrnetv2_w18s", num_classes=4)
    with torch.no_grad():  # the same probabilities everywhere: EX 0.5, HE 0.73, SE 0.27, MA 0.62
        network.head.classifier.weight.zero_()
        network.head.classifier.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    calibrated = {"EX": 0.01, "HE": 0.99, "SE": 0.99, "MA": 0.99}  # only EX passes its threshold
    model = tmp_path / "calibrated.safetensors"
    meta = {**fundus_metadata("idrid", {"purpose": "test"}), "input_size": [256, 256], "thresholds": calibrated}
    save_checkpoint(model, network, meta)
    image = str(sorted(images.iterdir())[0])
    default = _predict(image, "--model", str(model), "--out", str(tmp_path / "default"))
    given = _predict(image, "--model", str(model), "--out", str(tmp_path / "given"), "--thresholds", "0.9,0.5,0.5,0.5")
    assert default.returncode == 0 and given.returncode == 0, default.stderr[-2000:] + given.stderr[-2000:]
    assert "thresholds calibrated in" in default.stderr and "EX 0.01, HE 0.99, SE 0.99, MA 0.99" in default.stderr
    assert "calibrated" not in given.stderr
    default_labels, given_labels = (
        np.asarray(Workspace.open(next((tmp_path / out).glob("*.m2mrf.zarr"))).labels("prediction").levels[0])
        for out in ("default", "given")
    )
    assert (default_labels == 1).all()  # EX
    assert (given_labels == 2).all()  # HE, the most probable class above its threshold


def test_the_default_mode_uses_the_models_test_time_scales_and_their_thresholds(images: Path, tmp_path: Path) -> None:
    network = build_model("hrnetv2_w18s", num_classes=4)
    with torch.no_grad():  # the same probabilities everywhere and at every scale: EX 0.5, HE 0.73, SE 0.27, MA 0.62
        network.head.classifier.weight.zero_()
        network.head.classifier.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    model = tmp_path / "scales.safetensors"
    meta = {**fundus_metadata("idrid", {"purpose": "test"}), "input_size": [256, 256],
            "thresholds": {"EX": 0.01, "HE": 0.99, "SE": 0.99, "MA": 0.99},  # one pass: EX
            "test_time": {"scales": {"MA": [1.0, 1.5], "HE": [0.75]}, "thresholds": {"EX": 0.99, "HE": 0.6}}}  # scales: HE
    save_checkpoint(model, network, meta)
    image = str(sorted(images.iterdir())[0])
    default = _predict(image, "--model", str(model), "--out", str(tmp_path / "default"))
    whole = _predict(image, "--model", str(model), "--out", str(tmp_path / "whole"), "--mode", "whole")
    assert default.returncode == 0 and whole.returncode == 0, default.stderr[-2000:] + whole.stderr[-2000:]
    assert "EX 0.99, HE 0.6, SE 0.99, MA 0.99" in default.stderr and "EX 0.01, HE 0.99" in whole.stderr
    default_ws, whole_ws = (Workspace.open(next((tmp_path / out).glob("*.m2mrf.zarr"))) for out in ("default", "whole"))
    assert (np.asarray(default_ws.labels("prediction").levels[0]) == 2).all()  # HE
    assert (np.asarray(whole_ws.labels("prediction").levels[0]) == 1).all()  # EX
    provenance = json.dumps(default_ws.provenance)
    assert '"mode": "scales"' in provenance and '"MA": [1.0, 1.5]' in provenance and '"HE": [0.75]' in provenance


@pytest.mark.parametrize(
    "args, message",
    [
        (("MISSING", "--model", "hrnetv2_w18s", "--out", "OUT"), "no such file"),
        (("IMAGES", "--model", "no_such_model", "--out", "OUT"), "unknown model"),
        (("IMAGES", "--model", "fundus_m2mrf_w18s", "--out", "OUT", "--thresholds", "0.5,2"), "--thresholds"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(images: Path, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    mapping = {"MISSING": str(tmp_path / "missing.jpg"), "IMAGES": str(images), "OUT": str(tmp_path / "out")}
    result = _predict(*[mapping.get(a, a) for a in args])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
