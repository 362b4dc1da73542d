"""Progress never goes backwards: StagedProgress itself, and real fundus and slide jobs reporting through it.

A job's reports are checked as they arrive (every fraction at least the one before, the last one 1) and
the job must not lean on the clamp: ``napari_m2mrf.jobs`` logs each report it had to hold back."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from napari_m2mrf.inference.segment_job import TILES, SegmentRequest, run_segmentation
from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation
from napari_m2mrf.jobs import PROGRESS_SCALE, CancelToken, Cancelled, StagedProgress
from sample_data.slide_sample import generate_slide


class Recorder:
    """A progress callback that keeps every ``done/total``."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.messages: list[str] = []

    def __call__(self, done: int, total: int, message: str) -> None:
        self.fractions.append(done / max(total, 1))
        self.messages.append(message)

    def assert_monotonic(self, at_least: int) -> None:
        steps = np.diff(self.fractions)
        assert (steps >= 0).all(), f"went back at report {int(np.argmin(steps)) + 1}: {self.messages}"
        assert self.fractions[-1] == 1.0 and len(set(self.fractions)) >= at_least, self.fractions


def _held_back(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "napari_m2mrf.jobs" and "would go back" in r.getMessage()]


def test_staged_progress_maps_stages_onto_one_bar_and_holds_it() -> None:
    seen = Recorder()
    step = StagedProgress({"load": 1, "work": 3}, seen)
    step("load", 1, 2, "half loaded")
    step("work", 2, 4, "half done")
    step("load", 0, 1, "an earlier stage again")  # out of order: held, counted
    step("work", 1, 4, "less done")  # a shrinking done: held, counted
    step.finish()
    assert seen.fractions == [0.125, 0.625, 0.625, 0.625, 1.0] and step.held_back == 2
    with pytest.raises(ValueError):
        StagedProgress({}, seen)
    cancel = CancelToken()
    cancel.set()
    with pytest.raises(Cancelled):
        StagedProgress({"a": 1}, seen, cancel)("a", 0, 1, "")
    assert PROGRESS_SCALE == 1000


def test_a_tiled_fundus_run_reports_every_tile_and_never_goes_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="napari_m2mrf.jobs")
    image = np.random.default_rng(0).integers(0, 255, (320, 480, 3), dtype=np.uint8)
    seen = Recorder()
    request = SegmentRequest(model="fundus_m2mrf_w18s", device="cpu", mode=TILES, tile=160, overlap=32)
    run_segmentation(image, request, progress=seen)
    seen.assert_monotonic(at_least=6)  # model, 6+ tiles, done
    assert _held_back(caplog) == []


def test_a_whole_image_run_reports_the_forward_pass_layer_by_layer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="napari_m2mrf.jobs")
    image = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    seen = Recorder()
    run_segmentation(image, SegmentRequest(model="fundus_m2mrf_w18s", device="cpu"), progress=seen)
    seen.assert_monotonic(at_least=20)  # one forward pass, reported as it reaches the layers
    assert any(message.startswith("layer ") for message in seen.messages) and _held_back(caplog) == []


def test_a_slide_run_and_its_save_never_go_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="napari_m2mrf.jobs")
    slide = generate_slide(tmp_path / "slide", size=2048, seed=4)
    seen = Recorder()
    run_slide_segmentation(slide.ome_zarr, SlideRequest(model="slide_deformed_w18s", device="cpu",
                                                        workspace=tmp_path / "run.m2mrf.zarr"), progress=seen)
    seen.assert_monotonic(at_least=8)  # model, density, sampling, segment, probability and label blocks
    assert _held_back(caplog) == []
