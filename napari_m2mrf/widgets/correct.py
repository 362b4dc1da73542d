"""The Correct widget: fix a lesion Labels layer with napari's brush plus component tools.

napari's own Labels tools (paint, fill, erase, undo) work on the layer as usual; this widget adds
a class picker, "click to delete a component", "click to relabel a component" and "remove
components smaller than N px". Every edit goes through ``Labels.data_setitem``, so Undo reverts it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, FileEdit, Label, PushButton, SpinBox

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.label_tools import component_at, small_components
from napari_m2mrf.widgets.base import PluginWidget, layer_choices
from napari_m2mrf.widgets.saving import LayerSaver

if TYPE_CHECKING:
    import napari

CLICK_NONE = "brush (napari's tools)"
CLICK_DELETE = "click: delete component"
CLICK_RELABEL = "click: relabel component"


class CorrectWidget(PluginWidget):
    """Class picker, tools and component operations for the chosen Labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        paintable = layer_choices(viewer, "Labels", lambda layer: not layer.multiscale)
        self.layer = ComboBox(label="labels", choices=paintable)
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
        self.saver = LayerSaver(viewer, self._notify, owner=self.native)
        self.write_idrid.changed.connect(lambda on: setattr(self.idrid_folder, "visible", on))
        self.save_button.clicked.connect(self.save)
        self._hooked = None
        self.layer.changed.connect(self._hook_layer)
        self.lesion_class.changed.connect(self._pick_class)
        self.click_action.changed.connect(self._set_click_action)
        self.remove_small_button.clicked.connect(self.remove_small)
        self.undo_button.clicked.connect(self.undo)
        self._hook_layer(self.layer.value)

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
        indices = small_components(layer.data, int(self.min_size.value))
        layer.data_setitem(indices, 0)
        self.status.value = f"removed {indices[0].size} px in components under {self.min_size.value} px"

    def undo(self) -> None:
        layer = self.layer.value
        if layer is not None:
            layer.undo()
