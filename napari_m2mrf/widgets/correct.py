"""The Correct widget: fix a lesion Labels layer with napari's brush plus component tools.

napari's own Labels tools (paint, fill, erase, undo) work on the layer as usual; this widget adds
a class picker, "click to delete a component", "click to relabel a component" and "remove
components smaller than N px". Every edit goes through ``Labels.data_setitem``, so Undo reverts it.

Safe default: the widget edits a prediction (the Segment widget's ``lesions`` layer first). It never
picks a ground-truth layer by itself, even when that layer is the only one or comes first; choosing
one asks for confirmation (ground truth is what results are scored against).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, FileEdit, Label, PushButton, SpinBox
from qtpy.QtWidgets import QMessageBox

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.widgets.base import PluginWidget, layer_choices
from napari_m2mrf.widgets.result_layers import LESIONS
from napari_m2mrf.widgets.saving import LayerSaver
from napari_m2mrf.widgets.shortcuts import SHORTCUTS, add_shortcut

if TYPE_CHECKING:
    import napari

CLICK_NONE = "brush (napari's tools)"
CLICK_DELETE = "click: delete component"
CLICK_RELABEL = "click: relabel component"
GROUND_TRUTH_ROLE = "ground truth"


def is_ground_truth(layer: Any) -> bool:
    """True for a ground-truth Labels layer: tagged so, read from a dataset layout (``metadata["layout"]``),
    or named "... ground truth" / "..._ground_truth" (the reader's and the samples' names)."""
    role = layer.metadata.get("m2mrf", {}).get("role")
    if role == LESIONS:
        return False
    if role == GROUND_TRUTH_ROLE or "layout" in layer.metadata:
        return True
    name = layer.name.lower()
    return "ground truth" in name or "ground_truth" in name


def editing_order(layer: Any) -> int:
    """Sort key of the layer choices: the Segment widget's predictions first, ground truth last."""
    if layer.metadata.get("m2mrf", {}).get("role") == LESIONS:
        return 0
    return 2 if is_ground_truth(layer) else 1


class CorrectWidget(PluginWidget):
    """Class picker, tools and component operations for the chosen Labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        paintable = layer_choices(viewer, "Labels", lambda layer: not layer.multiscale)
        self._paintable = lambda _widget=None: sorted(paintable(), key=editing_order)
        self._confirmed: weakref.WeakSet = weakref.WeakSet()  # ground-truth layers the user agreed to edit
        self._previous = None
        self._resetting = False
        self.layer = ComboBox(label="labels", choices=self._paintable, nullable=True)
        self.lesion_class = ComboBox(
            label="class", choices=[(f"{c.code} – {c.name}", c.label) for c in FUNDUS_CLASSES]
        )
        self.click_action = ComboBox(label="tool", choices=[CLICK_NONE, CLICK_DELETE, CLICK_RELABEL])
        self.min_size = SpinBox(label="min size (px)", value=10, min=1, max=100_000)
        self.remove_small_button = PushButton(text="Remove smaller components")
        self.undo_button = PushButton(text="Undo")
        self.write_idrid = CheckBox(text="also write IDRiD masks", value=False)
        self.idrid_folder = FileEdit(label="masks folder", mode="d", visible=False)
        self.save_button = PushButton(text="Save")
        self.status = Label(value="")
        super().__init__(
            viewer,
            [
                self.layer, self.lesion_class, self.click_action, self.min_size,
                self.remove_small_button, self.undo_button, self.write_idrid, self.idrid_folder,
                self.save_button, self.status,
            ],
        )
        self.set_tooltips({
            self.layer: "the Labels layer to correct: the Segment widget's prediction by default; "
                        "choosing ground truth asks first",
            self.lesion_class: f"the class napari's brush paints and a relabel click gives "
                               f"({SHORTCUTS['next_class']} next, {SHORTCUTS['previous_class']} previous)",
            self.click_action: "what a click on the canvas does: napari's own tools, delete the lesion under the "
                               "cursor, or relabel it to the chosen class",
            self.min_size: "components smaller than this many pixels are removed by the button below",
            self.remove_small_button: "delete every component smaller than the minimum size (one undoable edit)",
            self.undo_button: "undo the last edit of the layer (as napari's Ctrl+Z)",
            self.write_idrid: "also write IDRiD-style per-class masks when saving",
            self.idrid_folder: "the folder the IDRiD masks go to",
            self.save_button: f"save the corrections into the image's workspace ({SHORTCUTS['correct_save']}); "
                              "edits are also saved every minute and on close",
        })
        add_shortcut(self.native, "correct_save", self.save)
        add_shortcut(self.native, "next_class", lambda: self.step_class(1))
        add_shortcut(self.native, "previous_class", lambda: self.step_class(-1))
        self.saver = LayerSaver(viewer, self._notify, owner=self.native)
        self.write_idrid.changed.connect(lambda on: setattr(self.idrid_folder, "visible", on))
        self.save_button.clicked.connect(self.save)
        self._hooked = None
        self.layer.changed.connect(self._on_layer_chosen)
        self.lesion_class.changed.connect(self._pick_class)
        self.click_action.changed.connect(self._set_click_action)
        self.remove_small_button.clicked.connect(self.remove_small)
        self.undo_button.clicked.connect(self.undo)
        self._choose_default()
        self._hook_layer(self.layer.value)

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer choices; never lands on a ground-truth layer the user has not agreed to edit."""
        self._resetting = True
        try:
            super().reset_choices(*args)
        finally:
            self._resetting = False
        self._choose_default()

    def _choose_default(self) -> None:
        current = self.layer.value
        if current is not None and (not is_ground_truth(current) or current in self._confirmed):
            return
        fallback = next((layer for layer in self._paintable() if not is_ground_truth(layer)), None)
        if fallback is not current:
            self.layer.value = fallback

    def _on_layer_chosen(self, layer) -> None:
        """A choice of the user (or of the defaults): a ground-truth layer only after a Yes."""
        if layer is not None and is_ground_truth(layer) and layer not in self._confirmed:
            if self._resetting:
                return  # the refresh picked it, not the user: _choose_default moves off it
            if not self._confirm_ground_truth(layer):
                previous = self._previous if self._previous in self._paintable() else None
                self.layer.value = previous
                if previous is None:
                    self._choose_default()
                return
            self._confirmed.add(layer)
        self._previous = layer
        self._hook_layer(layer)

    def _confirm_ground_truth(self, layer) -> bool:
        answer = QMessageBox.question(
            self.native,
            "Edit ground truth?",
            f"'{layer.name}' is ground truth: the reference predictions are scored against.\n"
            "Correct lesions normally edits a prediction. Edit this ground truth anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            self._notify(f"kept {layer.name!r} unchanged; choose a prediction to correct")
            return False
        return True

    def save(self) -> None:
        """Save the layer into its image's workspace (and IDRiD masks when asked)."""
        folder = Path(self.idrid_folder.value) if self.write_idrid.value else None
        if folder is not None and (str(self.idrid_folder.value) in ("", ".") or not folder.is_dir()):
            self._notify("choose an existing folder for the IDRiD masks")
            return
        self.saver.save(folder)

    def _hook_layer(self, layer) -> None:
        self.saver.track(layer)
        if self._hooked is not None and self._on_click in self._hooked.mouse_drag_callbacks:
            self._hooked.mouse_drag_callbacks.remove(self._on_click)
        self._hooked = layer
        if layer is not None:
            layer.mouse_drag_callbacks.append(self._on_click)

    def step_class(self, step: int) -> None:
        """Pick the next (``step`` 1) or previous (-1) lesion class, wrapping around."""
        labels = [cls.label for cls in FUNDUS_CLASSES]
        current = labels.index(self.lesion_class.value) if self.lesion_class.value in labels else 0
        self.lesion_class.value = labels[(current + step) % len(labels)]

    def _pick_class(self, label: int) -> None:
        layer = self.layer.value
        if layer is not None:
            layer.selected_label = label

    def _set_click_action(self, action: str) -> None:
        layer = self.layer.value
        if layer is not None and action != CLICK_NONE:
            layer.mode = "pan_zoom"  # a click must not also paint

    def _on_click(self, layer, event) -> None:
        action = self.click_action.value
        if action == CLICK_NONE or event.type != "mouse_press":
            return
        from napari_m2mrf.label_tools import component_at  # scipy: imported by the warm-up, off the GUI thread

        indices = component_at(layer.data, layer.world_to_data(event.position))
        if indices is None:
            return
        value = 0 if action == CLICK_DELETE else self.lesion_class.value
        layer.data_setitem(indices, value)
        verb = "deleted" if value == 0 else f"relabelled to {self.lesion_class.current_choice}"
        self.status.value = f"{verb}: {indices[0].size} px"

    def remove_small(self) -> None:
        """Delete every component smaller than the chosen size, in one undoable edit."""
        layer = self.layer.value
        if layer is None:
            self.status.value = "choose a Labels layer"
            return
        from napari_m2mrf.label_tools import small_components

        indices = small_components(layer.data, int(self.min_size.value))
        layer.data_setitem(indices, 0)
        self.status.value = f"removed {indices[0].size} px in components under {self.min_size.value} px"

    def undo(self) -> None:
        layer = self.layer.value
        if layer is not None:
            layer.undo()
