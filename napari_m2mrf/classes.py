"""Lesion classes of the fundus models and their display colours.

Order and colours follow the official M2MRF code and the paper's figures: label 0 is background,
labels 1..4 are EX, HE, SE, MA; model output channel ``k`` is label ``k + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    """One segmentation class: its label value, short code, full name and RGBA colour (0..1)."""

    label: int
    code: str
    name: str
    color: tuple[float, float, float, float]


FUNDUS_CLASSES: tuple[LesionClass, ...] = (
    LesionClass(1, "EX", "Hard exudates", (1.0, 0.0, 0.0, 1.0)),
    LesionClass(2, "HE", "Haemorrhages", (0.0, 1.0, 0.0, 1.0)),
    LesionClass(3, "SE", "Soft exudates", (1.0, 1.0, 0.0, 1.0)),
    LesionClass(4, "MA", "Microaneurysms", (0.0, 0.0, 1.0, 1.0)),
)

# IDRiD's folder names for each class code ("<n>. <Class>" under "2. All Segmentation Groundtruths/<split>/").
IDRID_FOLDERS: dict[str, str] = {
    "MA": "1. Microaneurysms",
    "HE": "2. Haemorrhages",
    "EX": "3. Hard Exudates",
    "SE": "4. Soft Exudates",
    "OD": "5. Optic Disc",
}


def label_colormap(classes: tuple[LesionClass, ...] = FUNDUS_CLASSES) -> dict[int | None, tuple[float, ...]]:
    """Colour dictionary for a napari Labels layer: background transparent, classes opaque."""
    colors: dict[int | None, tuple[float, ...]] = {0: (0.0, 0.0, 0.0, 0.0), None: (0.0, 0.0, 0.0, 0.0)}
    colors.update({cls.label: cls.color for cls in classes})
    return colors


def lesion_features(classes: tuple[LesionClass, ...] = FUNDUS_CLASSES) -> dict[str, list]:
    """Labels-layer features: one row per label value (background first) with class code and name."""
    return {
        "index": [0] + [cls.label for cls in classes],
        "class": ["background"] + [cls.code for cls in classes],
        "name": ["background"] + [cls.name for cls in classes],
    }


def class_by_code(code: str, classes: tuple[LesionClass, ...] = FUNDUS_CLASSES) -> LesionClass:
    """The class with short code ``code`` (case-insensitive); ``KeyError`` naming the valid codes otherwise."""
    for cls in classes:
        if cls.code == code.upper():
            return cls
    raise KeyError(f"unknown class code {code!r}; valid: {', '.join(c.code for c in classes)}")
