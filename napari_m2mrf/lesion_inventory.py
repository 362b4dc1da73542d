"""The lesion inventory: every connected lesion of a label image, with its class, area, centroid and
mean probability; per-class counts; CSV export. numpy/scipy only (no Qt, no napari, no torch), so the
Lesion inventory widget computes it in a worker thread and tests call it directly.

A lesion is a connected component (8-neighbourhood, like ``label_tools``) of one label value: two
touching lesions of different classes are two lesions. Coordinates are data pixels (row, col) of the
label image. Areas are given in pixels and, when the pixel size is known, in µm² (pixel side under
1 µm: microscopy) or mm² (fundus photographs, whose pixels are a few µm).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from napari_m2mrf.classes import FUNDUS_CLASSES, LesionClass
from napari_m2mrf.jobs import CancelToken

EIGHT_NEIGHBOURS = np.ones((3, 3), bool)
UM_PER_UNIT = {"nm": 1e-3, "nanometer": 1e-3, "µm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0,
               "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6}
CSV_COLUMNS = (
    "id", "class", "class_name", "area_px", "area_um2", "area_mm2", "mean_probability",
    "centroid_row", "centroid_col", "bbox_row_min", "bbox_col_min", "bbox_row_max", "bbox_col_max",
    "status",
)
PENDING, ACCEPTED = "pending", "accepted"


@dataclass(frozen=True)
class PixelSize:
    """Side of one (square) pixel in µm, and where it was read (shown to the user, e.g. "layer metadata")."""

    um: float
    source: str

    @property
    def area_unit(self) -> str:
        """``µm²`` for microscopy pixels (< 1 µm), ``mm²`` otherwise."""
        return "µm²" if self.um < 1.0 else "mm²"

    def area(self, pixels: float) -> float:
        """``pixels`` pixels as an area in :attr:`area_unit`."""
        um2 = pixels * self.um * self.um
        return um2 if self.area_unit == "µm²" else um2 * 1e-6


@dataclass(frozen=True)
class Lesion:
    """One connected lesion. ``key`` identifies it across recomputations while it is unchanged."""

    id: int
    label: int
    code: str
    area_px: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]  # row_min, col_min, row_max, col_max (max exclusive)
    mean_probability: float | None = None
    representative: tuple[int, int] = (0, 0)  # one pixel of the lesion (row, col)

    @property
    def key(self) -> tuple[int, int, tuple[int, int, int, int]]:
        return (self.label, self.area_px, self.bbox)


@dataclass(frozen=True)
class Inventory:
    """The lesions of one label image (sorted by class, then by area, largest first)."""

    lesions: tuple[Lesion, ...]
    shape: tuple[int, int]
    pixel_size: PixelSize | None = None
    classes: tuple[LesionClass, ...] = FUNDUS_CLASSES

    def counts(self) -> dict[str, int]:
        """Number of lesions per class code (every class listed, zero included; unknown labels as ``label <n>``)."""
        counts = {cls.code: 0 for cls in self.classes}
        for lesion in self.lesions:
            counts[lesion.code] = counts.get(lesion.code, 0) + 1
        return counts

    def area(self, lesion: Lesion) -> float | None:
        """The lesion's physical area in ``pixel_size.area_unit``; None when the pixel size is unknown."""
        return None if self.pixel_size is None else self.pixel_size.area(lesion.area_px)

    def same_lesions(self, other: Inventory | None) -> bool:
        return other is not None and [l.key for l in self.lesions] == [l.key for l in other.lesions] and \
            [l.mean_probability for l in self.lesions] == [l.mean_probability for l in other.lesions] and \
            self.pixel_size == other.pixel_size


def _code(label: int, classes: Sequence[LesionClass]) -> str:
    for cls in classes:
        if cls.label == label:
            return cls.code
    return f"label {label}"


def lesion_inventory(
    labels: Any,
    *,
    probabilities: Mapping[int, Any] | None = None,
    pixel_size: PixelSize | None = None,
    classes: tuple[LesionClass, ...] = FUNDUS_CLASSES,
    cancel: CancelToken | None = None,
) -> Inventory:
    """Every connected lesion of the 2-D label image ``labels``.

    ``probabilities``: label value → ``(H, W)`` probability map of that class (the mean over each
    lesion of its own class's map is reported); maps of another shape are ignored. ``cancel`` is
    checked between classes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"the inventory needs a 2-D label image; got shape {labels.shape}")
    height, width = labels.shape
    probabilities = probabilities or {}
    if labels.dtype.kind in "ub" and labels.dtype.itemsize <= 2:  # a histogram is much faster than a sort
        present = np.flatnonzero(np.bincount(labels.ravel().astype(np.intp, copy=False)))
    else:
        present = np.unique(labels)
    lesions: list[Lesion] = []
    for value in (int(v) for v in present if v != 0):
        if cancel is not None:
            cancel.check()
        components, count = ndimage.label(labels == value, structure=EIGHT_NEIGHBOURS)
        flat = components.ravel()
        where = np.flatnonzero(flat)
        ids = flat[where]
        rows, cols = np.divmod(where, width)
        area = np.bincount(ids, minlength=count + 1)
        row_sum = np.bincount(ids, weights=rows, minlength=count + 1)
        col_sum = np.bincount(ids, weights=cols, minlength=count + 1)
        prob = probabilities.get(value)
        prob_sum = None
        if prob is not None and tuple(np.shape(prob)) == (height, width):
            prob_sum = np.bincount(ids, weights=np.asarray(prob).ravel()[where].astype(np.float64), minlength=count + 1)
        # first pixel of each component in raster order: a pixel that belongs to it
        first = np.full(count + 1, -1, np.int64)
        order = np.unique(ids, return_index=True)
        first[order[0]] = where[order[1]]
        code = _code(value, classes)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            if box is None:
                continue
            n = int(area[index])
            mean = None if prob_sum is None else float(prob_sum[index] / n)
            lesions.append(
                Lesion(
                    id=0,
                    label=value,
                    code=code,
                    area_px=n,
                    centroid=(float(row_sum[index] / n), float(col_sum[index] / n)),
                    bbox=(box[0].start, box[1].start, box[0].stop, box[1].stop),
                    mean_probability=mean,
                    representative=(int(first[index] // width), int(first[index] % width)),
                )
            )
    lesions.sort(key=lambda l: (l.label, -l.area_px, l.centroid))
    numbered = tuple(
        Lesion(i, l.label, l.code, l.area_px, l.centroid, l.bbox, l.mean_probability, l.representative)
        for i, l in enumerate(lesions, start=1)
    )
    return Inventory(numbered, (height, width), pixel_size, classes)


def component_indices(labels: Any, lesion: Lesion) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices (rows, cols) of ``lesion`` in ``labels`` (searched inside its bounding box)."""
    labels = np.asarray(labels)
    r0, c0, r1, c1 = lesion.bbox
    window = labels[r0:r1, c0:c1] == lesion.label
    components, _ = ndimage.label(window, structure=EIGHT_NEIGHBOURS)
    r, c = lesion.representative
    which = components[r - r0, c - c0] if (r0 <= r < r1 and c0 <= c < c1) else 0
    if which == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    rows, cols = np.nonzero(components == which)
    return rows + r0, cols + c0


def pixel_size_from(
    *,
    entered_um: float | None = None,
    layer_metadata: Mapping[str, Any] | None = None,
    image_metadata: Mapping[str, Any] | None = None,
    scale: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
) -> PixelSize | None:
    """The pixel size of a label layer, from the first of these that gives one:

    1. ``entered_um`` (the widget's "pixel size" field, when > 0);
    2. the layer's ``metadata["pixel_size_um"]``;
    3. its source image layer's ``metadata["pixel_size_um"]`` (slide readers put it there);
    4. the layer's ``scale`` in its ``units`` when those are lengths (napari layer units);
    5. a layer ``scale`` other than 1 with no length units: µm, the plugin's convention (slides are
       opened with their scale in µm and the workspace writer reads a scale as µm).
    """
    if entered_um is not None and entered_um > 0:
        return PixelSize(float(entered_um), "entered")
    for metadata, where in ((layer_metadata, "layer metadata"), (image_metadata, "image layer metadata")):
        value = (metadata or {}).get("pixel_size_um")
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            return PixelSize(float(value), where)
    if scale is None or len(scale) < 2:
        return None
    sy, sx = float(scale[-2]), float(scale[-1])
    if not (sy > 0 and math.isclose(sy, sx, rel_tol=1e-6)):
        return None
    unit = None
    if units is not None and len(units) >= 2 and str(units[-1]) == str(units[-2]):
        unit = UM_PER_UNIT.get(str(units[-1]).strip().lower())
    if unit is not None:
        return PixelSize(sy * unit, f"layer scale ({units[-1]})")
    if not math.isclose(sy, 1.0):
        return PixelSize(sy, "layer scale (taken as µm)")
    return None


def inventory_rows(inventory: Inventory, reviewed: Mapping[Any, str] | None = None) -> list[dict[str, Any]]:
    """One dict per lesion with the :data:`CSV_COLUMNS` (empty strings where a value is unknown)."""
    reviewed = reviewed or {}
    names = {cls.code: cls.name for cls in inventory.classes}
    rows = []
    for lesion in inventory.lesions:
        um2 = lesion.area_px * inventory.pixel_size.um ** 2 if inventory.pixel_size else None
        rows.append({
            "id": lesion.id,
            "class": lesion.code,
            "class_name": names.get(lesion.code, lesion.code),
            "area_px": lesion.area_px,
            "area_um2": "" if um2 is None else f"{um2:.6g}",
            "area_mm2": "" if um2 is None else f"{um2 * 1e-6:.6g}",
            "mean_probability": "" if lesion.mean_probability is None else f"{lesion.mean_probability:.4f}",
            "centroid_row": f"{lesion.centroid[0]:.2f}",
            "centroid_col": f"{lesion.centroid[1]:.2f}",
            "bbox_row_min": lesion.bbox[0],
            "bbox_col_min": lesion.bbox[1],
            "bbox_row_max": lesion.bbox[2],
            "bbox_col_max": lesion.bbox[3],
            "status": reviewed.get(lesion.key, PENDING),
        })
    return rows


def write_inventory_csv(
    path: str | os.PathLike[str], inventory: Inventory, reviewed: Mapping[Any, str] | None = None,
    lesions: Sequence[Lesion] | None = None,
) -> Path:
    """Write the inventory (or the ``lesions`` subset of it) as CSV with :data:`CSV_COLUMNS`, atomically."""
    from napari_m2mrf.io.atomic import write_bytes_atomic

    rows = inventory_rows(inventory, reviewed)
    if lesions is not None:
        keep = {lesion.id for lesion in lesions}
        rows = [row for row in rows if row["id"] in keep]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_bytes_atomic(Path(path), text.getvalue().encode("utf-8"))
