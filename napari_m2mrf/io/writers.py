"""Writing results: IDRiD-style per-class masks, workspace labels, and points as CSV. All atomic."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES, LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.atomic import write_bytes_atomic
from napari_m2mrf.io.idrid_masks import write_idrid_mask

POINTS_CSV_HEADER = ("y_px", "x_px")


def idrid_mask_paths(
    folder: str | os.PathLike[str], name: str, classes: tuple[LesionClass, ...] = FUNDUS_CLASSES
) -> dict[str, Path]:
    """Per class code, ``<folder>/<name>_<CODE>.tif``."""
    return {cls.code: Path(folder) / f"{name}_{cls.code}.tif" for cls in classes}


def write_idrid_masks(
    labels: np.ndarray,
    folder: str | os.PathLike[str],
    name: str,
    classes: tuple[LesionClass, ...] = FUNDUS_CLASSES,
) -> list[Path]:
    """Write ``labels`` ``(Y, X)`` as one IDRiD 1-bit palette TIFF per class (``<name>_EX.tif``…).

    Every class gets a file (an empty mask where the class is absent). Each file is replaced
    atomically. Raises ``UserError`` for labels that are not 2-D integers or hold unknown values.
    """
    labels = np.asarray(labels)
    folder = Path(folder)
    if labels.ndim != 2 or labels.dtype.kind not in "uib":
        raise UserError(f"{folder / name}: labels must be a 2-D integer array; got {labels.dtype} {labels.shape}")
    known = {0, *(cls.label for cls in classes)}
    present = set(np.unique(labels).tolist())
    if not present <= known:
        raise UserError(
            f"{folder / name}: label values {sorted(present - known)} are not lesion classes "
            f"({', '.join(f'{c.label} {c.code}' for c in classes)})"
        )
    folder.mkdir(parents=True, exist_ok=True)
    paths = idrid_mask_paths(folder, name, classes)
    return [write_idrid_mask(paths[cls.code], labels == cls.label) for cls in classes]


def write_points_csv(
    points: np.ndarray, path: str | os.PathLike[str], features: Mapping[str, Sequence[Any]] | None = None
) -> Path:
    """Write ``points`` ``(N, 2)`` (level-0 pixels, ``y, x``) and optional per-point ``features`` to CSV, atomically."""
    points = np.asarray(points, dtype=np.float64)
    path = Path(path)
    if points.ndim != 2 or points.shape[1] != 2:
        raise UserError(f"{path}: points must be (N, 2) (y, x); got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise UserError(f"{path}: points hold NaN or infinite coordinates")
    features = dict(features or {})
    for key, values in features.items():
        if len(values) != len(points):
            raise UserError(f"{path}: feature {key!r} has {len(values)} values for {len(points)} points")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*POINTS_CSV_HEADER, *features])
    columns = [list(values) for values in features.values()]
    for index, (y, x) in enumerate(points):
        writer.writerow([f"{y:.3f}", f"{x:.3f}", *(column[index] for column in columns)])
    return write_bytes_atomic(path, text.getvalue().encode())


def read_points_csv(path: str | os.PathLike[str]) -> np.ndarray:
    """Points ``(N, 2)`` float64 (level-0 pixels, ``y, x``) from a CSV written by :func:`write_points_csv`."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not rows or tuple(rows[0][:2]) != POINTS_CSV_HEADER:
        raise UserError(f"{path}: not a points CSV (expected a header starting {','.join(POINTS_CSV_HEADER)})")
    try:
        return np.array([[float(row[0]), float(row[1])] for row in rows[1:]], dtype=np.float64).reshape(-1, 2)
    except (ValueError, IndexError) as exc:
        raise UserError(f"{path}: malformed coordinates ({exc})") from None


def level0_points(
    data: np.ndarray, scale: Sequence[float], translate: Sequence[float], level0_scale: Sequence[float]
) -> np.ndarray:
    """Map napari layer data coordinates ``(N, 2)`` to level-0 pixels of an image whose pixel size is ``level0_scale``.

    world = data · scale + translate; level-0 pixel = world / level0_scale.
    """
    data = np.asarray(data, dtype=np.float64).reshape(-1, 2)
    world = data * np.asarray(scale[-2:], dtype=np.float64) + np.asarray(translate[-2:], dtype=np.float64)
    return world / np.asarray(level0_scale[-2:], dtype=np.float64)
