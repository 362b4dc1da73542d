"""OME-NGFF metadata: multiscales (0.4 and 0.5), image-label colours, omero channels.

NGFF 0.5 keeps its metadata under the ``"ome"`` key of a zarr v3 group; NGFF 0.4 keeps it at the
top level of a zarr v2 group's attributes. Both are read; both can be written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WRITE_VERSIONS = ("0.4", "0.5")
DEFAULT_VERSION = "0.5"

_UM_PER_UNIT = {
    "micrometer": 1.0,
    "micron": 1.0,
    "µm": 1.0,
    "um": 1.0,
    "nanometer": 1e-3,
    "nm": 1e-3,
    "millimeter": 1e3,
    "mm": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
}


@dataclass(frozen=True)
class Multiscale:
    """What a reader needs from a ``multiscales`` entry.

    ``paths``: array paths, finest first; ``axes``: axis names such as ``"cyx"``; ``scales``: per
    level, the spatial (y, x) scale in ``unit``; ``pixel_size_um``: level-0 pixel size in µm when
    the unit is a length, else None; ``version``: NGFF version string.
    """

    paths: tuple[str, ...]
    axes: str
    scales: tuple[tuple[float, float], ...]
    unit: str | None
    pixel_size_um: float | None
    version: str

    @property
    def downsamples(self) -> tuple[float, ...]:
        """Per level, its pixel spacing divided by level 0's (1.0 for level 0)."""
        base = self.scales[0][0]
        return tuple(scale[0] / base for scale in self.scales)


def ome_attributes(attrs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(version, metadata)`` from a group's attributes, NGFF 0.5 (``"ome"`` key) or 0.4 (top level)."""
    if "ome" in attrs and isinstance(attrs["ome"], Mapping):
        ome = dict(attrs["ome"])
        return str(ome.get("version", "0.5")), ome
    metadata = dict(attrs)
    version = "0.4"
    for entry in metadata.get("multiscales", []) or []:
        if isinstance(entry, Mapping) and "version" in entry:
            version = str(entry["version"])
    return version, metadata


def wrap_attributes(metadata: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Group attributes holding ``metadata`` the way NGFF ``version`` stores it."""
    if version == "0.5":
        return {"ome": {"version": "0.5", **metadata}}
    if version == "0.4":
        return dict(metadata)
    raise ValueError(f"NGFF version {version!r} cannot be written; choose one of {WRITE_VERSIONS}")


def zarr_format_for(version: str) -> int:
    """The zarr format NGFF ``version`` is stored in (0.4: 2, 0.5: 3)."""
    return 3 if version == "0.5" else 2


def parse_multiscales(attrs: Mapping[str, Any], where: str) -> Multiscale:
    """The first multiscale of a group's attributes; ``ValueError`` naming ``where`` if malformed."""
    version, metadata = ome_attributes(attrs)
    entries = metadata.get("multiscales")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], Mapping):
        raise ValueError(f"{where}: no OME-NGFF 'multiscales' metadata")
    entry = entries[0]
    datasets = entry.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise ValueError(f"{where}: 'multiscales' lists no datasets")
    axes = _axis_names(entry.get("axes"), where)
    y_at, x_at = axes.index("y"), axes.index("x")
    unit = _spatial_unit(entry.get("axes"), x_at)
    scales = []
    for dataset in datasets:
        if not isinstance(dataset, Mapping) or "path" not in dataset:
            raise ValueError(f"{where}: a 'multiscales' dataset has no path")
        scale = _dataset_scale(dataset, entry, len(axes))
        scales.append((float(scale[y_at]), float(scale[x_at])))
    factor = _UM_PER_UNIT.get(unit or "", None)
    pixel_size = scales[0][1] * factor if factor is not None else None
    return Multiscale(
        paths=tuple(str(d["path"]) for d in datasets),
        axes=axes,
        scales=tuple(scales),
        unit=unit,
        pixel_size_um=pixel_size,
        version=version,
    )


def _axis_names(axes: Any, where: str) -> str:
    if axes is None:  # NGFF 0.1-0.3: always 5-d tczyx
        return "tczyx"
    names = "".join(str(a["name"] if isinstance(a, Mapping) else a).lower()[:1] for a in axes)
    if "y" not in names or "x" not in names:
        raise ValueError(f"{where}: multiscale axes {names!r} have no y and x")
    return names


def _spatial_unit(axes: Any, x_at: int) -> str | None:
    if isinstance(axes, list) and isinstance(axes[x_at], Mapping):
        unit = axes[x_at].get("unit")
        return str(unit) if unit else None
    return None


def _dataset_scale(dataset: Mapping[str, Any], entry: Mapping[str, Any], ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for transform in dataset.get("coordinateTransformations", []) or []:
        if transform.get("type") == "scale" and "scale" in transform:
            scale = [a * b for a, b in zip(scale, transform["scale"], strict=False)]
    for transform in entry.get("coordinateTransformations", []) or []:
        if transform.get("type") == "scale" and "scale" in transform:
            scale = [a * b for a, b in zip(scale, transform["scale"], strict=False)]
    return scale


def multiscales_entry(
    name: str,
    axes: str,
    downsamples: Sequence[float],
    pixel_size_um: float | None,
    version: str,
) -> dict[str, Any]:
    """A ``multiscales`` list entry for arrays ``"0"``, ``"1"``, … with axes like ``"cyx"`` or ``"yx"``.

    Level ``k``'s y/x scale is ``downsamples[k] * pixel_size_um`` µm (or pixels when the pixel size
    is unknown); non-spatial axes have scale 1.
    """
    axes_meta = []
    for axis in axes:
        if axis in "yx":
            meta: dict[str, Any] = {"name": axis, "type": "space"}
            if pixel_size_um is not None:
                meta["unit"] = "micrometer"
            axes_meta.append(meta)
        elif axis == "c":
            axes_meta.append({"name": "c", "type": "channel"})
        else:
            raise ValueError(f"unsupported axis {axis!r}")
    base = pixel_size_um if pixel_size_um is not None else 1.0
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [factor * base if a in "yx" else 1.0 for a in axes]}
            ],
        }
        for level, factor in enumerate(downsamples)
    ]
    entry: dict[str, Any] = {"name": name, "axes": axes_meta, "datasets": datasets}
    if version == "0.4":
        entry["version"] = "0.4"
    return entry


def omero_rgb(name: str, channels: int) -> dict[str, Any]:
    """``omero`` rendering metadata: red, green, blue (or grey) channels over 0..255."""
    colors = ["FF0000", "00FF00", "0000FF"] if channels == 3 else ["FFFFFF"] * channels
    names = ["red", "green", "blue"] if channels == 3 else [f"channel {i}" for i in range(channels)]
    return {
        "name": name,
        "channels": [
            {
                "label": label,
                "color": color,
                "active": True,
                "window": {"start": 0, "end": 255, "min": 0, "max": 255},
            }
            for label, color in zip(names, colors, strict=True)
        ],
        "rdefs": {"model": "color" if channels > 1 else "greyscale"},
    }


def image_label(
    colors: Mapping[int, Sequence[float]],
    names: Mapping[int, str],
    version: str,
    source_image: str = "../../",
) -> dict[str, Any]:
    """``image-label`` metadata: per label value its RGBA colour (0..1 in, 0..255 out) and name."""
    entry: dict[str, Any] = {
        "colors": [
            {"label-value": int(value), "rgba": [round(255 * c) for c in rgba]}
            for value, rgba in sorted(colors.items())
        ],
        "properties": [{"label-value": int(value), "name": name} for value, name in sorted(names.items())],
        "source": {"image": source_image},
    }
    if version == "0.4":
        entry["version"] = "0.4"
    return entry


def parse_image_label(metadata: Mapping[str, Any]) -> tuple[dict[int, tuple[float, ...]], dict[int, str]]:
    """``(colors 0..1, names)`` by label value from a labels group's metadata (empty if absent)."""
    label_meta = metadata.get("image-label") or {}
    colors = {
        int(item["label-value"]): tuple(c / 255 for c in item["rgba"])
        for item in label_meta.get("colors", []) or []
        if "label-value" in item and "rgba" in item
    }
    names = {
        int(item["label-value"]): str(item["name"])
        for item in label_meta.get("properties", []) or []
        if "label-value" in item and "name" in item
    }
    return colors, names
