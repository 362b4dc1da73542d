"""Bad inputs fed to the widgets in ONE real viewer: Segment (a bad checkpoint file, an image layer of an
odd pixel type), Train (a dataset folder whose mask has the wrong size), Correct and Metrics (labels
layers of the wrong type or shape). Each ends in one notification (or the widget's status line) that
is a clear message, never a traceback or a "failed: <exception>" line; no layer is added; the viewer
stays usable (a layer added afterwards shows); and nothing is written in the inputs' folders.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs import CASES  # noqa: E402
from test_bad_inputs import snapshot  # noqa: E402


def _case(name: str, folder: Path):
    item = next(item for item in CASES if item.name == name)
    folder.mkdir(parents=True)
    return item.make(folder)


def _clear(message: str) -> None:
    assert message and "Traceback" not in message and "\n" not in message.strip(), message
    assert not message.startswith("failed:") and "segmentation failed" not in message, message


@pytest.mark.timeout(600)
def test_widgets_report_bad_inputs_and_the_viewer_stays_usable(make_napari_viewer, qtbot, tmp_path, monkeypatch) -> None:
    from gui_timing import wait_until_ready
    from napari.utils.notifications import notification_manager

    from napari_m2mrf._samples import fundus_labels_layer
    from napari_m2mrf.models import build_model, fundus_metadata, save_checkpoint
    from napari_m2mrf.widgets.correct import CorrectWidget
    from napari_m2mrf.widgets.metrics_widget import LABELS_PREFIX, MetricsWidget
    from napari_m2mrf.widgets.segment import CHECKPOINT_FILE, REGION_WHOLE, SegmentWidget
    from napari_m2mrf.widgets.train_widget import FROM_FOLDER, TrainWidget

    monkeypatch.setenv("NAPARI_M2MRF_CACHE", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    received: list[str] = []
    notification_manager.notification_ready.connect(lambda n: received.append(str(n.message)))
    watched: dict[Path, dict] = {}  # each input's folder and its snapshot once made

    def new_message(widget, count: int) -> str:
        """The notification(s) since ``count``, else the widget's status line."""
        found = received[count:]
        return found[-1] if found else str(widget.status.value)

    # -- Segment: bad checkpoint files, then an image layer of an odd pixel type --------------------
    viewer.add_image(np.full((64, 80, 3), 90, np.uint8), name="fundus", rgb=True)
    segment = wait_until_ready(SegmentWidget(viewer))
    viewer.window.add_dock_widget(segment, name="Segment lesions")
    segment.device.value = "cpu"
    segment.region.value = REGION_WHOLE

    def run_segment() -> str:
        count = len(received)
        segment.run()  # an error found at once is notified here; a worker's reaches us through the event loop
        qtbot.waitUntil(lambda: segment.run_button.enabled, timeout=120_000)
        qtbot.wait(50)
        return new_message(segment, count)

    layers_before = [layer.name for layer in viewer.layers]
    for name in ("checkpoint_input_size_absurd", "checkpoint_transposed_tensor_shape", "checkpoint_num_classes_zero",
                 "pth_reduce_opens_marker", "checkpoint_truncated_at_90_percent"):
        path, _ = _case(name, tmp_path / name)
        watched[tmp_path / name] = snapshot(tmp_path / name)
        segment.model.value = CHECKPOINT_FILE
        segment.checkpoint.value = path
        message = run_segment()
        _clear(message)
        assert path.name in message or name.split("_", 1)[1].split("_")[0] in message, (name, message)
        assert [layer.name for layer in viewer.layers] == layers_before, name
    assert not list(tmp_path.rglob("code_ran.marker"))

    good = tmp_path / "good" / "small.safetensors"  # a sound (untrained) checkpoint: the image layer is the problem
    good.parent.mkdir()
    save_checkpoint(good, build_model("hrnetv2_w18s", num_classes=4),
                    {**fundus_metadata("idrid", {"weights": "untrained"}), "input_size": [64, 80]})
    segment.model.value = CHECKPOINT_FILE
    segment.checkpoint.value = good
    for name, data, rgb in (
        ("int32 negative", np.full((64, 80), -5, np.int32), False),
        ("float64 out of range", np.full((64, 80, 3), 7e5, np.float64), True),
        ("nan", np.full((64, 80, 3), np.nan, np.float32), True),
        ("five channels", np.zeros((64, 80, 5), np.uint8), False),
    ):
        layer = viewer.add_image(data, name=f"odd {name}", rgb=rgb)
        segment.reset_choices()
        segment.image.value = layer
        before = [layer.name for layer in viewer.layers]
        message = run_segment()
        _clear(message)
        assert [layer.name for layer in viewer.layers] == before, name
        viewer.layers.remove(layer)

    # -- Train: a dataset folder whose mask does not fit its image -----------------------------------
    _, context = _case("dataset_mask_size_mismatch", tmp_path / "dataset_case")
    watched[tmp_path / "dataset_case"] = snapshot(tmp_path / "dataset_case")
    train = wait_until_ready(TrainWidget(viewer))
    viewer.window.add_dock_widget(train, name="Train")
    train.source.value = FROM_FOLDER
    train.folder.value = context["gt"]
    train.layout_kind.value = next(choice for choice in train.layout_kind.choices if "folder" in str(choice).lower())
    train.iterations.value, train.batch_size.value, train.device.value = 1, 1, "cpu"
    count = len(received)
    train.start()
    assert train.process is not None, train.status.value
    with qtbot.waitSignal(train.process.finished, timeout=300_000):
        pass
    message = new_message(train, count)
    _clear(message.removeprefix("training failed: "))
    assert "training failed" in message and "32" in message, message  # the mask's size, from the data check
    assert train.start_button.enabled

    # -- Correct and Metrics: labels layers of the wrong type or shape -------------------------------
    correct = CorrectWidget(viewer)
    viewer.window.add_dock_widget(correct, name="Correct")
    metrics = MetricsWidget(viewer)
    viewer.window.add_dock_widget(metrics, name="Metrics")
    data, kwargs, _ = fundus_labels_layer(np.zeros((64, 80), np.uint8), "ground truth")
    viewer.add_labels(data, **kwargs)
    odd_layers = [
        viewer.add_labels(np.zeros((5, 64, 80), np.uint8), name="stack"),
        viewer.add_labels(np.full((64, 80), 70_000, np.int64), name="wide values"),
        viewer.add_labels(np.zeros((32, 40), np.uint8), name="half size"),
    ]
    for layer in odd_layers:
        correct.reset_choices()
        correct.layer.value = layer
        count = len(received)
        correct.remove_small()
        _clear(new_message(correct, count))
        metrics.reset_choices()
        metrics.prediction.value = LABELS_PREFIX + layer.name
        metrics.ground_truth.value = "ground truth"
        count = len(received)
        metrics.compute()
        if metrics.status.value == "computing…":
            qtbot.waitUntil(lambda: metrics.status.value != "computing…", timeout=60_000)
        _clear(new_message(metrics, count))

    # -- still usable, nothing written ---------------------------------------------------------------
    layer = viewer.add_image(np.zeros((32, 32), np.uint8), name="after")
    assert viewer.layers[-1] is layer and layer.data.shape == (32, 32)
    for folder, before in watched.items():
        assert snapshot(folder) == before, folder
    assert not list(tmp_path.rglob("code_ran.marker"))
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".zarr",) and os.path.isdir(p)], "a workspace was written"
