"""napari layers for a slide run: sampling dots, deformation map, deformed image, label pyramids and
per-class probability pyramids.

All layers sit in the slide layer's world coordinates (its level-0 pixel size as ``scale``, its
``translate``) and carry ``metadata["m2mrf"] = {"role", "source", …}``, so a new run replaces them.

**Sampling dots.** napari slows down badly with 10⁵–10⁶ Points (every data change, highlight and
redraw walks all of them; software OpenGL pays per drawn dot), and a 512×512 grid has 262,144
samples. :class:`SamplingDots` keeps all positions in numpy and gives the Points layer only the
dots in the field of view (plus a margin), thinned by a power-of-two *grid stride* so that at most
``MAX_DOTS`` are drawn: every ``s``-th row and column of the sampling grid, so each dot is a real
sampling location and dense regions still look dense (all densities thinned by the same ``s²``; a
few thousand dots show the density as well as all of them). Zoomed in far enough, the stride is 1
and every sample in view is drawn. The thinned grids, their colours and densities are built once;
on a camera change (throttled) the selection box (the view plus a quarter of it on every side) is
snapped outward to a grid of cells a quarter of the view's size, and the layer is only touched
when the box or the stride changed, so small pans and zooms cost nothing. Dots are small discs without border or antialiasing (cheapest to draw),
coloured by the local sample density relative to uniform sampling (its value is in the layer's
``features``); the layer's ``metadata["m2mrf"]["shown"]`` says what is drawn.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

MAX_DOTS = 4_096
VIEW_MARGIN = 0.25  # fraction of the view's size added on every side
CELLS_PER_VIEW = 4  # the selection box snaps to cells of 1/CELLS_PER_VIEW of the view's larger side
UPDATE_THROTTLE_MS = 80
DOT_CANVAS_PX = (2, 5)  # on-screen dot diameter limits
DOT_ANTIALIASING = 0
DENSITY_COLORMAP = "plasma"

DOTS = "sampling dots"
DEFORMATION = "deformation map"
DEFORMED_IMAGE = "deformed image"
LABEL_PYRAMID = "slide labels"

_controllers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_last_runs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # slide layer -> its last SlideResult


def remember_run(image_layer: Any, result: Any) -> None:
    """Note ``result`` as the last run shown on the slide layer ``image_layer`` (kept while the layer lives)."""
    _last_runs[image_layer] = result


def last_run(image_layer: Any) -> Any | None:
    """The last :class:`~napari_m2mrf.inference.slide.SlideResult` shown on ``image_layer`` in this session, if any."""
    return _last_runs.get(image_layer)


def _tag(role: str, source: str, **extra: Any) -> dict[str, Any]:
    return {"m2mrf": {"role": role, "source": source, "code": None, **extra}}


def _find(viewer: Any, role: str, source: str, **match: Any) -> Any | None:
    for layer in viewer.layers:
        tag = layer.metadata.get("m2mrf", {})
        if tag.get("role") == role and tag.get("source") == source and all(tag.get(k) == v for k, v in match.items()):
            return layer
    return None


def world_frame(image_layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, translate)`` ``(y, x)`` of the slide layer: world = translate + scale · level-0 pixel."""
    return np.asarray(image_layer.scale[-2:], float), np.asarray(image_layer.translate[-2:], float)


def world_units(image_layer: Any) -> tuple[str, str]:
    """The ``(y, x)`` units of the slide layer's world (micrometres when the file gave a pixel size),
    for result layers over it: napari's scale bar reads them from the layers."""
    return tuple(str(unit) for unit in image_layer.units[-2:])


def grid_stride(count: int, limit: int = MAX_DOTS) -> int:
    """Smallest power of two ``s`` with ``count / s² ≤ limit``."""
    stride = 1
    while count > limit * stride * stride:
        stride *= 2
    return stride


def density_colors(values: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """RGBA ``(N, 4)`` of relative densities on a log scale between ``limits``."""
    from napari.utils.colormaps import ensure_colormap

    low, high = np.log2(limits[0]), np.log2(limits[1])
    scaled = (np.log2(np.maximum(values, 1e-6)) - low) / max(high - low, 1e-6)
    return ensure_colormap(DENSITY_COLORMAP).map(np.clip(scaled, 0, 1).ravel())


class ThinnedGrid:
    """Every ``stride``-th row and column of the sampling grid: positions ``(n, 2)`` level-0 ``(y, x)``,
    RGBA colours ``(n, 4)`` and relative densities ``(n,)``, ready to hand to the layer."""

    def __init__(self, points: np.ndarray, colors: np.ndarray, density: np.ndarray, stride: int) -> None:
        self.stride = stride
        self.points = np.ascontiguousarray(points[::stride, ::stride].reshape(-1, 2))
        self.colors = np.ascontiguousarray(colors[::stride, ::stride].reshape(-1, 4))
        self.density = np.ascontiguousarray(density[::stride, ::stride].reshape(-1))

    def inside(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Bool ``(n,)``: which dots lie in the box ``low``–``high`` (level-0 ``(y, x)``)."""
        y, x = self.points[:, 0], self.points[:, 1]
        return (y >= low[0]) & (y <= high[0]) & (x >= low[1]) & (x <= high[1])


class SamplingDots:
    """Feeds a Points layer with the sampling locations in view (see the module docstring).

    Args:
        layer: the Points layer to drive (2-D, data in level-0 pixels; its scale/translate map to world).
        points: ``h×w×2`` sampling locations, level-0 pixels ``(y, x)``.
        relative_density: ``h×w`` local sample density over uniform sampling.
        viewer: whose camera decides the field of view.
    """

    def __init__(self, layer: Any, points: np.ndarray, relative_density: np.ndarray, viewer: Any) -> None:
        from superqt.utils import qthrottled

        from napari_m2mrf.widgets.view import camera

        self.layer = layer
        self.viewer = viewer
        points = np.asarray(points, np.float32)
        density = np.asarray(relative_density, np.float32)
        low, high = np.percentile(density, [1, 99])
        self.limits = (float(min(low, 1.0) * 0.999), float(max(high, 1.0) * 1.001))
        colors = density_colors(density, self.limits).astype(np.float32).reshape(*density.shape, 4)
        self.total = int(density.size)
        coarsest = grid_stride(self.total)
        self.grids = {}
        stride = coarsest
        while stride >= 1:
            self.grids[stride] = ThinnedGrid(points, colors, density, stride)
            stride //= 2
        self.stride = 0
        self._shown_key: tuple | None = None
        self.update_throttled = qthrottled(self.update, timeout=UPDATE_THROTTLE_MS, leading=True)
        self._camera = camera(viewer)
        self._camera.events.zoom.connect(self.update_throttled)
        self._camera.events.center.connect(self.update_throttled)
        layer.events.visible.connect(self.update_throttled)
        viewer.layers.events.removed.connect(self._on_removed)
        _controllers[layer] = self
        self.update()

    def view_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 ``(y, x)`` corners of the field of view with ``VIEW_MARGIN`` added, snapped outward
        to cells of ``1/CELLS_PER_VIEW`` of the view's larger side (a power of two of level-0 pixels)."""
        from napari_m2mrf.widgets.view import canvas_corners_world

        top_left, bottom_right = canvas_corners_world(self.viewer)
        scale = np.asarray(self.layer.scale[-2:], float)
        translate = np.asarray(self.layer.translate[-2:], float)
        low, high = (top_left - translate) / scale, (bottom_right - translate) / scale
        margin = (high - low) * VIEW_MARGIN
        cell = 2.0 ** np.floor(np.log2(max(float(np.max(high - low)) / CELLS_PER_VIEW, 1.0)))
        return np.floor((low - margin) / cell) * cell, np.ceil((high + margin) / cell) * cell

    def select(self) -> tuple[np.ndarray, int, tuple[np.ndarray, np.ndarray]]:
        """The dots to draw (bool over the chosen grid), its stride, and the box they were chosen in.

        The finest stride whose dots in the box stay within ``MAX_DOTS`` (searched from the coarsest,
        stopping at the first grid that is too full).
        """
        low, high = self.view_box()
        strides = sorted(self.grids, reverse=True)
        chosen, inside = strides[0], self.grids[strides[0]].inside(low, high)
        for stride in strides[1:]:
            finer = self.grids[stride].inside(low, high)
            if np.count_nonzero(finer) > MAX_DOTS:
                break
            chosen, inside = stride, finer
        return inside, chosen, (low, high)

    def update(self, *_: Any) -> None:
        """Show the dots in view (called on camera changes, throttled); nothing happens when neither
        the snapped box nor the stride changed."""
        if self.layer not in self.viewer.layers:
            return
        if not self.layer.visible:  # napari does not re-slice a hidden layer: new data would meet stale view
            self._shown_key = None  # indices in its colour callbacks; shown again, it is refilled
            return
        inside, stride, (low, high) = self.select()
        key = (stride, *low.tolist(), *high.tolist())
        if key == self._shown_key:
            return
        grid = self.grids[stride]
        layer = self.layer
        with layer.events.blocker_all():
            layer.data = grid.points[inside]
            layer.features = {"relative density": grid.density[inside]}
            layer.face_color = grid.colors[inside] if inside.any() else "white"
        self._shown_key, self.stride = key, stride
        layer.metadata["m2mrf"]["shown"] = self.description(int(np.count_nonzero(inside)), stride)
        layer.refresh()

    def description(self, shown: int, stride: int) -> str:
        thinning = "every sample in view" if stride == 1 else f"every {stride}th grid row and column in view"
        return f"{shown:,} of {self.total:,} sampling dots drawn ({thinning})"

    def _on_removed(self, event: Any) -> None:
        if event.value is self.layer:
            self.disconnect()

    def disconnect(self) -> None:
        """Stop following the camera."""
        self._camera.events.zoom.disconnect(self.update_throttled)
        self._camera.events.center.disconnect(self.update_throttled)
        self.layer.events.visible.disconnect(self.update_throttled)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        self.update_throttled.cancel()
        _controllers.pop(self.layer, None)


def show_sampling_dots(
    viewer: Any, image_layer: Any, points: np.ndarray, relative_density: np.ndarray, role: str = DOTS,
    visible: bool = True,
) -> SamplingDots:
    """Add (or refill) the ``sampling dots`` layer of ``image_layer`` (or another dots layer: ``role`` is its
    name and tag, e.g. a preview); returns its controller."""
    scale, translate = world_frame(image_layer)
    source = image_layer.name
    layer = _find(viewer, role, source)
    spacing = float(np.sqrt(np.prod(np.ptp(points.reshape(-1, 2), axis=0) + 1) / points[..., 0].size))
    if layer is not None:
        previous = _controllers.get(layer)
        if previous is not None:
            previous.disconnect()
    else:
        layer = viewer.add_points(
            np.empty((0, 2)),
            name=role,
            visible=visible,
            size=max(spacing / 3, 1.0),
            border_width=0,
            canvas_size_limits=DOT_CANVAS_PX,
            antialiasing=DOT_ANTIALIASING,
            scale=scale,
            translate=translate,
            units=world_units(image_layer),
            metadata=_tag(role, source),
        )
    layer.size = max(spacing / 3, 1.0)
    return SamplingDots(layer, points, relative_density, viewer)


def show_deformation_map(
    viewer: Any, image_layer: Any, density: np.ndarray, downsample: tuple[float, float]
) -> Any:
    """The density map as a hidden Image layer over the slide (each pixel ``downsample`` level-0 px)."""
    scale, translate = world_frame(image_layer)
    factors = np.asarray(downsample, float)
    source = image_layer.name
    layer = _find(viewer, DEFORMATION, source)
    pixel_scale = scale * factors
    offset = translate + scale * (factors - 1) / 2  # pixel k's centre over level-0 ((k + ½)·f − ½)
    if layer is None:
        return viewer.add_image(
            density, name=DEFORMATION, colormap="inferno", opacity=0.6, blending="additive", visible=False,
            scale=pixel_scale, translate=offset, units=world_units(image_layer), metadata=_tag(DEFORMATION, source),
        )
    layer.data, layer.scale, layer.translate = density, pixel_scale, offset
    layer.reset_contrast_limits()
    return layer


def show_deformed_image(viewer: Any, image_layer: Any, deformed: np.ndarray, image_shape: tuple[int, int]) -> Any:
    """The low-resolution deformed image (what the network saw), beside the slide at the same extent."""
    scale, translate = world_frame(image_layer)
    source = image_layer.name
    factors = np.asarray(image_shape, float) / np.asarray(deformed.shape[:2], float)
    pixel_scale = scale * factors
    offset = translate + scale * (factors - 1) / 2 + np.array([0.0, 1.05 * image_shape[1] * scale[1]])
    layer = _find(viewer, DEFORMED_IMAGE, source)
    if layer is None:
        return viewer.add_image(
            deformed, name=DEFORMED_IMAGE, rgb=True, scale=pixel_scale, translate=offset,
            units=world_units(image_layer), metadata=_tag(DEFORMED_IMAGE, source),
        )
    layer.data, layer.scale, layer.translate = deformed, pixel_scale, offset
    return layer


def show_label_pyramid(viewer: Any, frame_layer: Any, source: str, workspace: str | Path, name: str,
                       **tag: Any) -> Any:
    """The workspace's ``labels/<name>`` as a lazy multiscale Labels layer (fresh reads of the store).

    ``frame_layer`` (the slide, or a layer aligned with it) gives scale and translate; ``source``
    is the slide layer's name, for the result tag (``tag`` adds to it; ``saved`` is set True).
    """
    from napari_m2mrf.io.workspace import Workspace

    pyramid = Workspace.open(workspace, mode="r").labels(name)
    return show_label_levels(viewer, frame_layer, source, workspace, name, pyramid.lazy_levels(), pyramid.colors,
                             pyramid.names, saved=True, **tag)


def show_label_levels(viewer: Any, frame_layer: Any, source: str, workspace: str | Path, name: str, levels: list,
                      colors: dict, names: dict, **tag: Any) -> Any:
    """A label pyramid given as lazy ``levels`` (level 0 first; zarr/dask arrays, or the
    reverse-filled levels of a run not saved yet) as the multiscale Labels layer ``name``."""
    scale, translate = world_frame(frame_layer)
    colormap: dict[int | None, tuple[float, ...]] = {0: (0.0, 0.0, 0.0, 0.0), None: (0.0, 0.0, 0.0, 0.0)}
    colormap.update({value: tuple(color) for value, color in colors.items()})
    layer = _find(viewer, LABEL_PYRAMID, source, labels=name)
    if layer is None:
        return viewer.add_labels(
            levels, name=name, multiscale=True, colormap=colormap, opacity=0.6, scale=scale, translate=translate,
            units=world_units(frame_layer), metadata={**_tag(LABEL_PYRAMID, source, labels=name, workspace=str(workspace), **tag),
                      "class_names": dict(names)},
        )
    layer.metadata["m2mrf"].update(workspace=str(workspace), **tag)
    layer.metadata["class_names"] = dict(names)
    layer.data = levels
    layer.refresh()
    return layer


def show_probability_pyramids(viewer: Any, image_layer: Any, workspace: str | Path, classes: list[dict]) -> list[Any]:
    """The workspace's ``probabilities/`` as one hidden multiscale ``<code> probability`` layer per class.

    ``classes``: the checkpoint's class entries (``code``, ``color``). The maps' finest level has
    ``downsample`` level-0 pixels per pixel; its pixel ``k`` is centred over level-0 ``(k + ½)·f − ½``.
    Layers of classes the maps do not hold (an earlier model's) are removed.
    """
    from napari_m2mrf.io.workspace import Workspace
    from napari_m2mrf.widgets.result_layers import (
        remove_other_probabilities,
        show_probability_layer,
    )

    pyramid, downsample, codes = Workspace.open(workspace, mode="r").probability_pyramid()
    scale, translate = world_frame(image_layer)
    colors = {str(c["code"]): tuple(c["color"]) for c in classes}
    levels = pyramid.channel_last()
    remove_other_probabilities(viewer, image_layer.name, codes)
    return [
        show_probability_layer(
            viewer, image_layer, code, colors.get(code, (1.0, 1.0, 1.0, 1.0)), [level[..., k] for level in levels],
            scale=scale * downsample, translate=translate + scale * (downsample - 1) / 2,
        )
        for k, code in enumerate(codes)
    ]


def show_slide_results(viewer: Any, image_layer: Any, result: Any) -> SamplingDots:
    """All layers of a saved :class:`~napari_m2mrf.inference.slide.SlideResult` (replacing an earlier run's)."""
    show_probability_pyramids(viewer, image_layer, result.workspace, result.meta["classes"])
    show_run_layers(viewer, image_layer, result)
    show_saved_labels(viewer, image_layer, result)
    return show_sampling_dots(viewer, image_layer, result.points, result.relative_density)


def show_run_layers(viewer: Any, image_layer: Any, result: Any) -> None:
    """The deformation map and the deformed image of a run (small, in memory)."""
    show_deformation_map(viewer, image_layer, result.density, result.density_downsample)
    show_deformed_image(viewer, image_layer, result.deformed_image, result.image_shape)


def show_saved_labels(viewer: Any, image_layer: Any, result: Any) -> None:
    """``labels/prediction`` (and ``labels/corrected`` where it exists) from the workspace."""
    from napari_m2mrf.inference.slide import CORRECTED, PREDICTION
    from napari_m2mrf.io.workspace import Workspace

    source = image_layer.name
    show_label_pyramid(viewer, image_layer, source, result.workspace, PREDICTION, run_id=result.run_id)
    if CORRECTED in Workspace.open(result.workspace, mode="r").label_names():
        show_label_pyramid(viewer, image_layer, source, result.workspace, CORRECTED)


def show_lazy_labels(viewer: Any, image_layer: Any, result: Any) -> Any:
    """The run's prediction as it is computed on demand (not saved yet): a multiscale Labels layer whose
    levels reverse-fill only the region napari asks for (tagged ``saved: False`` and the run's id)."""
    from napari_m2mrf.inference.slide import PREDICTION

    return show_label_levels(viewer, image_layer, image_layer.name, result.workspace, PREDICTION, result.label_levels,
                             result.class_colors, result.class_names, saved=False, run_id=result.run_id)


def show_lazy_probabilities(viewer: Any, image_layer: Any, result: Any) -> list[Any]:
    """The run's per-class probability pyramids, reverse-filled on demand (hidden layers, as the saved ones)."""
    from napari_m2mrf.widgets.result_layers import remove_other_probabilities

    remove_other_probabilities(viewer, image_layer.name, result.probability_codes)
    return [show_lazy_probability(viewer, image_layer, result, code) for code in result.probability_codes]


def show_lazy_probability(viewer: Any, image_layer: Any, result: Any, code: str) -> Any:
    """One class's lazy probability pyramid as its hidden ``<code> probability`` layer."""
    from napari_m2mrf.widgets.result_layers import show_probability_layer

    scale, translate = world_frame(image_layer)
    factor = result.probability_downsample
    colors = {str(c["code"]): tuple(c["color"]) for c in result.meta["classes"]}
    return show_probability_layer(viewer, image_layer, code, colors.get(code, (1.0, 1.0, 1.0, 1.0)),
                                  list(result.probability_levels[code]), scale=scale * factor,
                                  translate=translate + scale * (factor - 1) / 2)
