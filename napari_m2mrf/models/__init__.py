"""Pure-torch lesion segmentation models: the M2MRF operator, HRNetV2 / M2MRF-HRNetV2, checkpoints.

Light to import: torch is loaded only when one of the names below is first used
(``lazy_loader.attach``, the scientific-Python standard for lazy package attributes).

* ``build_model(name, **cfg) -> nn.Module``: ``forward`` maps ``N×3×H×W`` normalised images to
  ``N×K×H×W`` logits (``napari_m2mrf.models.registry``).
* ``list_models() -> list[str]``.
* ``save_checkpoint(path, model, meta)`` / ``load_checkpoint(path) -> (model, meta)``: one
  ``.safetensors`` file with JSON metadata (``napari_m2mrf.models.checkpoints``).
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "registry": ["build_model", "list_models", "count_parameters"],
        "checkpoints": ["save_checkpoint", "load_checkpoint", "read_checkpoint_metadata", "fundus_metadata"],
    },
)
