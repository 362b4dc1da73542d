"""Slides on a real napari viewer: open a pyramid, run a slide model from the Segment widget (the GUI
keeps answering), check the result layers, edit a region, write it back, reopen the workspace; cancel
a run; thresholds of sigmoid slide models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui
pytest.importorskip("napari_m2mrf.models.registry")

from gui_timing import cancel_and_time, event_loop_ticks, wait_until_ready  # noqa: E402
from slide_helpers import save_slide_model, small_slide  # noqa: E402

from napari_m2mrf.io.workspace import Workspace  # noqa: E402
from napari_m2mrf.widgets.segment import CHECKPOINT_FILE, SOFTMAX_TIP, SegmentWidget  # noqa: E402
from napari_m2mrf.widgets.slide_edit import EDIT_REGION, REGION_SHAPE, SlideEditWidget  # noqa: E402
from napari_m2mrf.widgets.slide_layers import (  # noqa: E402
    DEFORMATION,
    DEFORMED_IMAGE,
    DOTS,
    MAX_DOTS,
    UPDATE_THROTTLE_MS,
)
from napari_m2mrf.widgets.slide_run import CANCELLED, SAVED, SHOWN  # noqa: E402
from napari_m2mrf.widgets.view import camera  # noqa: E402
from napari_m2mrf.io.output_gate import output_lock  # noqa: E402

SLIDE_CODES = ("tumour", "vessel", "necrosis")
PROBABILITIES = [f"{code} probability" for code in SLIDE_CODES]


@pytest.fixture
def slide_viewer(make_napari_viewer, tmp_path):
    slide = small_slide(tmp_path / "slide")
    viewer = make_napari_viewer()
    viewer.open(str(slide.ome_zarr), plugin="napari-m2mrf")
    return viewer, slide, tmp_path


def _segment(viewer, model: str | Path) -> SegmentWidget:
    widget = wait_until_ready(SegmentWidget(viewer))
    viewer.window.add_dock_widget(widget, name="Segment lesions")
    widget.image.value = viewer.layers["slide"]
    if isinstance(model, Path):
        widget.model.value = CHECKPOINT_FILE
        widget.checkpoint.value = model
    else:
        widget.model.value = model
    widget.device.value = "cpu"
    return widget


def _stalls_outside(ticks: list[float], work: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Gaps between event-loop ticks that overlap none of the ``work`` intervals (napari adding or
    switching a layer, and its first draw), and those that do."""
    gaps = np.diff(ticks)
    starts = np.asarray(ticks[:-1])
    touches = np.array([any(a <= end and start <= b for start, end in work) for a, b in zip(starts, starts + gaps)],
                       dtype=bool)
    return gaps[~touches], gaps[touches]


def _where(ticks: list[float], run) -> str:
    """Where the long gaps were, in seconds after Run, beside the layer steps (for a failure message)."""
    gaps = np.diff(ticks)
    long = [(round(ticks[k] - run.started, 2), round(float(gaps[k]), 3)) for k in np.flatnonzero(gaps > 0.1)]
    steps = [(round(a - run.started, 2), round(b - a, 2)) for a, b in run.layer_work]
    return f"gaps (s after Run, s): {long}; layer steps: {steps}; timings {run.timings}"


def _run_and_wait(widget: SegmentWidget, qtbot) -> None:
    widget.run()
    with qtbot.waitSignal(widget.worker.finished, timeout=120_000):
        pass
    assert widget.status.value.startswith("done"), widget.status.value


def test_slide_run_shows_layers_and_a_region_edit_is_written_back(slide_viewer, qtbot) -> None:
    viewer, slide, tmp_path = slide_viewer
    slide_layer = viewer.layers["slide"]
    assert slide_layer.multiscale
    widget = _segment(viewer, save_slide_model(tmp_path / "slide_model.safetensors", output_size=(128, 128)))
    # a softmax model: one disabled threshold box per class, the tooltip says argmax
    assert [spin.label for spin in widget.thresholds] == [f"{code} threshold" for code in SLIDE_CODES]
    assert not any(spin.enabled for spin in widget.thresholds) and widget.thresholds[0].tooltip == SOFTMAX_TIP
    # ticks while the job runs; the result layers are added during the run now (lazy, one per event-loop
    # turn): napari's own creation of a layer (Qt controls, vispy visual, first draw) is measured apart
    with event_loop_ticks() as ticks:
        widget.run()
        with qtbot.waitSignal(widget.worker.finished, timeout=120_000):
            pass
    run = widget.slide_run
    ours, adding = _stalls_outside(ticks, run.layer_work)
    assert len(ours) >= 5, "the event loop must have ticked while the job ran (70 ticks on the 2-core VM)"
    assert ours.max() <= 0.100, (f"the event loop stalled for {ours.max() * 1000:.0f} ms during the slide run "
                                 f"({_where(ticks, run)})")
    # napari adding one layer (0.1-0.5 s at load 2, up to ~2 s at load 7 on the 2-core VM): a loose bound
    assert max(end - start for start, end in run.layer_work) <= 3.0, run.layer_work
    assert widget.status.value.startswith("done"), widget.status.value
    assert run.stage == SAVED and 0 < run.timings["labels_on_screen_s"] < run.timings["saved_s"]

    # result layers, aligned with the slide
    prediction = viewer.layers["prediction"]
    assert prediction.multiscale and prediction.level_shapes[0].tolist() == [2048, 2048]
    np.testing.assert_allclose(prediction.scale, slide_layer.scale)
    deformation = viewer.layers[DEFORMATION]
    assert deformation.data.shape == (32, 32) and not deformation.visible
    np.testing.assert_allclose(deformation.scale, np.asarray(slide_layer.scale) * 64)
    assert viewer.layers[DEFORMED_IMAGE].data.shape == (128, 128, 3)
    # hidden multiscale probability layers per class, from the workspace (128² samples 16 px apart: 8 px per pixel)
    for name in PROBABILITIES:
        layer = viewer.layers[name]
        assert layer.multiscale and not layer.visible and layer.level_shapes[0].tolist() == [256, 256]
        np.testing.assert_allclose(layer.scale, np.asarray(slide_layer.scale) * 8)
        np.testing.assert_allclose(layer.translate, np.asarray(slide_layer.translate) + np.asarray(slide_layer.scale) * 3.5)
        assert layer.contrast_limits == [0.0, 1.0] and 0.0 <= float(layer.data[0][100, 100]) <= 1.0
    dots = viewer.layers[DOTS]
    workspace = Workspace.open(slide.ome_zarr.parent / "slide.m2mrf.zarr", mode="r")
    samples = workspace.sampling_points()
    assert len(samples) == 128 * 128 and 0 < len(dots.data) <= MAX_DOTS
    assert "relative density" in dots.features
    # every drawn dot is a real sampling location
    drawn = {tuple(p) for p in np.round(dots.data, 3)}
    assert drawn <= {tuple(p) for p in np.round(samples, 3)}

    # zoomed in, every sample in view is drawn
    cam = camera(viewer)
    viewer.reset_view()
    cam.zoom *= 16
    cam.center = tuple(np.asarray(slide_layer.scale) * (1024, 1024))
    qtbot.waitUntil(lambda: "every sample in view" in dots.metadata["m2mrf"]["shown"], timeout=5_000)
    qtbot.wait(2 * UPDATE_THROTTLE_MS)
    # a pan by a level-0 pixel leaves the layer alone; a pan by half the slide re-selects
    drawn_now = dots.data
    cam.center = tuple(np.asarray(slide_layer.scale) * (1025, 1025))
    qtbot.wait(2 * UPDATE_THROTTLE_MS)
    assert dots.data is drawn_now
    cam.center = tuple(np.asarray(slide_layer.scale) * (300, 300))
    qtbot.waitUntil(lambda: dots.data is not drawn_now, timeout=5_000)
    assert {tuple(p) for p in np.round(dots.data, 3)} <= {tuple(p) for p in np.round(samples, 3)}

    # edit a rectangle of the prediction, paint, write back
    editor = SlideEditWidget(viewer)
    viewer.window.add_dock_widget(editor, name="Edit slide region")
    scale = np.asarray(slide_layer.scale)
    rectangle = np.array([[300, 400], [300, 700], [500, 700], [500, 400]]) * scale
    viewer.add_shapes([rectangle], shape_type="rectangle", name="roi")
    editor.reset_choices()
    editor.pyramid.value = prediction
    editor.region.value = REGION_SHAPE
    editor.shapes.value = viewer.layers["roi"]
    editor.edit_button.clicked.emit()
    region = viewer.layers[EDIT_REGION]
    assert not region.multiscale and region.data.shape == (201, 301)  # vertices inclusive, as the Segment widget
    np.testing.assert_allclose(region.translate, np.asarray(slide_layer.translate) + scale * (300, 400))
    before = np.asarray(workspace.labels("prediction").levels[0][300:501, 400:701])
    np.testing.assert_array_equal(region.data, before)
    region.selected_label, region.brush_size = 2, 40
    region.paint((70, 140), 2, refresh=True)  # a brush stroke of class 2
    editor.write_button.clicked.emit()
    with qtbot.waitSignal(editor.worker.finished, timeout=60_000):
        pass
    assert "wrote 201×301 px" in editor.status.value, editor.status.value
    assert viewer.layers["corrected"].multiscale

    # reopen the workspace from disk: the edit is in labels/corrected at level 0 and level 1
    reopened = Workspace.open(slide.ome_zarr.parent / "slide.m2mrf.zarr", mode="r")
    corrected = reopened.labels("corrected")
    assert (np.asarray(corrected.levels[0][358:382, 528:552]) == 2).all()
    assert (np.asarray(corrected.levels[1][180:190, 265:275]) == 2).all()
    np.testing.assert_array_equal(np.asarray(reopened.labels("prediction").levels[0][300:501, 400:701]), before)
    outside = np.asarray(corrected.levels[0][1000:1200, 1000:1200])
    np.testing.assert_array_equal(outside, np.asarray(reopened.labels("prediction").levels[0][1000:1200, 1000:1200]))


def test_running_a_slide_again_replaces_its_layers(slide_viewer, qtbot) -> None:
    viewer, _, tmp_path = slide_viewer
    widget = _segment(viewer, save_slide_model(tmp_path / "slide_model.safetensors"))
    for _ in range(2):
        widget.run()
        with qtbot.waitSignal(widget.worker.finished, timeout=120_000):
            pass
        assert widget.status.value.startswith("done"), widget.status.value
        names = [layer.name for layer in viewer.layers]
    assert sorted(names) == sorted(["slide", "ground_truth", "prediction", DEFORMATION, DEFORMED_IMAGE, DOTS,
                                    *PROBABILITIES])


def test_cancelling_a_slide_run_is_prompt_and_keeps_layers_and_workspace(slide_viewer, qtbot) -> None:
    viewer, slide, tmp_path = slide_viewer
    widget = _segment(viewer, save_slide_model(tmp_path / "first.safetensors"))
    widget.run()
    with qtbot.waitSignal(widget.worker.finished, timeout=120_000):
        pass
    assert widget.status.value.startswith("done"), widget.status.value
    layers = {layer.name: layer for layer in viewer.layers}
    shown = {name: np.asarray(layer.data[-1] if layer.multiscale else layer.data).copy()
             for name, layer in layers.items() if name != "slide"}
    workspace_path = slide.ome_zarr.parent / "slide.m2mrf.zarr"
    workspace = Workspace.open(workspace_path, mode="r")
    stored = (np.asarray(workspace.labels("prediction").levels[0][:]), workspace.sampling_points(),
              np.asarray(workspace.probability_pyramid()[0].levels[0][:]), workspace.provenance)

    # a longer run (256×256 samples) on another model, cancelled while the network runs
    widget.checkpoint.value = save_slide_model(tmp_path / "second.safetensors", output_size=(256, 256),
                                               density_size=(64, 64), seed=3)
    with event_loop_ticks() as ticks:
        widget.run()
        qtbot.waitUntil(lambda: widget.status.value.startswith("segmenting"), timeout=120_000)
        qtbot.wait(300)  # inside the network's forward pass, unless this machine ran it faster
        stalls = np.diff(ticks)
        stopped_after = cancel_and_time(qtbot, widget)
    cancelled_in_network = "labels_on_screen_s" not in widget.slide_run.timings  # no result reached the screen
    assert len(stalls) > 20
    assert stalls.max() <= 0.100, f"the event loop stalled for {stalls.max() * 1000:.0f} ms during the slide run"
    assert stopped_after <= 2.0, f"the slide run stopped {stopped_after:.1f} s after Cancel"
    assert not widget.cancel_button.enabled
    if cancelled_in_network:
        # nothing of the cancelled run reached the screen: the earlier run's layers, same objects and data
        assert "cancelled" in widget.status.value
        assert {layer.name: layer for layer in viewer.layers} == layers
        for name, data in shown.items():
            layer = viewer.layers[name]
            np.testing.assert_array_equal(np.asarray(layer.data[-1] if layer.multiscale else layer.data), data)
    else:
        # the new labels were already on screen (computed where one looks): they stay, not saved
        assert widget.slide_run.stage == CANCELLED
    # the workspace holds the earlier run, whole, and no leftovers of the cancelled one
    reopened = Workspace.open(workspace_path, mode="r")
    np.testing.assert_array_equal(np.asarray(reopened.labels("prediction").levels[0][:]), stored[0])
    np.testing.assert_array_equal(reopened.sampling_points(), stored[1])
    np.testing.assert_array_equal(np.asarray(reopened.probability_pyramid()[0].levels[0][:]), stored[2])
    assert reopened.provenance == stored[3]
    assert not [p for p in workspace_path.rglob(".*") if ".tmp-" in p.name]


def test_sigmoid_slide_model_uses_its_calibrated_thresholds(slide_viewer, qtbot) -> None:
    viewer, _, tmp_path = slide_viewer
    calibrated = {"tumour": 0.35, "necrosis": 0.7}
    # probabilities everywhere: tumour 0.5, vessel 0.73, necrosis 0.62
    model = save_slide_model(tmp_path / "sigmoid.safetensors", output="sigmoid", thresholds=calibrated,
                             constant_logits=[0.0, 1.0, 0.5])
    widget = _segment(viewer, model)
    assert [spin.value for spin in widget.thresholds] == [0.35, 0.5, 0.7]
    assert all(spin.enabled for spin in widget.thresholds) and "sigmoid" in widget.thresholds[0].tooltip
    _run_and_wait(widget, qtbot)
    assert (np.asarray(viewer.layers["prediction"].data[0]) == 2).all()  # vessel: most probable above its threshold
    for spin, value in zip(widget.thresholds, (0.01, 0.99, 0.99)):
        spin.value = value
    _run_and_wait(widget, qtbot)
    assert (np.asarray(viewer.layers["prediction"].data[0]) == 1).all()  # only tumour passes now
    maps = np.stack([np.asarray(viewer.layers[name].data[0], np.float32) for name in PROBABILITIES])
    assert maps.shape == (3, 128, 128)  # 64² samples 32 px apart: 16 px per map pixel
    np.testing.assert_allclose(maps.reshape(3, -1).mean(axis=1), [0.5, 0.731, 0.622], atol=2e-3)


def _visible_region(layer) -> tuple[int, tuple[slice, slice]]:
    """The level napari shows ``layer`` at and the region of it in view (from the layer's corner pixels)."""
    (r0, c0), (r1, c1) = np.asarray(layer.corner_pixels)[:, -2:].astype(int)
    return layer.data_level, (slice(r0, r1 + 1), slice(c0, c1 + 1))


def test_labels_appear_before_the_save_and_editing_works_while_it_runs(slide_viewer, qtbot) -> None:
    viewer, slide, tmp_path = slide_viewer
    workspace_path = slide.ome_zarr.parent / "slide.m2mrf.zarr"
    Workspace.create(workspace_path, source=slide.ome_zarr)
    widget = _segment(viewer, save_slide_model(tmp_path / "slide_model.safetensors", output_size=(128, 128)))
    lock = output_lock(workspace_path)
    lock.__enter__()  # the save waits for the workspace, as a long save would keep going
    try:
        widget.run()
        qtbot.waitUntil(lambda: widget.slide_run.stage != "running", timeout=120_000)
        assert widget.slide_run.stage == SHOWN and "saving" in widget.status.value
        prediction = viewer.layers["prediction"]
        assert prediction.multiscale and prediction.metadata["m2mrf"]["saved"] is False
        assert not (workspace_path / "labels" / "prediction").exists()  # nothing published yet
        qtbot.waitUntil(lambda: len(viewer.layers) >= 8, timeout=10_000)  # the other layers follow
        lazy_levels = list(prediction.data)
        level, region = _visible_region(prediction)
        shown = np.asarray(prediction.data[level][region])
        assert shown.size > 0 and set(np.unique(shown)) <= {0, 1, 2, 3}

        # Edit slide region meanwhile: copied from the lazy prediction; the write back waits for the save
        editor = SlideEditWidget(viewer)
        viewer.window.add_dock_widget(editor, name="Edit slide region")
        scale = np.asarray(viewer.layers["slide"].scale)
        viewer.add_shapes([np.array([[300, 400], [300, 700], [500, 700], [500, 400]]) * scale],
                          shape_type="rectangle", name="roi")
        editor.reset_choices()
        editor.pyramid.value, editor.region.value = prediction, REGION_SHAPE
        editor.shapes.value = viewer.layers["roi"]
        editor.edit_button.clicked.emit()
        region_layer = viewer.layers[EDIT_REGION]
        np.testing.assert_array_equal(region_layer.data, np.asarray(lazy_levels[0][300:501, 400:701]))
        region_layer.selected_label, region_layer.brush_size = 2, 40
        region_layer.paint((70, 140), 2, refresh=True)
        editor.write_button.clicked.emit()
        qtbot.wait(300)
        assert editor.worker.is_running and not (workspace_path / "labels" / "corrected").exists()
    finally:
        lock.__exit__(None, None, None)
    with qtbot.waitSignal(widget.worker.finished, timeout=120_000):
        pass
    with qtbot.waitSignal(editor.worker.finished, timeout=60_000):
        pass
    assert widget.slide_run.stage == SAVED and widget.status.value.startswith("done"), widget.status.value
    assert prediction.metadata["m2mrf"]["saved"] is True
    # the stored pyramid equals what was shown lazily, level by level, and the layer now reads it
    stored = Workspace.open(workspace_path, mode="r").labels("prediction")
    assert len(stored.levels) == len(lazy_levels)
    for lazy, level_array in zip(lazy_levels, stored.levels):
        np.testing.assert_array_equal(np.asarray(lazy), np.asarray(level_array[:]))
    np.testing.assert_array_equal(np.asarray(prediction.data[level][region]), shown)
    np.testing.assert_array_equal(np.asarray(stored.levels[level][region]), shown)
    # the edit written back after the save published: in labels/corrected, the prediction untouched
    assert "wrote 201×301 px" in editor.status.value, editor.status.value
    corrected = Workspace.open(workspace_path, mode="r").labels("corrected")
    assert (np.asarray(corrected.levels[0][358:382, 528:552]) == 2).all()
    np.testing.assert_array_equal(np.asarray(corrected.levels[0][1000:1200, 1000:1200]),
                                  np.asarray(stored.levels[0][1000:1200, 1000:1200]))


def test_cancelling_the_save_keeps_the_previous_workspace(slide_viewer, qtbot) -> None:
    viewer, slide, tmp_path = slide_viewer
    workspace_path = slide.ome_zarr.parent / "slide.m2mrf.zarr"
    widget = _segment(viewer, save_slide_model(tmp_path / "first.safetensors"))
    _run_and_wait(widget, qtbot)
    before = Workspace.open(workspace_path, mode="r")
    stored = [np.asarray(level[:]) for level in before.labels("prediction").levels]
    maps = np.asarray(before.probability_pyramid()[0].levels[0][:])
    provenance, points = before.provenance, before.sampling_points()

    widget.checkpoint.value = save_slide_model(tmp_path / "second.safetensors", seed=3)
    lock = output_lock(workspace_path)
    lock.__enter__()
    try:
        widget.run()
        qtbot.waitUntil(lambda: widget.slide_run.stage != "running", timeout=120_000)
        assert widget.slide_run.stage == SHOWN
        widget.cancel_button.clicked.emit()  # mid-save
    finally:
        lock.__exit__(None, None, None)
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=30_000)
    assert widget.slide_run.stage == CANCELLED and "not saved" in widget.status.value, widget.status.value
    assert viewer.layers["prediction"].metadata["m2mrf"]["saved"] is False  # the new labels stay, marked
    # the workspace holds the first run, whole; nothing of the second was published or left behind
    after = Workspace.open(workspace_path, mode="r")
    for level, old in zip(after.labels("prediction").levels, stored):
        np.testing.assert_array_equal(np.asarray(level[:]), old)
    np.testing.assert_array_equal(np.asarray(after.probability_pyramid()[0].levels[0][:]), maps)
    np.testing.assert_array_equal(after.sampling_points(), points)
    assert after.provenance == provenance
    assert not [p for p in workspace_path.rglob(".*") if ".tmp-" in p.name]
