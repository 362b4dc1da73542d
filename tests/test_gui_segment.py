"""The Segment widget on a real napari viewer: runs off the GUI thread, shows results, keeps corrections,
cancels promptly, and reports bad input as notifications."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
import pytest

pytestmark = pytest.mark.gui
pytest.importorskip("napari_m2mrf.models.registry")

from gui_timing import cancel_and_time, event_loop_ticks, wait_for_segment_run, wait_until_ready  # noqa: E402

from napari_m2mrf.models.outputs import probabilities_to_labels  # noqa: E402
from napari_m2mrf.models import build_model, fundus_metadata, save_checkpoint  # noqa: E402
from napari_m2mrf.widgets.segment import (  # noqa: E402
    CHECKPOINT_FILE,
    REGION_SCALES,
    REGION_SHAPES,
    REGION_TILES,
    REGION_WHOLE,
    SegmentWidget,
)

SMALL_MODEL = "hrnetv2_w18s"  # an untrained architecture: the widget runs it from a checkpoint file only


@functools.cache
def small_checkpoint() -> Path:
    """The untrained SMALL_MODEL with the official IDRiD settings and no calibration, as a checkpoint file
    (the Segment widget offers bundled and trained models, not bare architectures)."""
    path = Path(tempfile.mkdtemp(prefix="m2mrf-untrained-")) / f"{SMALL_MODEL}.safetensors"
    torch.manual_seed(0)  # the same untrained weights in every run: the region test counts their output
    save_checkpoint(path, build_model(SMALL_MODEL, num_classes=4), fundus_metadata("idrid", {"weights": "untrained"}))
    return path


def _fundus_like(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 170
    image[..., 1] = 70
    image[..., 2] = 20
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def _widget(viewer, image: np.ndarray) -> SegmentWidget:
    viewer.add_image(image, name="fundus", rgb=True)
    widget = wait_until_ready(SegmentWidget(viewer))
    viewer.window.add_dock_widget(widget, name="Segment lesions")
    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = small_checkpoint()
    widget.device.value = "cpu"
    return widget


def _run_and_wait(widget: SegmentWidget, qtbot, timeout_ms: int = 120_000) -> None:
    widget.run()
    wait_for_segment_run(qtbot, widget, timeout_ms)


def test_whole_image_run_adds_lesions_and_hidden_probabilities(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    widget = _widget(viewer, _fundus_like(200, 300))
    widget.region.value = REGION_WHOLE
    _run_and_wait(widget, qtbot)
    lesions = viewer.layers["lesions"]
    assert lesions.data.shape == (200, 300) and lesions.data.dtype == np.uint8
    assert list(lesions.features["class"]) == ["background", "EX", "HE", "SE", "MA"]
    for code in ("EX", "HE", "SE", "MA"):
        layer = viewer.layers[f"{code} probability"]
        assert not layer.visible and layer.data.shape == (200, 300)
        assert 0.0 <= float(layer.data.min()) and float(layer.data.max()) <= 1.0


def test_test_time_scales_region_runs_each_class_at_its_scales_with_their_thresholds(make_napari_viewer, qtbot, tmp_path) -> None:
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing

    torch.manual_seed(0)
    network = build_model(SMALL_MODEL, num_classes=4)
    test_time = {"scales": {"EX": [1.5], "MA": [0.75, 1.0]}, "thresholds": {"EX": 0.42, "MA": 0.37}}
    meta = {**fundus_metadata("idrid", {"weights": "untrained"}), "input_size": [192, 128],
            "thresholds": {"EX": 0.21, "HE": 0.3}, "test_time": test_time}
    path = tmp_path / "scales.safetensors"
    save_checkpoint(path, network, meta)
    viewer = make_napari_viewer()
    image = _fundus_like(120, 180)
    widget = _widget(viewer, image)
    widget.checkpoint.value = path
    widget.region.value = REGION_WHOLE
    assert [round(spin.value, 2) for spin in widget.thresholds] == [0.21, 0.3, 0.5, 0.5]
    widget.region.value = REGION_SCALES
    assert [round(spin.value, 2) for spin in widget.thresholds] == [0.42, 0.3, 0.5, 0.37]
    _run_and_wait(widget, qtbot)
    predictor = FundusPredictor(network.eval(), Preprocessing.from_meta(meta), "cpu")
    expected = predictor.predict_whole(image, class_scales=[(1.5,), (1.0,), (1.0,), (0.75, 1.0)])
    for k, code in enumerate(("EX", "HE", "SE", "MA")):
        np.testing.assert_allclose(np.asarray(viewer.layers[f"{code} probability"].data), expected[k], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(viewer.layers["lesions"].data),
                                  probabilities_to_labels(expected, (0.42, 0.3, 0.5, 0.37)))


def test_running_again_replaces_results_but_keeps_corrections(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    widget = _widget(viewer, _fundus_like(160, 160))
    _run_and_wait(widget, qtbot)
    lesions = viewer.layers["lesions"]
    first_prediction = np.asarray(lesions.data).copy()
    lesions.selected_label = 2
    lesions.brush_size = 10
    lesions.paint((50, 60), 2, refresh=True)
    lesions.paint((100, 100), 3, refresh=True)
    corrected = np.asarray(lesions.data).copy()
    edited = corrected != first_prediction
    assert edited.sum() > 20
    layer_count = len(viewer.layers)
    widget.thresholds[0].value = 0.99  # a different prediction
    _run_and_wait(widget, qtbot)
    assert len(viewer.layers) == layer_count, "a second run must replace its own layers, not add more"
    assert viewer.layers["lesions"] is lesions
    np.testing.assert_array_equal(np.asarray(lesions.data)[edited], corrected[edited])


def test_shapes_region_segments_only_inside_the_drawn_rectangle(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    widget = _widget(viewer, _fundus_like(256, 256))
    viewer.add_shapes([np.array([[20, 30], [20, 130], [100, 130], [100, 30]])], shape_type="rectangle", name="roi")
    widget.reset_choices()
    widget.region.value = REGION_SHAPES
    widget.shapes.value = viewer.layers["roi"]
    widget.thresholds[0].value = 0.01  # mark (almost) everything computed as EX
    for spin in widget.thresholds[1:]:
        spin.value = 0.99
    _run_and_wait(widget, qtbot)
    labels = np.asarray(viewer.layers["lesions"].data)
    outside = np.ones_like(labels, bool)
    outside[20:101, 30:131] = False
    assert labels[outside].max() == 0
    assert (labels[20:101, 30:131] > 0).mean() > 0.5


def test_gui_stays_responsive_while_running_and_cancel_stops_within_two_seconds(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    widget = _widget(viewer, _fundus_like(1024, 1024))
    widget.region.value = REGION_TILES
    widget.tile.value = 128
    with event_loop_ticks() as ticks:
        widget.run()
        # at least 3 tiles done and 0.3 s of event-loop ticks, however fast this machine runs the model
        qtbot.waitUntil(lambda: widget.progress.value >= 3 and len(ticks) > 30, timeout=120_000)
        stalls = np.diff(ticks)
        stopped_after = cancel_and_time(qtbot, widget)
    assert stalls.max() <= 0.100, f"the event loop stalled for {stalls.max() * 1000:.0f} ms while the model ran"
    assert stopped_after <= 2.0
    assert "lesions" not in viewer.layers, "a cancelled run must not add results"
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_missing_checkpoint_file_is_a_notification_not_a_crash(make_napari_viewer, qtbot, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = _widget(viewer, _fundus_like(64, 64))
    widget.model.value = "checkpoint file…"
    widget.checkpoint.value = tmp_path / "missing.safetensors"
    _run_and_wait(widget, qtbot)
    assert "not found" in widget.status.value
    assert "lesions" not in viewer.layers


def test_threshold_boxes_start_at_the_thresholds_calibrated_in_the_checkpoint(
    make_napari_viewer, qtbot, tmp_path
) -> None:
    calibrated = {"EX": 0.35, "HE": 0.6, "MA": 0.2}
    checkpoint = tmp_path / "calibrated.safetensors"
    meta = {**fundus_metadata("idrid"), "input_size": [128, 128], "thresholds": calibrated}
    save_checkpoint(checkpoint, build_model(SMALL_MODEL, num_classes=4), meta)
    viewer = make_napari_viewer()
    widget = _widget(viewer, _fundus_like(96, 96))
    assert [spin.value for spin in widget.thresholds] == [0.5] * 4  # an untrained registry model: no calibration
    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = checkpoint
    assert [spin.label for spin in widget.thresholds] == ["EX threshold", "HE threshold", "SE threshold", "MA threshold"]
    assert [spin.value for spin in widget.thresholds] == [0.35, 0.6, 0.5, 0.2]
    assert all(spin.enabled for spin in widget.thresholds) and "sigmoid" in widget.thresholds[0].tooltip
    _run_and_wait(widget, qtbot)
    probabilities = np.stack([viewer.layers[f"{code} probability"].data for code in ("EX", "HE", "SE", "MA")])
    np.testing.assert_array_equal(viewer.layers["lesions"].data, probabilities_to_labels(probabilities, [0.35, 0.6, 0.5, 0.2]))
    widget.checkpoint.value = small_checkpoint()  # back to a model without calibration
    assert [spin.value for spin in widget.thresholds] == [0.5] * 4
