"""A small line plot drawn with QPainter (no plotting library needed): precision–recall curves,
training loss and validation metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 58, 10, 10, 30
LABEL_BAND = 16  # px at the left edge holding the y-axis label, drawn upright (rotated)


@dataclass
class Series:
    """One line: x and y values, an RGBA colour with channels in 0..1, and a legend label."""

    x: np.ndarray
    y: np.ndarray
    color: tuple[float, float, float, float]
    label: str


class LinePlot(QWidget):
    """Axes with labelled ranges, lines and a legend. Ranges are fixed or follow the data."""

    def __init__(
        self,
        x_label: str,
        y_label: str,
        x_range: tuple[float, float] | None = None,
        y_range: tuple[float, float] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.x_label, self.y_label = x_label, y_label
        self.fixed_x, self.fixed_y = x_range, y_range
        self.series: list[Series] = []
        self.setMinimumSize(240, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def axis_label_rects(self) -> dict[str, QRectF]:
        """Where the axis labels are drawn (widget coordinates); the y label's rectangle is upright."""
        plot_height = self.height() - MARGIN_TOP - MARGIN_BOTTOM
        return {
            "x": QRectF(MARGIN_LEFT, self.height() - MARGIN_BOTTOM + 2, self.width() - MARGIN_LEFT - MARGIN_RIGHT, 14),
            "y": QRectF(0, MARGIN_TOP, LABEL_BAND, plot_height),
        }

    def set_series(self, series: Sequence[Series]) -> None:
        self.series = [s for s in series if len(s.x)]
        self.update()

    def _range(self, fixed: tuple[float, float] | None, values: list[np.ndarray]) -> tuple[float, float]:
        if fixed is not None:
            return fixed
        finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
        if finite.size == 0:
            return 0.0, 1.0
        low, high = float(finite.min()), float(finite.max())
        return (low, high) if high > low else (low - 0.5, high + 0.5)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        plot = QRectF(
            MARGIN_LEFT, MARGIN_TOP, self.width() - MARGIN_LEFT - MARGIN_RIGHT, self.height() - MARGIN_TOP - MARGIN_BOTTOM
        )
        x0, x1 = self._range(self.fixed_x, [s.x for s in self.series])
        y0, y1 = self._range(self.fixed_y, [s.y for s in self.series])
        painter.setPen(QPen(QColor(160, 160, 160), 1))
        painter.drawRect(plot)
        painter.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), 14), Qt.AlignmentFlag.AlignCenter, self.x_label)
        painter.drawText(QRectF(plot.left(), plot.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignLeft, f"{x0:.3g}")
        painter.drawText(QRectF(plot.right() - 60, plot.bottom() + 2, 60, 14), Qt.AlignmentFlag.AlignRight, f"{x1:.3g}")
        ticks = QRectF(LABEL_BAND, 0, MARGIN_LEFT - 4 - LABEL_BAND, 14)
        painter.drawText(ticks.translated(0, plot.top()), Qt.AlignmentFlag.AlignRight, f"{y1:.3g}")
        painter.drawText(ticks.translated(0, plot.bottom() - 14), Qt.AlignmentFlag.AlignRight, f"{y0:.3g}")
        label = self.axis_label_rects()["y"]
        painter.save()  # the y label runs upwards along the left edge, whole at any plot height
        painter.translate(label.left(), label.bottom())
        painter.rotate(-90)
        painter.drawText(QRectF(0, 0, label.height(), label.width()), Qt.AlignmentFlag.AlignCenter, self.y_label)
        painter.restore()

        def to_screen(x: float, y: float) -> QPointF:
            return QPointF(
                plot.left() + (x - x0) / (x1 - x0) * plot.width(), plot.bottom() - (y - y0) / (y1 - y0) * plot.height()
            )

        for row, s in enumerate(self.series):
            color = QColor.fromRgbF(*s.color)
            painter.setPen(QPen(color, 2))
            path = QPainterPath()
            points = [(x, y) for x, y in zip(s.x, s.y) if np.isfinite(x) and np.isfinite(y)]
            for i, (x, y) in enumerate(points):
                (path.lineTo if i else path.moveTo)(to_screen(x, y))
            painter.drawPath(path)
            painter.drawText(QRectF(plot.right() - 150, plot.top() + 4 + 14 * row, 146, 14), Qt.AlignmentFlag.AlignRight, s.label)
        painter.end()
