"""What every napari-m2mrf widget shares: its viewer, layer choices that follow the layer list, a
status line with notifications, and (for widgets that need PyTorch) the import off the GUI thread.

A window that fits: the controls sit in a scroll area (several docks stacked at 1280×800 share the
height instead of growing the window), the status line wraps instead of widening the dock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from magicgui.widgets import Container, Label, Widget
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QComboBox, QDockWidget, QFrame, QLayout, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from napari_m2mrf.widgets.deferred_import import after_import

LAYER_LIST_EVENTS = ("inserted", "removed", "reordered", "renamed")  # those napari refreshes docked widgets on
MIN_BODY_HEIGHT = 120  # px of controls a dock keeps visible when docks share a short window
COMBO_MIN_CHARACTERS = 10  # a drop-down is at least this wide; its list shows long choices whole


def wrap_status(label: Label) -> None:
    """A status line that wraps long messages (a slide run's) instead of widening its dock."""
    label.native.setWordWrap(True)
    label.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    label.native.setMinimumWidth(0)


def layer_choices(viewer: Any, kind: str | None = None, keep: Callable[[Any], bool] = lambda layer: True) -> Callable:
    """A ComboBox ``choices`` callable: the viewer's layers of type ``napari.layers.<kind>`` (any type
    when None) for which ``keep(layer)`` is true."""

    def choices(_widget=None) -> list:
        import napari

        layer_type = getattr(napari.layers, kind) if kind else napari.layers.Layer
        return [layer for layer in viewer.layers if isinstance(layer, layer_type) and keep(layer)]

    return choices


class _OnLayoutRequest(QObject):
    """Calls ``callback`` whenever ``widget``'s layout is recomputed."""

    def __init__(self, widget: QWidget, callback: Callable[[], None]) -> None:
        super().__init__(widget)
        self._callback = callback
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.LayoutRequest:
            self._callback()
        return False


class PluginWidget(Container):
    """A ``Container`` on a viewer. Its choices follow the layer list: napari refreshes them once the
    widget is docked, this class while it is not. A widget that needs PyTorch calls
    :meth:`_load_in_background` at the end of its constructor: :attr:`ready` turns true, and
    :meth:`_on_loaded` runs, once the modules are imported off the GUI thread."""

    _loaded = False  # class default, so choices can ask before the constructor sets anything

    def __init__(self, viewer: Any, widgets: Sequence[Widget]) -> None:
        from napari_m2mrf.widgets import warm_up
        from napari_m2mrf.widgets.reader_defaults import remember_reader_defaults

        self._viewer = viewer
        super().__init__(widgets=widgets)
        if isinstance(getattr(self, "status", None), Label):
            wrap_status(self.status)
        self.body_layout = self._scroll_body()
        remember_reader_defaults()  # from now on a dropped workspace opens here without a dialog
        warm_up.start()  # what napari's layers and the widgets import on first use, off the GUI thread
        for name in LAYER_LIST_EVENTS:
            getattr(viewer.layers.events, name).connect(self._refresh_unless_docked)

    def _scroll_body(self) -> QLayout:
        """Move the controls into a vertical scroll area inside :attr:`native`; returns their layout (the
        container's own, so ``insert``/``remove`` keep working; subclasses add plots to it)."""
        layout = self.native.layout()
        layout.setContentsMargins(4, 4, 4, 4)
        body = QWidget()
        body.setLayout(layout)  # Qt takes the layout (and its widgets) over from native
        scroll = QScrollArea()
        scroll.setObjectName("m2mrf_body")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        scroll.setMinimumHeight(MIN_BODY_HEIGHT)
        outer = QVBoxLayout()
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.native.setLayout(outer)
        self._scroll = scroll
        self._refit = _OnLayoutRequest(body, self._fit_width)  # controls added, shown or hidden later
        self._fit_width()
        return layout

    def _fit_width(self) -> None:
        """Keep the scroll area as wide as its controls need (no horizontal scrolling); drop-downs do not
        widen the dock to their longest choice (a model path, a long region name)."""
        body = self._scroll.widget()
        for combo in body.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(COMBO_MIN_CHARACTERS)
        width = body.minimumSizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width()
        if self._scroll.minimumWidth() != width:
            self._scroll.setMinimumWidth(width)

    def set_tooltips(self, tips: dict[Widget, str]) -> None:
        """Give each control its tooltip (what it does, and its keyboard shortcut where it has one)."""
        for widget, tip in tips.items():
            widget.tooltip = tip

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
