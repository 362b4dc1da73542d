"""The bundled slide model (learned deformed downsampling): shipped small in the package data, with
the config that retrains it, the report that it beats the uniform sampler, and a fixed output."""

from __future__ import annotations

import configparser
import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from napari_m2mrf.catalog import (
    BUNDLED_DIR,
    bundled_models,
    resolve_model,
)
from napari_m2mrf.models.deform import DeformedSampler, DeformedSegmenter
from training.config import TrainingConfig, load_config

SLIDE_MODEL = "slide_deformed_w18s"


@pytest.fixture(scope="module")
def bundled() -> tuple[DeformedSegmenter, dict]:
    return resolve_model(SLIDE_MODEL)


def test_slide_model_ships_small_in_the_package_data() -> None:
    path = bundled_models()[SLIDE_MODEL]
    assert path.parent == BUNDLED_DIR and path.stat().st_size < 5 * 2**20
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    patterns = parser["options.package_data"]["sample_data"].split()
    for shipped in (path, BUNDLED_DIR / f"{SLIDE_MODEL}.yaml"):
        relative = shipped.relative_to(REPO_ROOT / "sample_data").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_slide_model_is_the_config_it_ships_with(bundled) -> None:
    model, meta = bundled
    config = load_config(BUNDLED_DIR / f"{SLIDE_MODEL}.yaml")
    assert isinstance(model, DeformedSegmenter) and isinstance(model.sampler, DeformedSampler)
    assert meta["weights_dtype"] == "int8" and meta["arch"] == config.model.name
    assert meta["deformed"]["output_size"] == config.deform.output_size
    assert meta["deformed"]["density_size"] == config.deform.density_size
    assert meta["deformed"]["sigma"] == config.deform.sigma and meta["output"] == "softmax"
    assert [c["name"] for c in meta["classes"][1:]] == config.data.classes
    provenance = meta["provenance"]
    # the config the model was trained with, read by today's schema (options added since take their defaults)
    assert TrainingConfig.from_dict(provenance["config"]).to_dict() == config.to_dict()
    assert provenance["trained_iterations"] == config.run.iterations


def test_report_in_the_metadata_says_deformed_beats_uniform_at_the_same_budget(bundled) -> None:
    _, meta = bundled
    report = meta["provenance"]["report"]
    deformed, uniform = report["runs"]["deformed"], report["runs"]["uniform"]
    assert report["deformed_beats_uniform"]
    assert deformed["segmentation"]["miou_lesions"] > uniform["segmentation"]["miou_lesions"]
    assert set(deformed["segmentation"]["iou"]) == {"background", "tumour", "vessel", "necrosis"}
    # the shipped int8 weights keep the lead
    assert report["bundled_int8"]["miou_lesions"] > uniform["segmentation"]["miou_lesions"]
    assert len(report["test_slides"]) >= 1


def test_output_on_the_fixed_input_is_the_recorded_one(bundled) -> None:
    from training.recipes.slide_model_report import reference_input

    model, meta = bundled
    recorded = meta["provenance"]["reference_output"]
    with torch.no_grad():
        output = model(reference_input())
    np.testing.assert_allclose(output.logits[0].mean(dim=(1, 2)).numpy(), recorded["logits_mean"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(output.grid[0].mean(dim=(0, 1)).numpy(), recorded["grid_mean"], atol=1e-4)
    counts = torch.bincount(output.logits[0].argmax(dim=0).reshape(-1), minlength=output.logits.shape[1])
    np.testing.assert_allclose(counts.numpy(), recorded["label_counts"], atol=0.002 * counts.sum().item())


def test_slide_model_segments_a_generated_slide(tmp_path: Path) -> None:
    from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation
    from sample_data.slide_sample import generate_slide

    slide = generate_slide(tmp_path / "slide", size=2048, seed=5)
    request = SlideRequest(model=SLIDE_MODEL, device="cpu", workspace=tmp_path / "slide.m2mrf.zarr", workers=1)
    notices: list[str] = []
    result = run_slide_segmentation(slide.ome_zarr, request, notify=notices.append)
    # 512 µm of slide (2048 px at 0.25 µm) at the 64 µm per sample of training would be 8×8 samples:
    # the grid is held at half the model's 128×128 per side, and the user told the scale is far off
    assert result.labels.shape == (64, 64) and set(np.unique(result.labels)) <= {0, 1, 2, 3}
    assert result.points.shape == (64, 64, 2) and result.grid.choice == "clamped"
    assert len(notices) == 1 and "finer than the 64 µm the model was trained at" in notices[0]
    assert result.points.min() >= -0.5 and result.points.max() <= 2047.5
    assert result.density.shape == (256, 256) and result.density.sum() == pytest.approx(1.0, rel=1e-3)
    # the learned sampler is not the uniform grid: it gathers samples somewhere
    assert result.relative_density.max() > 1.5
