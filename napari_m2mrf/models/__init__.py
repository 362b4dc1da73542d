"""Pure-torch lesion segmentation models: the M2MRF operator, HRNetV2 / M2MRF-HRNetV2, checkpoints.

Light to import: torch is loaded only when one of the names below is first used.

* ``build_model(name, **cfg) -> nn.Module``: ``forward`` maps ``N×3×H×W`` normalised images to
  ``N×K×H×W`` logits (``napari_m2mrf.models.registry``).
* ``list_models() -> list[str]``.
* ``save_checkpoint(path, model, meta)`` / ``load_checkpoint(path) -> (model, meta)``: one
  ``.safetensors`` file with JSON metadata (``napari_m2mrf.models.checkpoints``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_model": "napari_m2mrf.models.registry",
    "list_models": "napari_m2mrf.models.registry",
    "count_parameters": "napari_m2mrf.models.registry",
    "save_checkpoint": "napari_m2mrf.models.checkpoints",
    "load_checkpoint": "napari_m2mrf.models.checkpoints",
    "read_checkpoint_metadata": "napari_m2mrf.models.checkpoints",
    "fundus_metadata": "napari_m2mrf.models.checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
