"""The segment widget's own result layers: find them, replace them, keep the user's corrections.

Result layers carry ``metadata["m2mrf"] = {"role": ..., "source": <image layer name>}`` so a new
run replaces exactly the layers an earlier run on the same image made. The ``lesions`` layer is
the one the user edits: pixels where it differs from the previous prediction are corrections,
and they are carried over onto the new prediction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES, label_colormap, lesion_features

logger = logging.getLogger(__name__)

LESIONS = "lesions"
PROBABILITY = "probability"
PREDICTION_KEY = "prediction"  # metadata key holding the unedited prediction of the lesions layer


def find_result_layer(viewer: Any, role: str, source: str, code: str | None = None) -> Any | None:
    """The layer made by an earlier run for ``source`` in ``role`` (and class ``code``), or None."""
    for layer in viewer.layers:
        tag = layer.metadata.get("m2mrf", {})
        if tag.get("role") == role and tag.get("source") == source and tag.get("code") == code:
            return layer
    return None


def corrections_carried_over(layer: Any, new_prediction: np.ndarray) -> np.ndarray:
    """``new_prediction`` with the user's edits of ``layer`` (where it differs from its prediction) on top."""
    previous = layer.metadata.get(PREDICTION_KEY)
    current = np.asarray(layer.data)
    if previous is None or previous.shape != new_prediction.shape or current.shape != new_prediction.shape:
        return new_prediction
    edited = current != previous
    merged = new_prediction.copy()
    merged[edited] = current[edited]
    return merged


def show_lesions(viewer: Any, image_layer: Any, prediction: np.ndarray) -> Any:
    """Add or update the ``lesions`` Labels layer of ``image_layer`` (corrections kept)."""
    source = image_layer.name
    layer = find_result_layer(viewer, LESIONS, source)
    if layer is None:
        layer = viewer.add_labels(
            prediction.copy(),
            name=LESIONS,
            colormap=label_colormap(),
            features=lesion_features(),
            opacity=0.7,
            scale=image_layer.scale[-2:],
            translate=image_layer.translate[-2:],
            metadata={"m2mrf": {"role": LESIONS, "source": source, "code": None}},
        )
    else:
        layer.data = corrections_carried_over(layer, prediction)
    layer.metadata[PREDICTION_KEY] = prediction
    return layer


def show_probabilities(viewer: Any, image_layer: Any, probabilities: np.ndarray) -> list[Any]:
    """Add or update one hidden probability Image layer per fundus class, coloured like the class."""
    return [step() for step in probability_steps(viewer, image_layer, probabilities)]


def probability_steps(viewer: Any, image_layer: Any, probabilities: np.ndarray) -> list[Callable[[], Any]]:
    """:func:`show_probabilities` as one call per class, for a caller that adds one layer per event-loop turn."""
    return [
        functools.partial(show_probability_layer, viewer, image_layer, cls.code, cls.color, probabilities[channel])
        for channel, cls in enumerate(FUNDUS_CLASSES[: probabilities.shape[0]])
    ]


def show_probability_layer(
    viewer: Any,
    image_layer: Any,
    code: str,
    color: Sequence[float],
    data: Any,
    *,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
) -> Any:
    """Add or update the hidden ``<code> probability`` Image layer of ``image_layer`` (values 0..1).

    ``data``: ``(H, W)`` array, or a list of lazy levels for a multiscale layer (slides);
    ``scale``/``translate`` default to the image layer's (the maps then cover its pixels 1:1).
    """
    from napari.utils.colormaps import Colormap

    source = image_layer.name
    multiscale = isinstance(data, list)
    scale = image_layer.scale[-2:] if scale is None else scale
    translate = image_layer.translate[-2:] if translate is None else translate
    layer = find_result_layer(viewer, PROBABILITY, source, code)
    if layer is not None and layer.multiscale != multiscale:
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        from napari.layers import Image

        layer = Image(
            data,
            name=f"{code} probability",
            multiscale=multiscale,
            colormap=Colormap([[0, 0, 0, 0], list(color)], name=f"m2mrf-{code}"),
            contrast_limits=(0.0, 1.0),
            blending="additive",
            visible=False,
            scale=scale,
            translate=translate,
            metadata={"m2mrf": {"role": PROBABILITY, "source": source, "code": code}},
        )
        # hidden maps go under the labels the user edits, and those stay selected
        lesions = find_result_layer(viewer, LESIONS, source)
        insert_unselected(viewer, viewer.layers.index(lesions) if lesions is not None else len(viewer.layers), layer)
        return layer
    layer.data = data
    layer.metadata["m2mrf"].pop("saved_to", None)  # new maps: the next save writes them
    layer.scale, layer.translate = scale, translate
    return layer


def insert_unselected(viewer: Any, index: int, layer: Any) -> None:
    """Insert ``layer`` at ``index`` with the selection left as it was.

    napari selects every inserted layer; selecting it and then the previous layer again cost the GUI thread
    50–60 ms of CPU per hidden layer (measured on llvmpipe: 175 ms instead of 115–125 ms), so the layer list's
    ``_activate_on_insert`` switch (napari's own, private) is turned off around the insert where it exists;
    where it does not, the previous active layer is selected again."""
    layers = viewer.layers
    active = layers.selection.active
    switch = getattr(layers, "_activate_on_insert", None)
    if isinstance(switch, bool):
        layers._activate_on_insert = False
        try:
            layers.insert(index, layer)
        finally:
            layers._activate_on_insert = switch
        return
    logger.info("napari's layer list has no _activate_on_insert: a hidden layer is selected, then the previous one")
    layers.insert(index, layer)
    if active is not None:
        layers.selection.active = active


def remove_other_probabilities(viewer: Any, source: str, codes: Sequence[str]) -> None:
    """Remove the probability layers of ``source`` whose class is not in ``codes`` (an earlier model's)."""
    for layer in list(viewer.layers):
        tag = layer.metadata.get("m2mrf", {})
        if tag.get("role") == PROBABILITY and tag.get("source") == source and tag.get("code") not in codes:
            viewer.layers.remove(layer)
