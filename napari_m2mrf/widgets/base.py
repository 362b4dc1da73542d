"""What every napari-m2mrf widget shares: its viewer, layer choices that follow the layer list, a
status line with notifications, and (for widgets that need PyTorch) the import off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from magicgui.widgets import Container, Widget
from qtpy.QtWidgets import QDockWidget

from napari_m2mrf.widgets.deferred_import import after_import

LAYER_LIST_EVENTS = ("inserted", "removed", "reordered", "renamed")  # those napari refreshes docked widgets on


def layer_choices(viewer: Any, kind: str | None = None, keep: Callable[[Any], bool] = lambda layer: True) -> Callable:
    """A ComboBox ``choices`` callable: the viewer's layers of type ``napari.layers.<kind>`` (any type
    when None) for which ``keep(layer)`` is true."""

    def choices(_widget=None) -> list:
        import napari

        layer_type = getattr(napari.layers, kind) if kind else napari.layers.Layer
        return [layer for layer in viewer.layers if isinstance(layer, layer_type) and keep(layer)]

    return choices


class PluginWidget(Container):
    """A ``Container`` on a viewer. Its choices follow the layer list: napari refreshes them once the
    widget is docked, this class while it is not. A widget that needs PyTorch calls
    :meth:`_load_in_background` at the end of its constructor: :attr:`ready` turns true, and
    :meth:`_on_loaded` runs, once the modules are imported off the GUI thread."""

    _loaded = False  # class default, so choices can ask before the constructor sets anything

    def __init__(self, viewer: Any, widgets: Sequence[Widget]) -> None:
        from napari_m2mrf.napari_io import remember_reader_defaults

        self._viewer = viewer
        super().__init__(widgets=widgets)
        remember_reader_defaults()  # from now on a dropped workspace opens here without a dialog
        for name in LAYER_LIST_EVENTS:
            getattr(viewer.layers.events, name).connect(self._refresh_unless_docked)

    @property
    def ready(self) -> bool:
        """True once the modules the widget needs are imported (its Run or Start works)."""
        return self._loaded

    def _load_in_background(self, modules: Sequence[str]) -> None:
        after_import(self.native, modules, self._import_done)

    def _import_done(self, error: str) -> None:
        if error:
            self._notify(error)
            return
        self._loaded = True
        self._on_loaded()

    def _on_loaded(self) -> None:
        """Fill in what needed the modules (model lists, devices) and enable running."""

    def _refresh_unless_docked(self, event=None) -> None:
        try:
            parent = self.native.parentWidget()
        except RuntimeError:  # the Qt widget is gone (closed)
            return
        while parent is not None and not isinstance(parent, QDockWidget):
            parent = parent.parentWidget()
        if parent is None:
            self.reset_choices()

    def _notify(self, message: str) -> None:
        """Show ``message`` in the status line (when the widget has one) and as a napari notification."""
        from napari.utils.notifications import show_info

        if isinstance(getattr(self, "status", None), Widget):
            try:
                self.status.value = message
            except RuntimeError:  # the widget is gone (its window closed): the notification still shows
                pass
        show_info(message)
