"""napari really loads the plugin: its samples are in File ▸ Open Sample and show as expected.

These tests drive a real napari viewer on a virtual X display (pytest-xvfb) with Mesa's software
OpenGL; nothing of napari, Qt or OpenGL is mocked.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from gui_timing import wait_until_ready
from scipy import ndimage

from napari_m2mrf._samples import fundus_labels_layer
from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.widgets.view import world_to_canvas

pytestmark = pytest.mark.gui

PLUGIN_MENU = "M2MRF lesions & slides"
SAMPLE_TITLES = {
    "retina": "Fundus, normal eye (negative control)",
    "fundus_lesions": "Fundus with lesions (semi-synthetic, with ground truth)",
    "slide": "Histology slide, 32k pyramid (synthetic, with ground truth)",
    "ihc": "Immunohistochemistry tile",
}


def _submenu_actions(menu, title: str) -> dict:
    for action in menu.actions():
        if action.menu() is not None:
            if action.text().replace("&", "") == title.replace("&", ""):
                return {a.text(): a for a in action.menu().actions()}
            found = _submenu_actions(action.menu(), title)
            if found:
                return found
    return {}


def _plugin_sample_actions(viewer) -> dict:
    return _submenu_actions(viewer.window._qt_window.menuBar(), PLUGIN_MENU)


def test_open_sample_menu_lists_every_plugin_sample(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    actions = _plugin_sample_actions(viewer)
    assert set(SAMPLE_TITLES.values()) <= set(actions), sorted(actions)


def test_open_sample_menu_entry_adds_the_normal_fundus(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    _plugin_sample_actions(viewer)[SAMPLE_TITLES["retina"]].trigger()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=10_000)
    layer = viewer.layers[0]
    assert layer.name == "retina" and layer.rgb and layer.data.shape == (1411, 1411, 3)


def _canvas_pixels_at(viewer, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """RGB of the rendered canvas at data coordinates (rows, cols) of an unscaled 2-D layer."""
    shot = viewer.screenshot(canvas_only=True, flash=False)
    height, width = shot.shape[:2]
    pixel_ratio = viewer.window._qt_window.devicePixelRatioF()
    # pixel (r, c) covers [r - 0.5, r + 0.5) in napari's world coordinates
    canvas_y, canvas_x = world_to_canvas(viewer, rows, cols)
    screen_y = np.floor(canvas_y * pixel_ratio).astype(int)
    screen_x = np.floor(canvas_x * pixel_ratio).astype(int)
    inside = (screen_y >= 0) & (screen_y < height) & (screen_x >= 0) & (screen_x < width)
    assert inside.mean() > 0.99, "the layer should fit on the canvas after reset_view"
    return shot[screen_y[inside], screen_x[inside], :3].astype(int)


def _assert_lesion_colours_on_screen(viewer, labels: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    for cls in FUNDUS_CLASSES:
        interior = ndimage.binary_erosion(labels == cls.label, iterations=2)
        rows, cols = np.nonzero(interior)
        assert rows.size, f"no {cls.code} interior pixels to check"
        pick = rng.choice(rows.size, size=min(400, rows.size), replace=False)
        rendered = _canvas_pixels_at(viewer, rows[pick], cols[pick])
        expected = np.round(np.array(cls.color[:3]) * 255)
        close = np.abs(rendered - expected).max(axis=1) <= 40
        assert close.mean() > 0.9, f"{cls.code}: only {close.mean():.0%} of its pixels show {expected}"
    far = ~ndimage.binary_dilation(labels > 0, iterations=3)
    rows, cols = np.nonzero(far)
    pick = rng.choice(rows.size, size=2000, replace=False)
    rendered = _canvas_pixels_at(viewer, rows[pick], cols[pick])
    for cls in FUNDUS_CLASSES:
        expected = np.round(np.array(cls.color[:3]) * 255)
        assert (np.abs(rendered - expected).max(axis=1) <= 40).mean() < 0.01, f"{cls.code} colour off its masks"


def test_screenshot_shows_class_colours_where_blocks_are(make_napari_viewer) -> None:
    labels = np.zeros((300, 400), np.uint8)
    for i, cls in enumerate(FUNDUS_CLASSES):
        labels[40 + 60 * i : 80 + 60 * i, 50 + 80 * i : 110 + 80 * i] = cls.label
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = fundus_labels_layer(labels, "blocks")
    viewer.add_labels(data, **{**kwargs, "opacity": 1.0})
    viewer.reset_view()
    _assert_lesion_colours_on_screen(viewer, labels)


def test_fundus_lesions_ground_truth_renders_in_the_paper_colours(make_napari_viewer, private_cache) -> None:
    viewer = make_napari_viewer(show=True)
    image_layer, truth_layer = viewer.open_sample("napari-m2mrf", "fundus_lesions")
    assert truth_layer.name.endswith("ground truth")
    assert list(truth_layer.features["class"]) == ["background", "EX", "HE", "SE", "MA"]
    image_layer.visible = False
    truth_layer.opacity = 1.0
    viewer.reset_view()
    _assert_lesion_colours_on_screen(viewer, np.asarray(truth_layer.data))


def test_napari_with_the_plugin_does_not_import_torch_until_a_model_is_used() -> None:
    code = (
        "import sys, napari\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.open_sample('napari-m2mrf', 'retina')\n"
        "print('torch' in sys.modules)\n"
        "viewer.close()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def _all_action_texts(menu) -> list[str]:
    texts = []
    for action in menu.actions():
        texts.append(action.text())
        if action.menu() is not None:
            texts += _all_action_texts(action.menu())
    return texts


def test_plugins_menu_lists_the_widgets(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    (plugins_menu,) = [a.menu() for a in viewer.window._qt_window.menuBar().actions() if a.text() == "&Plugins"]
    texts = _all_action_texts(plugins_menu)
    assert any("Segment lesions" in text for text in texts), texts


def _submenu(menu, title: str):
    (found,) = [a.menu() for a in menu.actions() if a.menu() is not None and a.text().replace("&", "") == title]
    return found


def test_layers_menu_offers_the_widgets_under_segment_and_measure(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    segment = _all_action_texts(_submenu(viewer.window.layers_menu, "Segment"))
    measure = _all_action_texts(_submenu(viewer.window.layers_menu, "Measure"))
    for title in ("Segment lesions", "Correct lesions", "Edit slide region"):
        assert any(title in text for text in segment), segment
    assert any("Lesion metrics" in text for text in measure), measure
    assert any("Lesion inventory" in text for text in measure), measure
    assert not any("Train" in text for text in segment + measure)


def test_a_layers_menu_entry_docks_its_widget(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    (action,) = [a for a in _submenu(viewer.window.layers_menu, "Measure").actions() if "Lesion metrics" in a.text()]
    action.trigger()
    docked = [w for w in viewer.window.dock_widgets.values() if type(w).__name__ == "MetricsWidget"]
    assert len(docked) == 1


def test_segment_widget_docks_from_the_plugin_manifest(make_napari_viewer) -> None:
    pytest.importorskip("napari_m2mrf.models.registry")
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-m2mrf", "Segment lesions")
    wait_until_ready(widget)
    assert type(widget).__name__ == "SegmentWidget"
    assert "fundus_m2mrf_w18s" in widget.model.choices and "hrnetv2_w18s" not in widget.model.choices
