"""OME-Zarr sources (NGFF 0.4 on zarr v2, NGFF 0.5 on zarr v3): image pyramids and their labels.

Arrays are opened lazily. Stores this project writes carry ``{"m2mrf": {"complete": true}}`` in
their attributes once every chunk has been written, so absent chunks in them are an error;
in other stores absent chunks are legal (they read as the fill value) and only reported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from napari_m2mrf.errors import UserError, first_line
from napari_m2mrf.io.arrays import AxesView
from napari_m2mrf.io.ngff import Multiscale, ome_attributes, parse_image_label, parse_multiscales
from napari_m2mrf.io.pyramid import LabelPyramid, Pyramid

COMPLETE_KEY = "m2mrf"


def open_group(path: str | os.PathLike[str], mode: str = "r") -> Any:
    """The zarr group at ``path``; ``UserError`` naming the store if it is missing or its metadata is corrupt."""
    import zarr

    path = Path(path)
    if not path.exists() and mode == "r":
        raise UserError(f"{path}: no such zarr store")
    try:
        node = zarr.open_group(str(path), mode=mode)
    except PermissionError:
        raise UserError(f"{path}: permission denied (cannot read the store)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: corrupt zarr metadata ({exc})") from None
    except (ValueError, KeyError, TypeError, OSError, zarr.errors.NodeTypeValidationError) as exc:
        raise UserError(f"{path}: not a readable zarr group ({first_line(exc)})") from None
    return node


def image_group(root: Any, path: Path) -> Any:
    """The group holding the image multiscale: ``root`` itself, or its ``0`` child (bioformats2raw layout)."""
    _, metadata = ome_attributes(root.attrs.asdict())
    if "multiscales" in metadata:
        return root
    if "0" in root and _is_group(root["0"]):
        _, child_metadata = ome_attributes(root["0"].attrs.asdict())
        if "multiscales" in child_metadata:
            return root["0"]
    raise UserError(f"{path}: a zarr store without OME-NGFF 'multiscales' metadata (not an OME-Zarr image)")


def _is_group(node: Any) -> bool:
    import zarr

    return isinstance(node, zarr.Group)


def open_ome_zarr(path: str | os.PathLike[str], *, check_chunks: bool = True) -> Pyramid:
    """The image of an OME-Zarr store as a lazy :class:`Pyramid` (levels ``(C, Y, X)``).

    ``check_chunks``: in a store this project completed, verify that no chunk file is missing.
    """
    path = Path(path)
    return pyramid_from_group(image_group(open_group(path), path), path, check_chunks=check_chunks)


def pyramid_from_group(group: Any, path: Path, *, check_chunks: bool = True) -> Pyramid:
    """The multiscale image of ``group`` (levels ``(C, Y, X)``; zarr arrays themselves when stored CYX)."""
    multiscale = _multiscale(group, path)
    arrays = _level_arrays(group, multiscale, path)
    if check_chunks:
        _check_chunks(group, arrays, multiscale, path)
    levels = [
        array if multiscale.axes == "cyx" else AxesView(array, multiscale.axes.upper(), "CYX") for array in arrays
    ]
    return Pyramid(
        levels=levels,
        downsamples=list(multiscale.downsamples),
        pixel_size_um=multiscale.pixel_size_um,
        name=_store_name(path),
        source=path,
        keep_alive=[group],
    )


def _multiscale(group: Any, path: Path) -> Multiscale:
    try:
        return parse_multiscales(group.attrs.asdict(), str(path))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"{path}: malformed OME-NGFF metadata ({first_line(exc)})") from None


def _level_arrays(group: Any, multiscale: Multiscale, path: Path) -> list[Any]:
    import zarr

    from napari_m2mrf.io.input_gate import check_store_key

    arrays = []
    for level_path in multiscale.paths:
        check_store_key(path, level_path)  # no '..', absolute or empty paths out of the store
        try:
            node = group[level_path]
        except (KeyError, FileNotFoundError):
            raise UserError(f"{path}: level '{level_path}' listed in the metadata is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise UserError(f"{path}/{level_path}: corrupt zarr array metadata ({first_line(exc)})") from None
        if not isinstance(node, zarr.Array):
            raise UserError(f"{path}: '{level_path}' is not an array")
        if node.ndim != len(multiscale.axes):
            raise UserError(
                f"{path}/{level_path}: {node.ndim}-d array but the metadata names axes {multiscale.axes!r}"
            )
        arrays.append(node)
    return arrays


def absent_chunks(array: Any) -> int:
    """How many chunks of ``array`` have never been written (they read as the fill value).

    On a local store the chunk files are counted directly (fast); otherwise zarr lists the store.
    """
    folder = _local_folder(array)
    if folder is None:
        return int(array.nchunks) - int(array.nchunks_initialized)
    stored = sum(
        1
        for _, _, files in os.walk(folder)
        for name in files
        if name not in _METADATA_FILES and not name.startswith(".") and not name.endswith(".partial")
    )  # ``*.partial``: zarr's aside-write of a chunk, left behind by a kill; never a chunk
    return int(array.nchunks) - stored


_METADATA_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


def _local_folder(array: Any) -> Path | None:
    from zarr.storage import LocalStore

    store = array.store
    if not isinstance(store, LocalStore):
        return None
    return Path(store.root) / array.path


def _check_chunks(group: Any, arrays: list[Any], multiscale: Multiscale, path: Path) -> None:
    complete = bool((group.attrs.get(COMPLETE_KEY) or {}).get("complete"))
    if not complete:
        return
    for level_path, array in zip(multiscale.paths, arrays, strict=True):
        missing = absent_chunks(array)
        if missing:
            raise UserError(
                f"{path}/{level_path}: {missing} of {array.nchunks} chunks are missing (the store is incomplete "
                "or was copied partially)"
            )


def label_names(path: str | os.PathLike[str]) -> list[str]:
    """Names listed in the store's ``labels`` group (empty when there is none)."""
    path = Path(path)
    root = open_group(path)
    if "labels" not in root:
        return []
    _, metadata = ome_attributes(root["labels"].attrs.asdict())
    from napari_m2mrf.io.input_gate import check_store_key

    names = metadata.get("labels") or []
    if not isinstance(names, list):
        raise UserError(f"{path}/labels: malformed OME-NGFF labels metadata (expected a list of names)")
    checked = [check_store_key(path / "labels", str(name)) for name in names]
    return [name for name in checked if name in root["labels"]]


def open_ome_zarr_labels(path: str | os.PathLike[str], name: str) -> LabelPyramid:
    """The labels image ``labels/<name>`` as a lazy :class:`LabelPyramid` (levels ``(Y, X)``)."""
    path = Path(path)
    root = open_group(path)
    try:
        group = root["labels"][name]
    except KeyError:
        raise UserError(f"{path}: has no labels named {name!r}") from None
    return label_pyramid_from_group(group, path / "labels" / name, name)


def label_pyramid_from_group(group: Any, where: Path, name: str) -> LabelPyramid:
    """The multiscale labels of ``group`` (levels ``(Y, X)``) with their image-label colours and names."""
    multiscale = _multiscale(group, where)
    arrays = _level_arrays(group, multiscale, where)
    from napari_m2mrf.io.input_gate import check_zarr_levels

    check_zarr_levels(where, [a.shape for a in arrays], [a.dtype for a in arrays], [a.chunks for a in arrays], None, labels=True)
    _check_chunks(group, arrays, multiscale, where)
    _, metadata = ome_attributes(group.attrs.asdict())
    colors, names = parse_image_label(metadata)
    levels = [array if multiscale.axes == "yx" else AxesView(array, multiscale.axes.upper(), "YX") for array in arrays]
    return LabelPyramid(
        levels=levels,
        downsamples=list(multiscale.downsamples),
        colors=colors,
        names=names,
        name=name,
        keep_alive=[group],
    )


def _store_name(path: Path) -> str:
    name = path.name
    for suffix in (".m2mrf.zarr", ".ome.zarr", ".zarr"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
