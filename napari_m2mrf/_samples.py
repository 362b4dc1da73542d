"""napari sample-data contributions (File ▸ Open Sample ▸ M2MRF lesions & slides).

Each function returns napari ``LayerData`` tuples; the data come from the ``sample_data``
package, generated into the per-user cache on first use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_m2mrf.classes import label_colormap, lesion_features

LayerData = tuple[Any, dict[str, Any], str]


def fundus_labels_layer(labels: np.ndarray, name: str) -> LayerData:
    """A Labels layer of fundus lesion classes with the paper's colours and class names as features."""
    return labels, {"name": name, "colormap": label_colormap(), "features": lesion_features(), "opacity": 0.8}, "labels"


def retina_layers() -> list[LayerData]:
    """The real normal-eye fundus photograph (no lesions)."""
    from sample_data.skimage_samples import retina

    return [(retina(), {"name": "retina", "rgb": True}, "image")]


def ihc_layers() -> list[LayerData]:
    """The immunohistochemistry tile from scikit-image."""
    from sample_data.skimage_samples import ihc

    return [(ihc(), {"name": "ihc", "rgb": True}, "image")]


def fundus_lesions_layers() -> list[LayerData]:
    """A semi-synthetic fundus photograph with lesions of all four classes and its exact ground truth."""
    from sample_data.fundus_samples import fundus_lesions

    sample = fundus_lesions(index=0)
    return [
        (sample.image, {"name": sample.name, "rgb": True}, "image"),
        fundus_labels_layer(sample.labels, f"{sample.name} ground truth"),
    ]


def slide_layers() -> list[LayerData]:
    """The synthetic 32k² pyramidal histology slide (lazy multiscale) with its ground-truth label pyramid.

    Shown at once: each chunk is synthesised when napari (or a slide model) first reads it and kept in
    the cache (:mod:`sample_data.slide_on_demand`)."""
    from napari_m2mrf.napari_io import slide_layer_data
    from sample_data.slide_on_demand import sample_slide_on_demand

    return slide_layer_data(sample_slide_on_demand())
