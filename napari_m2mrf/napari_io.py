"""napari reader and writer contributions (see ``napari.yaml``).

Readers decide between a fundus photograph (one image in memory, plus its ground truth when the
file sits in an IDRiD, DDR or plain-folder layout) and a slide (lazy multiscale image, plus stored
label pyramids) from the file's content. Anything the plugin cannot read makes ``get_reader``
return None; a file it claims but that turns out broken gives an error notification naming the
file and the problem (and no layers). napari is imported lazily, only for notifications and
progress.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES, label_colormap, lesion_features
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.formats import SourceInfo
from napari_m2mrf.jobs import ProgressCallback

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | Sequence[str]
_NULL_LAYERS: list[Any] = [(None,)]  # napari's "read fine, nothing to show" sentinel


# -- readers ----------------------------------------------------------------------------------


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[Any]] | None:
    """napari reader hook: ``read_paths`` if every path is one this plugin reads, else None."""
    from napari_m2mrf.io.formats import claims_support

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(Path(p).exists() and claims_support(p) for p in paths):
        return None
    return read_paths


def read_paths(path: PathOrPaths) -> list[Any]:
    """The layers of one or several paths; on a broken file, an error notification and no layers."""
    from napari_m2mrf.widgets.reader_defaults import remember_reader_defaults

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    remember_reader_defaults()
    layers: list[LayerData] = []
    for one in paths:
        try:
            layers += layer_data_for_path(
                one, progress=_napari_progress(Path(one).name), notify=_notify_info, on_corrupt=_notify_once()
            )
        except UserError as exc:
            _notify_error(str(exc))
        except Exception as exc:  # a decoder's own failure on a broken file: still one message, no traceback
            _notify_error(f"{one}: cannot be read ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})")
    return layers or _NULL_LAYERS


def layer_data_for_path(
    path: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    notify: Callable[[str], None] | None = None,
    on_corrupt: Callable[[Exception], None] | None = None,
) -> list[LayerData]:
    """Layers for ``path`` (raises ``UserError`` naming the file when it cannot be read).

    ``path`` passes the read-side gate first (:func:`~napari_m2mrf.io.formats.inspect_source`).
    ``on_corrupt``: for a slide, called with the ``CorruptData`` error of a chunk that fails to
    decode while napari reads it later (the chunk then shows as zeros); without it such a read raises.
    """
    from napari_m2mrf.io.formats import inspect_source

    info = inspect_source(path)
    if info.kind == "fundus":
        return fundus_layer_data(path, notify=notify)
    if info.format == "zarr" and _photograph_workspace(path):
        return fundus_workspace_layer_data(path)
    return slide_layer_data(path, progress=progress, info=info, on_corrupt=on_corrupt)


def _photograph_workspace(path: str | os.PathLike[str]) -> bool:
    from napari_m2mrf.io.workspace import PHOTOGRAPH, Workspace

    return Workspace.is_workspace(path) and Workspace.open(path, mode="r").made_from == PHOTOGRAPH


def fundus_workspace_layer_data(path: str | os.PathLike[str]) -> list[LayerData]:
    """A fundus photograph's workspace as the layers it was saved from, ready to work on again.

    The image comes back single-scale (as the photograph reader gives it), the ground truth when
    the workspace or the source's dataset layout holds one, the per-class probability layers and
    the ``lesions`` Labels layer: the corrections, editable, with the unedited prediction kept so a
    new Segment run carries the corrections over. Each layer is tagged like the one the plugin made
    before saving (``metadata["m2mrf"]``), so Segment, Correct, Metrics and Save find them.
    """
    from napari.utils.colormaps import Colormap

    from napari_m2mrf.io.workspace import Workspace
    from napari_m2mrf.widgets.result_layers import LESIONS, PREDICTION_KEY, PROBABILITY

    workspace = Workspace.open(path, mode="r")
    name = workspace.image_name
    image = np.ascontiguousarray(np.moveaxis(np.asarray(workspace.image.levels[0][:3]), 0, -1))
    height, width = image.shape[:2]
    metadata: dict[str, Any] = {"workspace": str(workspace.path)}
    if workspace.source is not None:
        metadata["source"] = str(workspace.source)
    layers: list[LayerData] = [(image, {"name": name, "rgb": True, "metadata": metadata}, "image")]
    stored = workspace.label_names()

    def level0(label_name: str) -> np.ndarray | None:
        if label_name not in stored:
            return None
        data = np.array(workspace.labels(label_name).levels[0], dtype=np.uint8)
        return data if data.shape == (height, width) else None

    truth = level0("ground_truth")
    layout = "workspace"
    if truth is None and workspace.source is not None and workspace.source.is_file():
        from napari_m2mrf.io.datasets import find_ground_truth, load_ground_truth

        found = find_ground_truth(workspace.source)
        if found is not None and found.masks:
            truth, layout = load_ground_truth(found, (height, width)), found.layout
    if truth is not None:
        layers.append(_fundus_labels(truth, f"{name} ground truth", layout))
    for code, color, data in _stored_probabilities(workspace, (height, width)):
        tag = {"role": PROBABILITY, "source": name, "code": code, "saved_to": str(workspace.path)}
        layers.append((data, {
            "name": f"{code} probability", "colormap": Colormap([[0, 0, 0, 0], list(color)], name=f"m2mrf-{code}"),
            "contrast_limits": (0.0, 1.0), "blending": "additive", "visible": False, "metadata": {"m2mrf": tag},
        }, "image"))
    corrected, prediction = level0("corrected"), level0("prediction")
    lesions = corrected if corrected is not None else prediction
    if lesions is not None:
        lesion_meta: dict[str, Any] = {"m2mrf": {"role": LESIONS, "source": name, "code": None}}
        if prediction is not None:
            lesion_meta[PREDICTION_KEY] = prediction
        layers.append((lesions, {
            "name": LESIONS, "colormap": label_colormap(), "features": lesion_features(), "opacity": 0.7,
            "metadata": lesion_meta,
        }, "labels"))
    return layers


def _stored_probabilities(workspace: Any, shape: tuple[int, int]) -> list[tuple[str, tuple[float, ...], np.ndarray]]:
    """``(code, colour, (Y, X) float32)`` per fundus class from the workspace's probability map, at the
    image's size (a map stored at a coarser level, as ``predict`` writes it, is repeated up)."""
    try:
        array, downsample, codes = workspace.probabilities()
    except UserError:
        return []
    colors = {cls.code: cls.color for cls in FUNDUS_CLASSES}
    step = max(1, int(round(downsample)))
    found = []
    for channel, code in enumerate(codes):
        if code not in colors:
            continue
        data = np.asarray(array[channel], dtype=np.float32)
        if step > 1:
            data = np.repeat(np.repeat(data, step, axis=0), step, axis=1)
        data = data[: shape[0], : shape[1]]
        if data.shape != tuple(shape):
            return []
        found.append((code, colors[code], np.ascontiguousarray(data)))
    return found


def fundus_layer_data(path: str | os.PathLike[str], *, notify: Callable[[str], None] | None = None) -> list[LayerData]:
    """A fundus photograph as an RGB image layer, plus a Labels layer when its ground truth is found."""
    from napari_m2mrf.io.datasets import find_ground_truth, load_ground_truth
    from napari_m2mrf.io.photographs import read_image

    image = read_image(path)
    for notice in image.notices:
        if notify:
            notify(notice)
    layers: list[LayerData] = [
        (image.data, {"name": image.name, "rgb": True, "metadata": {"source": str(image.path)}}, "image")
    ]
    truth = find_ground_truth(image.path)
    if truth is not None and truth.masks:
        labels = load_ground_truth(truth, image.data.shape[:2])
        layers.append(_fundus_labels(labels, f"{image.name} ground truth", truth.layout))
    return layers


def _fundus_labels(labels: np.ndarray, name: str, layout: str) -> LayerData:
    meta = {
        "name": name,
        "colormap": label_colormap(),
        "features": lesion_features(),
        "opacity": 0.8,
        "metadata": {"layout": layout},
    }
    return labels, meta, "labels"


def slide_layer_data(
    path: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    info: SourceInfo | None = None,
    on_corrupt: Callable[[Exception], None] | None = None,
) -> list[LayerData]:
    """A slide as a lazy multiscale RGB image layer (µm scale and units when known) plus its stored label pyramids.

    Works for OME-TIFF, scanner formats through OpenSlide (SVS, NDPI, MRXS, SCN, BIF, Philips TIFF…),
    DICOM WSI through wsidicom, generic tiled TIFF, OME-Zarr and workspaces. A large single-resolution
    image that can be read in parts shows at once with coarser levels subsampled on demand
    (:func:`~napari_m2mrf.io.slides.open_for_viewing`); a flat JPEG/PNG gets a pyramid built into its
    workspace first (``progress(done, total, message)``).
    """
    from napari_m2mrf.io.slides import (
        check_pyramid_readable,
        open_for_viewing,
        open_label_pyramids,
    )

    from napari_m2mrf.io.input_gate import checked_levels

    path = Path(path)
    pyramid = open_for_viewing(path, info=info, progress=progress)  # huge flat tiled images: levels on demand
    check_pyramid_readable(pyramid, coarsest_only=True)  # level 0 is read lazily, chunk by chunk
    pyramid = dataclasses.replace(pyramid, levels=checked_levels(pyramid.levels, str(pyramid.source), on_corrupt))
    scale = (pyramid.pixel_size_um,) * 2 if pyramid.pixel_size_um else (1.0, 1.0)
    units = ("micrometer", "micrometer") if pyramid.pixel_size_um else None  # the scale bar reads the layers' units
    levels = pyramid.channel_last()
    image_meta: dict[str, Any] = {
        "name": pyramid.name,
        "rgb": levels[0].shape[-1] in (3, 4),
        "multiscale": len(levels) > 1,
        "scale": scale,
        "contrast_limits": _contrast_limits(pyramid.dtype),
        "metadata": {
            "source": str(pyramid.source),
            "pixel_size_um": pyramid.pixel_size_um,
            "downsamples": list(pyramid.downsamples),
        },
    }
    if units:
        image_meta["units"] = units
    data = levels if len(levels) > 1 else levels[0]
    if not image_meta["rgb"]:
        data = [level[..., 0] for level in levels] if len(levels) > 1 else levels[0][..., 0]
        image_meta.pop("rgb")
    layers: list[LayerData] = [(data, image_meta, "image")]
    label_source = pyramid.source if Path(pyramid.source).is_dir() else path  # a built pyramid's workspace
    for labels in open_label_pyramids(label_source):
        where = f"{label_source} labels '{labels.name}'"
        labels = dataclasses.replace(labels, levels=checked_levels(labels.levels, where, on_corrupt))
        layers.append(_slide_labels(labels, scale, units))
    return layers


def _contrast_limits(dtype: np.dtype) -> list[float]:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return [float(info.min), float(info.max)]
    return [0.0, 1.0]


def _slide_labels(labels: Any, scale: tuple[float, float], units: tuple[str, str] | None) -> LayerData:
    lazy = labels.lazy_levels()
    meta: dict[str, Any] = {
        "name": labels.name,
        "multiscale": len(lazy) > 1,
        "scale": scale,
        "opacity": 0.6,
        "metadata": {"class_names": labels.names, "downsamples": list(labels.downsamples)},
    }
    if units:
        meta["units"] = units
    if labels.colors:
        colormap: dict[int | None, tuple[float, ...]] = {0: (0.0, 0.0, 0.0, 0.0), None: (0.0, 0.0, 0.0, 0.0)}
        colormap.update({value: tuple(color) for value, color in labels.colors.items()})
        meta["colormap"] = colormap
    return (lazy if len(lazy) > 1 else lazy[0]), meta, "labels"


# -- writers ----------------------------------------------------------------------------------


def write_idrid_masks_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """napari writer: a fundus Labels layer → ``<name>_EX.tif``, ``_HE``, ``_SE``, ``_MA`` beside ``path``.

    ``path`` names the image the masks belong to (``…/IDRiD_01.tif`` → ``…/IDRiD_01_EX.tif``…); a
    path without extension is taken as a folder and the layer's name as the image name.
    """
    from napari_m2mrf.io.writers import write_idrid_masks

    target = Path(path)
    if target.suffix:
        folder, name = target.parent, target.stem
    else:
        folder, name = target, _image_name(meta)
    labels = _level0(data)
    return _reporting_errors(lambda: [str(p) for p in write_idrid_masks(np.asarray(labels), folder, name)])


def write_workspace_labels_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """napari writer: a Labels layer → ``labels/<layer name>`` of the workspace (OME-Zarr) at ``path``.

    The workspace is created when missing. The label pyramid is built and swapped in atomically;
    colours come from the layer's colormap (fundus classes by default).
    """
    from napari_m2mrf.io.workspace import Workspace

    def write() -> list[str]:
        workspace = Workspace.open(path) if Path(path).exists() else Workspace.create(path)
        colors, names = _label_colors(meta, data)
        scale = meta.get("scale") or (1.0, 1.0)
        pixel_size = float(scale[-1]) if float(scale[-1]) != 1.0 else None
        name = _labels_name(meta)
        workspace.write_labels(name, _level0(data), colors=colors, names=names, pixel_size_um=pixel_size)
        return [str(Path(path) / "labels" / name)]

    return _reporting_errors(write)


def write_points_csv_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """napari writer: a Points layer → CSV of level-0 pixel coordinates (``y_px, x_px`` + features).

    Coordinates go through the layer's scale and translate into world units, then into level-0
    pixels using ``metadata["pixel_size_um"]`` when the layer carries it, else the layer's own scale
    (napari gives new layers the scale of the image they are drawn on).
    """
    from napari_m2mrf.io.writers import level0_points, write_points_csv

    ndim = np.asarray(data).shape[-1] if np.asarray(data).size else 2
    scale = list(meta.get("scale") or [1.0] * ndim)
    translate = list(meta.get("translate") or [0.0] * ndim)
    pixel_size = (meta.get("metadata") or {}).get("pixel_size_um")
    level0_scale = [pixel_size, pixel_size] if pixel_size else scale[-2:]
    points = level0_points(np.asarray(data)[..., -2:], scale, translate, level0_scale)
    features = meta.get("features")
    columns = {str(k): list(v) for k, v in dict(features).items()} if features is not None and len(features) else None
    return _reporting_errors(lambda: [str(write_points_csv(points, path, columns))])


def _level0(data: Any) -> Any:
    return data[0] if isinstance(data, (list, tuple)) else data


def _image_name(meta: dict[str, Any]) -> str:
    name = str(meta.get("name") or "labels")
    for suffix in (" ground truth", " prediction", " corrected"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _labels_name(meta: dict[str, Any]) -> str:
    raw = str(meta.get("name") or "labels").strip().lower()
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in raw).strip("_.")
    return cleaned or "labels"


def _label_colors(meta: dict[str, Any], data: Any) -> tuple[dict[int, tuple[float, ...]], dict[int, str]]:
    """Colours (RGBA 0..1) and names of the label values in a Labels layer, from its colormap.

    A direct colormap gives its colour table; any other colormap is asked for the colours of the
    values present (in the coarsest level, for a multiscale layer). Without a colormap: fundus classes.
    """
    colormap = meta.get("colormap")
    names = {int(k): str(v) for k, v in dict((meta.get("metadata") or {}).get("class_names") or {}).items()}
    color_dict = getattr(colormap, "color_dict", None)
    if isinstance(color_dict, dict) and len(color_dict) > 2:
        colors = {int(k): _rgba(v) for k, v in color_dict.items() if k is not None and int(k) != 0}
        return colors, names
    if colormap is not None and hasattr(colormap, "map"):
        coarsest = data[-1] if isinstance(data, (list, tuple)) else data
        values = [int(v) for v in np.unique(np.asarray(coarsest)) if v != 0]
        return {v: _rgba(colormap.map(v)) for v in values}, names
    return {cls.label: cls.color for cls in FUNDUS_CLASSES}, names or {cls.label: cls.code for cls in FUNDUS_CLASSES}


def _rgba(color: Any) -> tuple[float, ...]:
    return tuple(float(c) for c in np.ravel(np.asarray(color, dtype=float)))


def _reporting_errors(write: Callable[[], list[str]]) -> list[str]:
    try:
        return write()
    except UserError as exc:
        _notify_error(str(exc))
        return []


# -- napari notifications and progress (lazy imports) -----------------------------------------------


def _notify_error(message: str) -> None:
    try:
        from napari.utils.notifications import show_error
    except ImportError:
        raise UserError(message) from None
    show_error(message)


def _notify_once() -> Callable[[Exception], None]:
    """An ``on_corrupt`` callback: one error notification per array and chunk, however often it is read."""
    seen: set[str] = set()

    def notify(error: Exception) -> None:
        message = str(error)
        if message not in seen:
            seen.add(message)
            try:
                _notify_error(message)
            except UserError:  # no napari: nowhere to show it; the chunk reads as zeros
                pass

    return notify


def _notify_info(message: str) -> None:
    try:
        from napari.utils.notifications import show_info
    except ImportError:
        return
    show_info(message)


def _napari_progress(name: str) -> ProgressCallback | None:
    """A progress callback drawing a napari progress bar (closed when complete); None without napari."""
    try:
        from napari.utils import progress as napari_progress
    except ImportError:
        return None
    state: dict[str, Any] = {}

    def update(done: int, total: int, message: str = "") -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = napari_progress(total=total, desc=f"Building pyramid of {name}")
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update
