"""The Lesion inventory widget: a sortable, filterable table of every connected lesion of a Labels
layer, for review one lesion at a time.

Each row is one lesion (class with its colour, area in pixels and in µm² or mm² when the pixel size is
known, mean probability when the Segment widget's per-class probability layers of the same image are
in the viewer, centroid, review status); per-class counts sit above the table. Clicking a row (or
Previous/Next) centres and zooms the view on the lesion; Accept marks it reviewed, Reject deletes it
from the Labels layer with ``Labels.data_setitem`` (one step of napari's undo). Keys while the widget
has focus: N / P next / previous, A accept, R or Delete reject.

The table follows the layer: its ``data``, ``paint`` and ``set_data`` events (``set_data`` also comes
after an undo) restart a 250 ms timer, and the inventory (``lesion_inventory``, numpy/scipy) is then
computed on a copy of the labels in a superqt worker thread; the table is filled in one go when the
worker returns, only when the lesions changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer
from qtpy.QtGui import QBrush, QColor, QKeySequence
from qtpy.QtWidgets import QAbstractItemView, QFileDialog, QHeaderView, QLabel, QShortcut, QTableView

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.lesion_inventory import ACCEPTED, PENDING, Inventory, Lesion, pixel_size_from
from napari_m2mrf.widgets.base import PluginWidget, layer_choices
from napari_m2mrf.widgets.result_layers import PROBABILITY
from napari_m2mrf.widgets.view import camera

if TYPE_CHECKING:
    import napari

ALL_CLASSES = "all classes"
DEBOUNCE_MS = 250
COLUMNS = ("#", "class", "area (px)", "area", "mean p", "centroid (row, col)", "status")
ID_COLUMN, CLASS_COLUMN, AREA_PX_COLUMN, AREA_COLUMN, PROB_COLUMN, CENTROID_COLUMN, STATUS_COLUMN = range(len(COLUMNS))
ZOOM_CONTEXT = 4.0  # the view shows about this many times the lesion's size
MIN_VIEW_PX = 32.0  # ... and at least this many data pixels (a 1-px microaneurysm is not zoomed to fill the screen)
CLASS_COLOURS = {cls.code: cls.color for cls in FUNDUS_CLASSES}


def _qcolor(rgba: tuple[float, ...]) -> QColor:
    return QColor.fromRgbF(*rgba[:3], 1.0)


SORT_ROLE = Qt.ItemDataRole.UserRole + 1


class LesionTableModel(QAbstractTableModel):
    """The rows of the table: the inventory's lesions that pass the filters, in the chosen order.

    Filtering and sorting are plain Python over the lesion list, and a change resets the model in one
    step; the view asks only for the cells it shows, so thousands of lesions fill the table at once.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.inventory: Inventory | None = None
        self.reviewed: dict[Any, str] = {}
        self.rows: list[Lesion] = []
        self.code = ALL_CLASSES
        self.min_area = 0
        self.sort_column, self.sort_order = ID_COLUMN, Qt.SortOrder.AscendingOrder

    # filling
    def set_inventory(self, inventory: Inventory | None, reviewed: dict[Any, str]) -> None:
        self.beginResetModel()
        self.inventory, self.reviewed = inventory, reviewed
        self.rows = self._filtered_sorted()
        self.endResetModel()
        self.headerDataChanged.emit(Qt.Orientation.Horizontal, AREA_COLUMN, AREA_COLUMN)

    def set_filter(self, code: str, min_area: int) -> None:
        self.code, self.min_area = code, int(min_area)
        self.set_inventory(self.inventory, self.reviewed)

    def _filtered_sorted(self) -> list[Lesion]:
        if self.inventory is None:
            return []
        rows = [
            lesion for lesion in self.inventory.lesions
            if (self.code == ALL_CLASSES or lesion.code == self.code) and lesion.area_px >= self.min_area
        ]
        rows.sort(key=lambda lesion: (self.sort_value(lesion, self.sort_column), lesion.id),
                  reverse=self.sort_order == Qt.SortOrder.DescendingOrder)
        return rows

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self.sort_column, self.sort_order = column, order
        self.rows = self._filtered_sorted()
        self.layoutChanged.emit()

    def set_status(self, lesion: Lesion, status: str) -> None:
        self.reviewed[lesion.key] = status
        for row, other in enumerate(self.rows):
            if other.key == lesion.key:
                index = self.index(row, STATUS_COLUMN)
                self.dataChanged.emit(index, index)

    def remove(self, lesion: Lesion) -> None:
        for row, other in enumerate(self.rows):
            if other.key == lesion.key:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self.rows[row]
                self.endRemoveRows()
                return

    def row_of(self, lesion: Lesion | None) -> int:
        if lesion is not None:
            for row, other in enumerate(self.rows):
                if other.key == lesion.key:
                    return row
        return -1

    # what the view asks
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or role != Qt.ItemDataRole.DisplayRole:
            return None
        if section == AREA_COLUMN:
            size = self.inventory.pixel_size if self.inventory is not None else None
            return f"area ({size.area_unit})" if size else "area"
        return COLUMNS[section]

    def sort_value(self, lesion: Lesion, column: int) -> Any:
        if column == CLASS_COLUMN:
            return lesion.label
        if column == AREA_PX_COLUMN or column == AREA_COLUMN:
            return lesion.area_px
        if column == PROB_COLUMN:
            return -1.0 if lesion.mean_probability is None else lesion.mean_probability
        if column == CENTROID_COLUMN:
            return lesion.centroid
        if column == STATUS_COLUMN:
            return self.reviewed.get(lesion.key, PENDING)
        return lesion.id

    def text(self, lesion: Lesion, column: int) -> str:
        if column == ID_COLUMN:
            return str(lesion.id)
        if column == CLASS_COLUMN:
            return lesion.code
        if column == AREA_PX_COLUMN:
            return str(lesion.area_px)
        if column == AREA_COLUMN:
            area = self.inventory.area(lesion) if self.inventory is not None else None
            return "–" if area is None else f"{area:.4g}"
        if column == PROB_COLUMN:
            return "–" if lesion.mean_probability is None else f"{lesion.mean_probability:.3f}"
        if column == CENTROID_COLUMN:
            return f"{lesion.centroid[0]:.1f}, {lesion.centroid[1]:.1f}"
        return self.reviewed.get(lesion.key, PENDING)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        lesion, column = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text(lesion, column)
        if role == SORT_ROLE:
            return self.sort_value(lesion, column)
        if role == Qt.ItemDataRole.UserRole:
            return lesion.id
        if column == CLASS_COLUMN and lesion.code in CLASS_COLOURS:
            colour = CLASS_COLOURS[lesion.code]
            if role == Qt.ItemDataRole.BackgroundRole:
                return QBrush(_qcolor(colour))
            if role == Qt.ItemDataRole.ForegroundRole:
                return QBrush(QColor("black") if sum(colour[:3]) > 1.2 else QColor("white"))
        if role == Qt.ItemDataRole.TextAlignmentRole and column != CLASS_COLUMN:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class InventoryWidget(PluginWidget):
    """Labels-layer choice, filters, per-class counts, the lesion table and the review buttons."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        flat_2d = layer_choices(viewer, "Labels", lambda layer: not layer.multiscale and layer.ndim == 2)
        self.layer = ComboBox(label="lesions", choices=flat_2d)
        self.class_filter = ComboBox(label="class", choices=[ALL_CLASSES] + [c.code for c in FUNDUS_CLASSES])
        self.min_area = SpinBox(label="min area (px)", value=0, min=0, max=10**9)
        self.pixel_size = FloatSpinBox(
            label="pixel size (µm)", value=0.0, min=0.0, max=1e6, step=0.1,
            tooltip="0: read it from the layer (metadata pixel_size_um, its image's metadata, or its scale)",
        )
        self.previous_button = PushButton(text="◀ Previous (P)")
        self.next_button = PushButton(text="Next (N) ▶")
        self.accept_button = PushButton(text="Accept (A)")
        self.reject_button = PushButton(text="Reject (R)")
        self.export_button = PushButton(text="Export CSV…")
        navigation = Container(layout="horizontal", labels=False, widgets=[self.previous_button, self.next_button])
        review = Container(layout="horizontal", labels=False, widgets=[self.accept_button, self.reject_button])
        self.status = Label(value="")
        super().__init__(
            viewer, [self.layer, self.class_filter, self.min_area, self.pixel_size, navigation, review,
                     self.export_button, self.status],
        )
        self.counts_label = QLabel("")
        self.counts_label.setTextFormat(Qt.TextFormat.RichText)
        self.counts_label.setWordWrap(True)
        self.model = LesionTableModel(self.native)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(ID_COLUMN, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setResizeContentsPrecision(50)  # widths from the first rows, not all
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self.table.setMinimumHeight(220)
        layout = self.native.layout()
        row = navigation.native
        while row.parentWidget() is not None and row.parentWidget() is not self.native:
            row = row.parentWidget()  # magicgui wraps labelled widgets in a row widget
        layout.insertWidget(layout.indexOf(row), self.counts_label)
        layout.insertWidget(layout.indexOf(row), self.table, 1)

        self.inventory: Inventory | None = None
        self.reviewed: dict[Any, str] = {}
        self.worker = None
        self.computations = 0  # finished computations (tests wait on it)
        self._hooked = None
        self._dirty = False
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_now)

        self.layer.changed.connect(self._hook_layer)
        self.class_filter.changed.connect(self._fill_table)
        self.min_area.changed.connect(self._fill_table)
        self.pixel_size.changed.connect(self.schedule_update)
        self.previous_button.clicked.connect(self.previous_lesion)
        self.next_button.clicked.connect(self.next_lesion)
        self.accept_button.clicked.connect(self.accept_current)
        self.reject_button.clicked.connect(self.reject_current)
        self.export_button.clicked.connect(self._export_dialog)
        self.table.selectionModel().currentRowChanged.connect(self._on_current_row)
        self._quiet = False  # True while the code (not the user) moves the current row
        for name in ("inserted", "removed"):  # probability layers come and go with Segment runs
            getattr(viewer.layers.events, name).connect(self.schedule_update)
        for keys, action in ((("N",), self.next_lesion), (("P",), self.previous_lesion), (("A",), self.accept_current),
                             (("R", "Delete"), self.reject_current)):
            for key in keys:
                shortcut = QShortcut(QKeySequence(key), self.native)
                shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                shortcut.activated.connect(action)
        self._hook_layer(self.layer.value)

    # -- following the layer ------------------------------------------------------------------

    def _hook_layer(self, layer: Any) -> None:
        if self._hooked is not None:
            for name in ("data", "paint", "set_data"):
                getattr(self._hooked.events, name).disconnect(self.schedule_update)
        self._hooked = layer
        self.reviewed = {}
        self.inventory = None
        if layer is not None:
            for name in ("data", "paint", "set_data"):
                getattr(layer.events, name).connect(self.schedule_update)
        self.update_now()

    def schedule_update(self, event: Any = None) -> None:
        """Recompute the inventory ``DEBOUNCE_MS`` after the last change of the layer."""
        try:
            self._timer.start()
        except RuntimeError:  # the widget was closed; the layer outlives it
            self._unhook()

    def _unhook(self) -> None:
        if self._hooked is not None:
            for name in ("data", "paint", "set_data"):
                getattr(self._hooked.events, name).disconnect(self.schedule_update)
            self._hooked = None
        for name in ("inserted", "removed"):
            getattr(self._viewer.layers.events, name).disconnect(self.schedule_update)

    @property
    def busy(self) -> bool:
        """True while an update is scheduled or being computed."""
        return self._timer.isActive() or self.worker is not None or self._dirty

    def update_now(self) -> None:
        """Start computing the inventory of the chosen layer in a worker thread (one at a time)."""
        from superqt.utils import create_worker

        from napari_m2mrf.lesion_inventory import lesion_inventory

        self._timer.stop()
        if self.worker is not None:
            self._dirty = True
            return
        self._dirty = False
        layer = self.layer.value
        if layer is None or layer not in self._viewer.layers:
            self.inventory = None
            self._fill_table()
            self.status.value = "choose a Labels layer"
            return
        labels = np.array(layer.data, copy=True)  # the user may paint while the worker reads
        probabilities = self._probabilities(layer, labels.shape)
        pixel_size = self._pixel_size(layer)
        self.worker = create_worker(
            lesion_inventory, labels, probabilities=probabilities, pixel_size=pixel_size,
            _connect={"returned": self._show, "errored": self._on_error, "finished": self._on_finished},
        )

    def _source_image(self, layer: Any) -> Any | None:
        source = layer.metadata.get("m2mrf", {}).get("source")
        return next((lay for lay in self._viewer.layers if lay.name == source), None) if source else None

    def _probabilities(self, layer: Any, shape: tuple[int, ...]) -> dict[int, Any]:
        """Label value → probability map, from the Segment widget's hidden per-class probability layers
        (``metadata["m2mrf"] = {"role": "probability", "source": <image>, "code": <class>}``) of the image
        the Labels layer was predicted for."""
        source = layer.metadata.get("m2mrf", {}).get("source")
        if not source:
            return {}
        by_code = {cls.code: cls.label for cls in FUNDUS_CLASSES}
        maps = {}
        for other in self._viewer.layers:
            tag = other.metadata.get("m2mrf", {})
            if tag.get("role") == PROBABILITY and tag.get("source") == source and tag.get("code") in by_code:
                if not other.multiscale and tuple(other.data.shape) == tuple(shape):
                    maps[by_code[tag["code"]]] = other.data
        return maps

    def _pixel_size(self, layer: Any):
        image = self._source_image(layer)
        return pixel_size_from(
            entered_um=float(self.pixel_size.value),
            layer_metadata=layer.metadata,
            image_metadata=image.metadata if image is not None else None,
            scale=list(layer.scale),
            units=[str(unit) for unit in getattr(layer, "units", ())] or None,
        )

    def _on_error(self, exc: Exception) -> None:
        self._notify(f"lesion inventory failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self.computations += 1
        if self._dirty:
            try:
                self.update_now()
            except RuntimeError:  # closed
                self._unhook()

    def _show(self, inventory: Inventory) -> None:
        try:
            self.table.objectName()
        except RuntimeError:  # the widget was closed while the worker ran
            return
        if inventory.same_lesions(self.inventory):
            return
        self.inventory = inventory
        current = set(self.reviewed)
        self.reviewed = {lesion.key: self.reviewed[lesion.key] for lesion in inventory.lesions if lesion.key in current}
        self._fill_table()

    # -- the table ----------------------------------------------------------------------------

    def visible_lesions(self) -> list[Lesion]:
        """The lesions in the table: those that pass the class filter and the minimum area, in the table's order."""
        return list(self.model.rows)

    def _fill_table(self, _value: Any = None) -> None:
        """Apply the filters and show the inventory (one model reset), keeping the current lesion."""
        current = self.current_lesion()
        self.model.code, self.model.min_area = self.class_filter.value, int(self.min_area.value)
        self.model.set_inventory(self.inventory, self.reviewed)
        header = self.model.headerData(AREA_COLUMN, Qt.Orientation.Horizontal)
        if self.model.rows and header != self._fitted_header:
            self.table.resizeColumnsToContents()  # from the first rows; again when the area unit changes
            self._fitted_header = header
        self._select(current, centre=False)
        self._fill_counts()

    _fitted_header = None

    def _fill_counts(self) -> None:
        if self.inventory is None:
            self.counts_label.setText("")
            return
        parts = []
        for code, count in self.inventory.counts().items():
            colour = CLASS_COLOURS.get(code)
            swatch = f'<span style="color:{_qcolor(colour).name()}">■</span> ' if colour else ""
            parts.append(f"{swatch}{code} {count}")
        total = len(self.inventory.lesions)
        accepted = sum(1 for status in self.reviewed.values() if status == ACCEPTED)
        self.counts_label.setText(
            " &nbsp; ".join(parts) + f"<br>{total} lesions, {self.model.rowCount()} shown, {accepted} accepted"
        )
        size = self.inventory.pixel_size
        self.status.value = (f"pixel size {size.um:.4g} µm ({size.source})" if size else
                             "pixel size unknown: areas in pixels (enter it above)")

    def row_lesion(self, row: int) -> Lesion | None:
        """The lesion shown in table row ``row`` (top to bottom, as sorted)."""
        return self.model.rows[row] if 0 <= row < len(self.model.rows) else None

    def current_lesion(self) -> Lesion | None:
        return self.row_lesion(self.table.currentIndex().row())

    def _select(self, lesion: Lesion | None, centre: bool = True) -> None:
        row = self.model.row_of(lesion)
        if row >= 0:
            self._select_row(row, centre)

    def _select_row(self, row: int, centre: bool = True) -> None:
        self._quiet = True
        try:
            self.table.setCurrentIndex(self.model.index(row, 0))
            self.table.selectRow(row)
        finally:
            self._quiet = False
        lesion = self.row_lesion(row)
        if centre and lesion is not None:
            self.go_to(lesion)

    def _on_current_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        lesion = self.row_lesion(current.row())
        if not self._quiet and lesion is not None:
            self.go_to(lesion)

    # -- review -------------------------------------------------------------------------------

    def go_to(self, lesion: Lesion) -> None:
        """Centre the view on ``lesion`` and zoom so that it fills about 1/``ZOOM_CONTEXT`` of the canvas."""
        layer = self.layer.value
        if layer is None:
            return
        cam = camera(self._viewer)
        world = np.asarray(layer.data_to_world(lesion.centroid), float)
        r0, c0, r1, c1 = lesion.bbox
        scale = np.abs(np.asarray(layer.scale[-2:], float))
        extent = np.maximum(np.array([r1 - r0, c1 - c0], float) * ZOOM_CONTEXT, MIN_VIEW_PX) * scale
        height, width = self._viewer.canvas.size
        cam.center = tuple(world[-2:])
        cam.zoom = float(min(height / extent[0], width / extent[1]))
        self.status.value = f"lesion {lesion.id}: {lesion.code}, {lesion.area_px} px"

    def _step(self, delta: int) -> None:
        rows = self.model.rowCount()
        if rows == 0:
            return
        current = self.table.currentIndex().row()
        row = (0 if delta > 0 else rows - 1) if current < 0 else (current + delta) % rows
        self._select_row(row)

    def next_lesion(self) -> None:
        """Select the next row of the table (in its sorted order) and centre the view on it."""
        self._step(1)

    def previous_lesion(self) -> None:
        self._step(-1)

    def accept_current(self) -> None:
        """Mark the current lesion reviewed (kept) and go to the next one."""
        lesion = self.current_lesion()
        if lesion is None:
            self.status.value = "select a lesion first"
            return
        self.model.set_status(lesion, ACCEPTED)  # the model shares self.reviewed
        self._fill_counts()
        self.next_lesion()

    def reject_current(self) -> None:
        """Delete the current lesion from the Labels layer (one undoable edit) and go to the next one."""
        from napari_m2mrf.lesion_inventory import component_indices

        lesion, layer = self.current_lesion(), self.layer.value
        if lesion is None or layer is None:
            self.status.value = "select a lesion first"
            return
        indices = component_indices(layer.data, lesion)
        if indices[0].size == 0:
            self.status.value = "that lesion is no longer in the layer"
            self.schedule_update()
            return
        row = self.table.currentIndex().row()
        layer.data_setitem(indices, 0)  # napari's undo history: Ctrl+Z or layer.undo() restores it
        self.model.remove(lesion)
        if self.model.rowCount():
            self._select_row(min(row, self.model.rowCount() - 1))
        self.status.value = f"rejected lesion {lesion.id} ({lesion.code}, {indices[0].size} px): undo restores it"

    # -- export -------------------------------------------------------------------------------

    def export_csv(self, path: str | Path, shown_only: bool = False) -> Path | None:
        """Write the inventory (all lesions, or only the filtered ones) as CSV to ``path``."""
        from napari_m2mrf.errors import UserError
        from napari_m2mrf.lesion_inventory import write_inventory_csv

        if self.inventory is None:
            self._notify("no inventory to export yet")
            return None
        try:
            written = write_inventory_csv(
                path, self.inventory, self.reviewed, self.visible_lesions() if shown_only else None
            )
        except (OSError, UserError) as exc:
            self._notify(f"export failed: {exc}")
            return None
        self._notify(f"wrote {written}")
        return written

    def _export_dialog(self) -> None:
        name = f"{self.layer.value.name}_lesions.csv" if self.layer.value is not None else "lesions.csv"
        path, _ = QFileDialog.getSaveFileName(self.native, "Export the lesion inventory", name, "CSV (*.csv)")
        if path:
            self.export_csv(path)
