"""Long runs (marker ``soak``, skipped unless asked for with ``-m soak``): nothing grows.

* The Segment widget run 50 times in a row in one viewer: after a warm-up the process's resident
  memory grows by less than 5 %, and the threads, the widget's workers and the viewer's layers are
  where they were (each run replaces its results).
* 2,000 CPU training iterations of a tiny config: after a warm-up resident memory grows by less than
  5 % (measured at every event, from a thread of this process).

Each prints its figures (RSS at the start and end in MiB, threads) for the record; both take a few
minutes on two cores: ``pytest tests/test_soak.py -m soak -s``.
"""

from __future__ import annotations

import gc
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.soak

psutil = pytest.importorskip("psutil")

GROWTH = 0.05


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def mib(value: int) -> str:
    return f"{value / 2**20:.1f} MiB"


@pytest.mark.gui
@pytest.mark.timeout(3600)
def test_segment_widget_50_runs_keep_memory_threads_and_layers_flat(make_napari_viewer, qtbot, tmp_path) -> None:
    import torch

    from gui_timing import wait_for_segment_run, wait_until_ready
    from napari_m2mrf.models import build_model, fundus_metadata, save_checkpoint
    from napari_m2mrf.widgets.segment import CHECKPOINT_FILE, REGION_WHOLE, SegmentWidget

    torch.set_num_threads(1)
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.integers(0, 255, (128, 160, 3), dtype=np.uint8), name="fundus", rgb=True)
    widget = wait_until_ready(SegmentWidget(viewer))
    viewer.window.add_dock_widget(widget, name="Segment lesions")
    checkpoint = tmp_path / "small.safetensors"  # an untrained HRNetV2-W18-small run at the image's own size
    meta = {**fundus_metadata("idrid", {"weights": "untrained"}), "input_size": [128, 160]}
    save_checkpoint(checkpoint, build_model("hrnetv2_w18s", num_classes=4), meta)
    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = checkpoint
    widget.device.value = "cpu"
    widget.region.value = REGION_WHOLE

    def run_once() -> None:
        widget.run()
        wait_for_segment_run(qtbot, widget)
        qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=30_000)

    warm_up, runs = 5, 50
    for _ in range(warm_up):
        run_once()
    qtbot.wait(200)
    start_rss, start_threads, start_layers = rss(), threading.active_count(), [layer.name for layer in viewer.layers]
    samples = []
    for _ in range(runs - warm_up):
        run_once()
        samples.append(rss())
    qtbot.wait(500)  # workers' threads end after their finished signal
    end_rss, end_threads, end_layers = rss(), threading.active_count(), [layer.name for layer in viewer.layers]
    growth = end_rss / start_rss - 1
    print(
        f"\nSegment widget, {runs} runs: RSS after {warm_up} warm-up runs {mib(start_rss)}, after {runs} {mib(end_rss)} "
        f"({100 * growth:+.2f} %), peak {mib(max(samples))}; threads {start_threads} -> {end_threads}; "
        f"layers {len(start_layers)} -> {len(end_layers)}"
    )
    assert growth < GROWTH, f"RSS grew {100 * growth:.1f} % over {runs - warm_up} runs"
    assert end_threads <= start_threads, threading.enumerate()
    assert end_layers == start_layers
    assert widget.run_button.enabled and not widget.cancel_button.enabled


TINY_CONFIG = {
    "data": {"kind": "generated", "generated_train": 2, "generated_val": 0, "classes": ["EX", "HE"]},
    "model": {"name": "hrnetv2_w18s", "options": {}, "sync_batchnorm": False},
    "augment": {"resize": [64, 64], "crop": [64, 64], "scale_range": [1.0, 1.0], "rotate90": True, "photometric": True},
    "optim": {"name": "sgd", "lr": 0.001},
    "run": {"iterations": 2000, "batch_size": 2, "device": "cpu", "amp": False, "checkpoint_every": 500, "threads": 1,
            "eval_every": 0},
}


@pytest.mark.timeout(7200)
def test_2000_cpu_training_iterations_keep_memory_flat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.config import TrainingConfig
    from training.loop import Trainer

    monkeypatch.setenv("NAPARI_M2MRF_CACHE", str(tmp_path / "cache"))
    values = json.loads(json.dumps(TINY_CONFIG))
    values["run"]["output_dir"] = str(tmp_path / "run")
    config = TrainingConfig.from_dict(values)
    warm_up = 200
    start_rss = end_rss = peak = 0
    start_threads = end_threads = 0
    iterations = 0
    for event in Trainer(config).run():
        iteration = getattr(event, "iteration", None)
        if type(event).__name__ != "IterationDone":
            continue
        iterations = iteration
        if iteration == warm_up:
            start_rss, start_threads = rss(), threading.active_count()
        elif iteration > warm_up and iteration % 100 == 0:
            peak = max(peak, rss())
    end_rss, end_threads = rss(), threading.active_count()
    growth = end_rss / start_rss - 1
    print(
        f"\nTraining, {iterations} CPU iterations: RSS at iteration {warm_up} {mib(start_rss)}, at the end {mib(end_rss)} "
        f"({100 * growth:+.2f} %), peak {mib(peak)}; threads {start_threads} -> {end_threads}; pid {os.getpid()}"
    )
    assert iterations == 2000
    assert growth < GROWTH, f"RSS grew {100 * growth:.1f} % over {iterations - warm_up} iterations"
    assert end_threads <= start_threads
