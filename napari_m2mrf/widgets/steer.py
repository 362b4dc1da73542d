"""The Steer sampling widget: paint where a slide model should look more (or less) closely, see where its
samples will go, and run again with that map at the same sample budget — no retraining.

The sampler of Jin et al. (eq. 3) turns any density map into sampling positions. *Start editing* takes the
map of the slide's last run (in memory, or ``sampling/deformation`` of its workspace when the slide was
reopened; *Start from the map file*: a ``.npy``, image or workspace map, e.g. one exported earlier) as the base
and adds two edit layers over the slide:

* ``density brush`` — a Labels layer on a grid ``EDIT_UPSAMPLE``× finer than the density map: napari's
  brush, eraser, fill, polygon and undo paint a *factor* (the widget's Factor, ×16 … ×1/16; label values
  :data:`~napari_m2mrf.sampling.density.BRUSH_FACTORS`); erased = unchanged;
* ``density regions`` — a Shapes layer: rectangles, polygons, ellipses, each with its own ``factor``
  feature (new shapes take the widget's Factor; choosing a Factor with shapes selected sets theirs).

Every edit recomputes (throttled) the steered density — base × factors, area-averaged onto the model's
grid, floored and normalised (:func:`~napari_m2mrf.sampling.density.steer_density`) — shows it in the
``deformation map`` layer, and moves the ``sampling dots (preview)`` to the positions the sampler gives for
it: the same code the run uses (:func:`~napari_m2mrf.inference.steering.preview`), so the preview is the run.
The status line counts the samples inside raised and lowered areas, before and after. The sampler moves a
sample by about its kernel width at most (σ density pixels: 8 of 256 for the bundled model), so a strong
factor over a small focus concentrates samples there, while a big painted area only draws samples in from
its surroundings (the counts say how much).

*Run with this map* (Alt+Shift+R) keeps the current run as ``prediction (previous run)`` and ``sampling dots
(previous run)`` (hidden, lazy, in memory), then runs the slide through
:class:`~napari_m2mrf.widgets.slide_run.SlideRun` with the steered map (same model, same output size, in a
worker with progress and Cancel); the labels appear at once and are saved with the map into the workspace
(``sampling/deformation``, its provenance ``"edited by the user"`` with the base, the brush counts and the
regions). *Compare* (Alt+T) flips between the new run and the previous one. *Export map* writes the
steered map as ``.npy`` for ``napari-m2mrf predict --density``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, Label, ProgressBar, PushButton
from qtpy.QtCore import QObject, Signal

from napari_m2mrf.errors import UserError, user_message
from napari_m2mrf.jobs import Cancelled
from napari_m2mrf.sampling.density import (
    BRUSH_FACTORS,
    brush_factors,
    factor_name,
    region_factors,
    resample_density,
    steer_density,
)
from napari_m2mrf.widgets.base import PluginWidget, layer_choices
from napari_m2mrf.widgets.deferred_import import LOADING
from napari_m2mrf.widgets.shortcuts import SHORTCUTS, add_shortcut

if TYPE_CHECKING:
    import napari

STEERING_MODULES = ("napari_m2mrf.inference.steering", "napari_m2mrf.inference.slide")  # torch: imported off the
# GUI thread when the widget opens (a reopened slide's first Start editing would otherwise freeze the viewer)
BRUSH = "density brush"
REGIONS = "density regions"
PREVIEW = "sampling dots (preview)"
PREVIOUS_LABELS = "prediction (previous run)"
PREVIOUS_DOTS = "sampling dots (previous run)"
EDIT_UPSAMPLE = 2  # edit-grid pixels per density-map pixel (per side)
MAX_EDIT_SIDE = 2048
PREVIEW_THROTTLE_MS = 120
MAP_OPACITY = 0.45  # the deformation map over the slide while editing
PREVIEW_TIMES_KEPT = 100  # seconds of the last preview updates (the dots layer existing), for the tests
ELLIPSE_VERTICES = 64  # an ellipse region is rasterised as this polygon
DEFAULT_FACTOR = 4.0
FACTOR_CHOICES = [(factor_name(f), f) for f in sorted({*BRUSH_FACTORS.values()}, reverse=True)]
EDITED = "edited by the user"
ORIGINS = {"learned": "learned", "uniform": "uniform", EDITED: "user-edited", "file": "file's", "workspace": "reused"}
_BRUSH_COLORS = {2.0: "#ffd54f", 4.0: "#ff9800", 8.0: "#f4511e", 16.0: "#b71c1c",
                 0.5: "#81d4fa", 0.25: "#29b6f6", 0.125: "#0277bd", 1 / 16: "#01579b"}


class _Signals(QObject):
    progressed = Signal(int, int, str)
    noticed = Signal(str)


@dataclass
class SteeringBase:
    """What the edits apply to: the slide's base density ``(h_d, w_d)`` (each pixel ``downsample`` level-0
    pixels ``(f_y, f_x)``), the run's model, sampler, output size (the budget) and sample positions."""

    source: str
    density: np.ndarray
    downsample: tuple[float, float]
    image_shape: tuple[int, int]
    output_size: tuple[int, int]
    density_size: tuple[int, int]
    sampler: Any
    model: Any
    points: np.ndarray
    origin: dict = field(default_factory=dict)


def base_from_run(result: Any) -> SteeringBase:
    """The base of a run in memory (:class:`~napari_m2mrf.inference.slide.SlideResult`): its density map, or a
    uniform one when the run sampled uniformly (what it sampled with), and the model's own sampler."""
    from napari_m2mrf.inference.steering import sampler_for

    uniform = result.density_source.get("source") == "uniform"
    density = np.ones_like(result.density, np.float64) if uniform else np.asarray(result.density, np.float64)
    return SteeringBase(
        source="", density=density, downsample=tuple(result.density_downsample),
        image_shape=tuple(result.image_shape), output_size=tuple(result.labels.shape),
        density_size=tuple(result.density_size), sampler=sampler_for(result.model.metadata), model=result.model,
        points=result.points, origin={**result.density_source, "run_id": result.run_id},
    )


def base_from_workspace(path: str | Path) -> SteeringBase:
    """The base stored in a slide's workspace (reopened): its ``sampling/deformation``, points and model."""
    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.inference.steering import sampler_for
    from napari_m2mrf.io.workspace import Workspace

    workspace = Workspace.open(path, mode="r")
    provenance = workspace.provenance
    density, _ = workspace.deformation()
    model = resolve(provenance.get("checkpoint") or provenance["model"])
    if model.weights_sha256 != provenance.get("weights_sha256"):
        raise UserError(f"{path}: the model of the stored run ({provenance.get('model')}) has changed since; "
                        "run the slide again in Segment lesions first")
    output_size = tuple(int(s) for s in provenance["output_size"])
    points = workspace.sampling_points().reshape(*output_size, 2)
    shape = tuple(int(s) for s in workspace.labels("prediction").shape[-2:])
    return SteeringBase(
        source="", density=np.asarray(density, np.float64),
        downsample=(shape[0] / density.shape[0], shape[1] / density.shape[1]), image_shape=shape,
        output_size=output_size, density_size=tuple(int(s) for s in provenance["density_size"]),
        sampler=sampler_for(model.metadata), model=model, points=points,
        origin={**workspace.deformation_source(), "run_id": provenance.get("run_id"), "workspace": str(path)},
    )


def edit_grid(density_shape: tuple[int, int]) -> tuple[int, int]:
    """The brush grid over a density map: ``EDIT_UPSAMPLE``× finer, at most ``MAX_EDIT_SIDE`` a side."""
    factor = max(1, min(EDIT_UPSAMPLE, MAX_EDIT_SIDE // max(density_shape)))
    return density_shape[0] * factor, density_shape[1] * factor


class SteerWidget(PluginWidget):
    """Paint a slide's sampling density, preview the dots, run with it, compare (see the module docstring)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.slide = ComboBox(label="slide", choices=layer_choices(viewer, "Image", _is_slide))
        self.factor = ComboBox(label="factor", choices=FACTOR_CHOICES, value=DEFAULT_FACTOR)
        self.start_button = PushButton(text="Start editing", enabled=False)
        self.map_file = FileEdit(label="map file", mode="r", filter="*.npy *.png *.tif *.tiff *.jpg *.zarr")
        self.start_from_file_button = PushButton(text="Start from the map file", enabled=False)
        self.clear_button = PushButton(text="Clear edits", enabled=False)
        self.run_button = PushButton(text="Run with this map", enabled=False)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.compare_button = PushButton(text="Compare: show previous run", enabled=False)
        self.export_path = FileEdit(label="export to", mode="w", filter="*.npy", value="density.npy")
        self.export_button = PushButton(text="Export map (.npy)", enabled=False)
        self.progress = ProgressBar(value=0, max=1000, label="progress")
        self.status = Label(value=LOADING)
        super().__init__(viewer, [self.slide, self.factor, self.start_button, self.map_file,
                                  self.start_from_file_button, self.clear_button, self.run_button,
                                  self.cancel_button, self.compare_button, self.export_path, self.export_button,
                                  self.progress, self.status])
        self._signals = _Signals()
        self._signals.progressed.connect(self._on_progress)
        self._signals.noticed.connect(self._notify)
        self._cancel = None
        self.worker = None
        self.slide_run: Any = None
        self.base: SteeringBase | None = None
        self.steered: np.ndarray | None = None
        self.preview_points: np.ndarray | None = None
        self.previous: Any = None  # the run kept for comparison
        self.showing_previous = False
        self.preview_seconds: deque[float] = deque(maxlen=PREVIEW_TIMES_KEPT)
        self.start_button.clicked.connect(self._guarded(self.start_editing))
        self.start_from_file_button.clicked.connect(self._guarded(self.start_from_file))
        self.clear_button.clicked.connect(self._guarded(self.clear_edits))
        self.run_button.clicked.connect(self._guarded(self.run))
        self.cancel_button.clicked.connect(self._cancel_run)
        self.compare_button.clicked.connect(self._guarded(self.toggle_compare))
        self.export_button.clicked.connect(self._guarded(self.export_map))
        self.factor.changed.connect(self._factor_changed)
        add_shortcut(self.native, "steer_compare", self._guarded(self.toggle_compare))
        add_shortcut(self.native, "steer_run", self._guarded(self.run))
        from superqt.utils import qthrottled

        self.update_preview_throttled = qthrottled(self.update_preview, timeout=PREVIEW_THROTTLE_MS, leading=False)
        self.set_tooltips({
            self.factor: "what the brush paints and new regions get: ×2…×16 look closer, ×½…×1/16 look less",
            self.start_button: "take the slide's current sampling density as the base and add the density brush "
                               "and region layers",
            self.start_from_file_button: "start from a map file instead (.npy or image of any size, brightness = "
                                         "density, or a workspace's stored map), e.g. one exported earlier",
            self.run_button: f"segment the slide with the edited density, same samples ({SHORTCUTS['steer_run']})",
            self.compare_button: f"flip between the new run and the previous one ({SHORTCUTS['steer_compare']})",
        })
        self._load_in_background(STEERING_MODULES)

    def _on_loaded(self) -> None:
        self.start_button.enabled = self.start_from_file_button.enabled = True
        self.status.value = ("segment a slide with a slide model (Segment lesions), or open a slide whose workspace "
                             "holds a run, then Start editing")

    # -- helpers ------------------------------------------------------------------------------------

    def _guarded(self, action):
        """``action`` with a user's mistake shown as a notification (never a traceback)."""

        def run(*_: Any) -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 (a bug still shows as a napari error notification)
                message = user_message(exc)
                if message is None:
                    raise
                self._notify(message)

        return run

    def _layer(self, name: str) -> Any | None:
        from napari_m2mrf.widgets.slide_layers import _find

        return _find(self._viewer, name, self.base.source) if self.base is not None else None

    @property
    def slide_layer(self) -> Any:
        layer = self.slide.value
        if layer is None:
            raise UserError("open a slide first")
        return layer

    # -- editing ------------------------------------------------------------------------------------

    def start_from_file(self) -> None:
        """Start editing from the map in :attr:`map_file` (read through the input gate, checked, resampled to the
        model's grid) instead of the slide's current one; the run's model, sampler and budget stay."""
        from napari_m2mrf.io.density_maps import read_density_map

        path = self.map_file.value
        if path is None or not str(path).strip() or Path(path) == Path("."):
            raise UserError("choose a map file first")
        given = read_density_map(Path(path))
        self.start_editing(base_density=given.values, origin=given.provenance, where=str(path))

    def start_editing(self, base_density: np.ndarray | None = None, origin: dict | None = None,
                      where: str = "the map file") -> None:
        """Take the slide's current density (or ``base_density``, any size, from ``origin``; ``where`` names it in
        messages) as the base, add (or clear) the edit layers, show the preview."""
        from napari_m2mrf.models.deform import UniformSampler
        from napari_m2mrf.widgets import slide_layers

        layer = self.slide_layer
        result = slide_layers.last_run(layer)
        if result is not None:
            base = base_from_run(result)
        else:
            workspace = _workspace_of(layer)
            if workspace is None:
                raise UserError(f"{layer.name!r} has no run yet: segment it with a slide model first")
            base = base_from_workspace(workspace)
        base.source = layer.name
        if isinstance(base.sampler, UniformSampler):
            raise UserError(f"{base.model.name} samples uniformly whatever the density (trained with the uniform "
                            "sampler): there is nothing to steer")
        if base_density is not None:
            base.density = resample_density(base_density, base.density_size, where)
            base.downsample = (base.image_shape[0] / base.density_size[0], base.image_shape[1] / base.density_size[1])
            base.origin = dict(origin or {})
        self.base = base
        self._add_edit_layers(layer)
        self.clear_edits()
        for button in (self.clear_button, self.run_button, self.export_button):
            button.enabled = True
        described = ORIGINS.get(base.origin.get("source"), "stored")
        self.status.value = (f"editing the {described} map of {layer.name} ({base.density.shape[1]}×{base.density.shape[0]}, "
                             f"{base.output_size[0] * base.output_size[1]:,} samples): paint with {BRUSH!r} or draw "
                             f"in {REGIONS!r}")

    def _add_edit_layers(self, slide: Any) -> None:
        from napari_m2mrf.widgets.slide_layers import DEFORMATION, DOTS, _find, _tag, world_frame, world_units

        base = self.base
        scale, translate = world_frame(slide)
        grid = edit_grid(base.density.shape)
        cell = np.asarray(base.image_shape, float) / np.asarray(grid, float)  # level-0 px per edit pixel
        brush = self._layer(BRUSH)
        if brush is None or brush.data.shape != grid:
            if brush is not None:
                self._viewer.layers.remove(brush)
            colors = {0: (0, 0, 0, 0), None: (0, 0, 0, 0)}
            colors.update({value: _BRUSH_COLORS[f] for value, f in BRUSH_FACTORS.items()})
            brush = self._viewer.add_labels(
                np.zeros(grid, np.uint8), name=BRUSH, opacity=0.35, colormap=colors, scale=scale * cell,
                translate=translate + scale * (cell - 1) / 2, units=world_units(slide),
                metadata=_tag(BRUSH, slide.name),
            )
            brush.brush_size = max(3, grid[0] // 16)
            for event in ("paint", "set_data", "data"):  # a stroke, an undo/redo, Clear edits
                getattr(brush.events, event).connect(self.update_preview_throttled)
        regions = self._layer(REGIONS)
        if regions is None:
            regions = self._viewer.add_shapes(
                name=REGIONS, scale=scale, translate=translate, units=world_units(slide),
                edge_color="#ff9800", face_color="transparent",
                edge_width=max(2.0, base.image_shape[0] / 400), features={"factor": np.empty(0)},
                text={"string": "×{factor:.3g}", "color": "#ff9800", "size": 10}, metadata=_tag(REGIONS, slide.name),
            )
            regions.events.data.connect(self.update_preview_throttled)
            regions.events.features.connect(self.update_preview_throttled)
        self._factor_changed()
        for role, visible in ((DEFORMATION, True), (DOTS, False)):  # the map being painted; the dots: the preview's
            shown = _find(self._viewer, role, slide.name)
            if shown is not None:
                shown.visible = visible
        density_layer = _find(self._viewer, DEFORMATION, slide.name)
        if density_layer is not None:  # readable over bright tissue while painting (additive washes out to white)
            density_layer.blending, density_layer.opacity = "translucent", MAP_OPACITY
        self._viewer.layers.selection.active = brush

    def _factor_changed(self, *_: Any) -> None:
        """The brush paints the chosen factor; new regions get it; selected regions take it."""
        factor = float(self.factor.value)
        brush, regions = self._layer(BRUSH), self._layer(REGIONS)
        if brush is not None:
            brush.selected_label = next(v for v, f in BRUSH_FACTORS.items() if f == factor)
        if regions is not None:
            regions.feature_defaults = {"factor": factor}
            selected = sorted(regions.selected_data)
            if selected:
                values = regions.features["factor"].to_numpy(dtype=float, copy=True)
                values[selected] = factor
                regions.features = {"factor": values}
                regions.refresh_text()
                self.update_preview_throttled()

    def clear_edits(self) -> None:
        """Remove every brush stroke and region; the preview returns to the base map."""
        brush, regions = self._layer(BRUSH), self._layer(REGIONS)
        if brush is not None:
            brush.data = np.zeros_like(brush.data)
        if regions is not None and len(regions.data):
            regions.selected_data = set(range(len(regions.data)))
            regions.remove_selected()  # shapes and their factors together
        self.update_preview()

    def factors(self) -> np.ndarray:
        """The factor map on the edit grid: brush factors times every region's factor inside it."""
        brush, regions = self._layer(BRUSH), self._layer(REGIONS)
        grid = edit_grid(self.base.density.shape)
        factors = brush_factors(brush.data) if brush is not None else np.ones(grid)
        if regions is not None and len(regions.data):
            factors *= region_factors(grid, [(mask, f) for mask, f in self._region_masks(regions, grid)])
        return factors

    def _region_masks(self, regions: Any, grid: tuple[int, int]) -> list[tuple[np.ndarray, float]]:
        """Each closed shape of ``regions`` as a bool mask on the edit grid, with its factor."""
        from skimage.draw import polygon2mask

        cell = np.asarray(self.base.image_shape, float) / np.asarray(grid, float)
        masks = []
        for vertices, kind, factor in zip(regions.data, regions.shape_type, regions.features["factor"]):
            if kind in ("line", "path"):
                continue
            on_grid = (np.asarray(vertices, float)[:, -2:] + 0.5) / cell - 0.5
            if kind == "ellipse":  # napari keeps an ellipse as the 4 corners of its (rotated) bounding box
                centre = on_grid.mean(axis=0)
                half_a, half_b = (on_grid[1] - on_grid[0]) / 2, (on_grid[3] - on_grid[0]) / 2
                angles = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)[:, None]
                on_grid = centre + np.cos(angles) * half_a + np.sin(angles) * half_b
            masks.append((polygon2mask(grid, on_grid), float(factor)))
        return masks

    def update_preview(self, *_: Any) -> None:
        """Recompute the steered density, show it as the deformation map and move the preview dots there."""
        from napari_m2mrf.inference.steering import preview
        from napari_m2mrf.widgets import slide_layers

        if self.base is None or self.slide.value is None:
            return
        start = time.perf_counter()
        refill = self._layer(PREVIEW) is not None  # timed: an update of the dots, not napari creating their layer
        base = self.base
        factors = self.factors()
        self.steered = steer_density(base.density, factors if (factors != 1).any() else None)
        layer = self._slide_by_name()
        if layer is None:
            return
        slide_layers.show_deformation_map(self._viewer, layer, self.steered.astype(np.float32), base.downsample)
        points, relative = preview(base.sampler, self.steered, base.density_size, base.output_size, base.image_shape)
        self.preview_points = points
        slide_layers.show_sampling_dots(self._viewer, layer, points, relative, role=PREVIEW)
        if refill:
            self.preview_seconds.append(time.perf_counter() - start)
        self.status.value = self._shift_summary(factors, points)

    def _preview_now(self) -> None:
        """Drop a pending throttled preview and compute it for the edits as they are."""
        self.update_preview_throttled.cancel()
        self.update_preview()

    def _slide_by_name(self) -> Any | None:
        return next((layer for layer in self._viewer.layers if layer.name == self.base.source), None)

    def _shift_summary(self, factors: np.ndarray, points: np.ndarray) -> str:
        """How many samples fall where the user raised or lowered the density: base run → preview."""
        grid = factors.shape
        cell = np.asarray(self.base.image_shape, float) / np.asarray(grid, float)

        def where(positions: np.ndarray) -> np.ndarray:
            index = np.clip(((positions.reshape(-1, 2) + 0.5) / cell).astype(int), 0, np.asarray(grid) - 1)
            return factors[index[:, 0], index[:, 1]]

        total = points.shape[0] * points.shape[1]
        before, after = where(self.base.points), where(points)
        parts = []
        for name, test in (("raised", np.greater), ("lowered", np.less)):
            if test(factors, 1).any():
                parts.append(f"{int(test(before, 1).sum()):,} → {int(test(after, 1).sum()):,} samples where you "
                             f"{name} the density")
        if not parts:
            return f"no edits: the preview is the base map ({total:,} samples)"
        return f"preview: {'; '.join(parts)} (of {total:,}, the same budget)"

    # -- running ------------------------------------------------------------------------------------

    def density_source(self) -> dict[str, Any]:
        """Provenance of the steered map: edited by the user, from which base, with which edits."""
        regions = self._layer(REGIONS)
        brush = self._layer(BRUSH)
        counts = np.bincount(brush.data.ravel(), minlength=max(BRUSH_FACTORS) + 1) if brush is not None else []
        return {
            "source": EDITED,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "base": self.base.origin,
            "edit_grid": list(edit_grid(self.base.density.shape)),
            "brush": {factor_name(f): int(counts[v]) for v, f in BRUSH_FACTORS.items() if len(counts) and counts[v]},
            "regions": [] if regions is None else [
                {"shape": kind, "factor": float(f), "vertices_level0": np.round(np.asarray(v)[:, -2:], 2).tolist()}
                for v, kind, f in zip(regions.data, regions.shape_type, regions.features["factor"])
            ],
        }

    def run(self) -> None:
        """Keep the current run for comparison, then segment the slide with the steered map (same budget)."""
        from napari_m2mrf.inference.slide import SlideRequest
        from napari_m2mrf.widgets.slide_run import SlideRun

        if self.base is None or self.steered is None:
            raise UserError("Start editing first")
        if self.worker is not None and self.cancel_button.enabled:
            raise UserError("a run is going on; wait for it or Cancel it")
        self._preview_now()  # the map of the edits as they are now, not the last throttled preview
        layer = self._slide_by_name()
        if layer is None:
            raise UserError(f"the slide layer {self.base.source!r} is gone")
        path = layer.metadata.get("source") or layer.source.path
        self._keep_previous(layer)
        request = SlideRequest(model=self.base.model, device="auto", output_size=self.base.output_size,
                               density=self.steered, density_source=self.density_source())
        self.slide_run = SlideRun(self, layer, path, request)
        self.slide_run.start()
        self.status.value = "running with your map…"

    def _keep_previous(self, layer: Any) -> None:
        """The run on screen becomes ``prediction (previous run)`` and its dots, hidden (lazy, in memory)."""
        from napari_m2mrf.widgets import slide_layers

        result = slide_layers.last_run(layer)
        self.previous = result
        self.showing_previous = False
        self.compare_button.text = "Compare: show previous run"
        if result is None:  # a reopened workspace: its run is not in memory
            return
        labels = slide_layers._find(self._viewer, PREVIOUS_LABELS, layer.name)
        if labels is None:
            colors = {0: (0, 0, 0, 0), None: (0, 0, 0, 0), **{k: tuple(v) for k, v in result.class_colors.items()}}
            scale, translate = slide_layers.world_frame(layer)
            self._viewer.add_labels(list(result.label_levels), name=PREVIOUS_LABELS, multiscale=True, colormap=colors,
                                    opacity=0.6, visible=False, scale=scale, translate=translate,
                                    units=slide_layers.world_units(layer),
                                    metadata=slide_layers._tag(PREVIOUS_LABELS, layer.name, run_id=result.run_id))
        else:
            labels.data, labels.visible = list(result.label_levels), False
            labels.metadata["m2mrf"]["run_id"] = result.run_id
        slide_layers.show_sampling_dots(self._viewer, layer, result.points, result.relative_density,
                                        role=PREVIOUS_DOTS, visible=False)
        self.compare_button.enabled = True

    def toggle_compare(self) -> None:
        """Flip between the new run (``prediction``, ``sampling dots``) and the previous one."""
        from napari_m2mrf.widgets import slide_layers

        if self.previous is None or self.base is None:
            raise UserError("no previous run to compare with yet: Run with this map first")
        source = self.base.source
        new = [slide_layers._find(self._viewer, slide_layers.LABEL_PYRAMID, source, labels="prediction"),
               slide_layers._find(self._viewer, slide_layers.DOTS, source)]
        old = [slide_layers._find(self._viewer, PREVIOUS_LABELS, source),
               slide_layers._find(self._viewer, PREVIOUS_DOTS, source)]
        self.showing_previous = not self.showing_previous
        for layer in new:
            if layer is not None:
                layer.visible = not self.showing_previous
        for layer in old:
            if layer is not None:
                layer.visible = self.showing_previous
        preview = self._layer(PREVIEW)
        if preview is not None:
            preview.visible = False
        self.compare_button.text = "Compare: show new run" if self.showing_previous else "Compare: show previous run"

    def export_map(self) -> None:
        from napari_m2mrf.io.density_maps import write_density_map

        if self.steered is None:
            raise UserError("Start editing first")
        self._preview_now()
        path = write_density_map(Path(self.export_path.value), self.steered)
        self._notify(f"density map written to {path} (napari-m2mrf predict SLIDE --density {path.name} …)")

    # -- the SlideRun's widget interface ---------------------------------------------------------------

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.status.value = message

    def _on_error(self, exc: Exception) -> None:
        message = "the run was cancelled; nothing was changed" if isinstance(exc, Cancelled) else user_message(exc)
        if message is None:
            from napari.utils.notifications import show_error

            message = f"the steered run failed: {type(exc).__name__}: {exc}"
            show_error(message)
        self._notify(message)

    def _on_finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self._cancel = None
        from napari_m2mrf.widgets.slide_layers import DOTS

        preview, dots = self._layer(PREVIEW), self._layer(DOTS)
        if self.slide_run is not None and self.slide_run.stage == "saved" and preview is not None:
            preview.visible = False  # the run's own dots are the preview's positions now
            if dots is not None:
                dots.visible = not self.showing_previous

    def _cancel_run(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.status.value = "cancelling…"


def _is_slide(layer: Any) -> bool:
    """A slide layer: multiscale, or with the file it came from."""
    return bool(getattr(layer, "multiscale", False) or layer.metadata.get("source"))


def _workspace_of(layer: Any) -> Path | None:
    """The workspace of the slide behind ``layer`` if one holds a stored run (else None)."""
    from napari_m2mrf.io.workspace import Workspace, workspace_path_for

    source = layer.metadata.get("source") or getattr(layer.source, "path", None)
    if not source:
        return None
    candidates = [Path(source)] if Workspace.is_workspace(source) else []
    candidates.append(workspace_path_for(source))
    for path in candidates:
        if Workspace.is_workspace(path) and "sampling" in Workspace.open(path, mode="r").group:
            return path
    return None
