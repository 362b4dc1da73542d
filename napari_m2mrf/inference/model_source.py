"""Where a model comes from: a bundled default, a checkpoint file, or a registry name.

``resolve_model(source)`` returns the model and its metadata. A checkpoint file or a bundled
checkpoint carries its own metadata (classes, normalisation, input size); a bare registry name builds
an untrained network with the official IDRiD settings, useful to try the pipeline and for tests.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError

if TYPE_CHECKING:
    from torch import nn

# The only place the core finds the bundled checkpoints: package data looked up by package name
# (importlib.resources runs sample_data's docstring-only __init__, imports none of its modules).
BUNDLED_DIR = Path(str(resources.files("sample_data") / "checkpoints"))
CHECKPOINT_SUFFIX = ".safetensors"


def bundled_models() -> dict[str, Path]:
    """Names (file stems) and paths of the checkpoints shipped in ``sample_data/checkpoints``."""
    return {path.stem: path for path in sorted(BUNDLED_DIR.glob(f"*{CHECKPOINT_SUFFIX}"))}


def model_choices() -> list[str]:
    """Bundled checkpoints first, then the user's trained models, then registry names (untrained)."""
    from napari_m2mrf.inference.trained_models import trained_models
    from napari_m2mrf.models import list_models

    return list(bundled_models()) + list(trained_models()) + list_models()


def resolve_model(source: str | Path) -> tuple[nn.Module, dict]:
    """(model, metadata) for a bundled name, a checkpoint path or a registry name; ``UserError`` otherwise.

    Checkpoint files may hold a fundus model or a deformed-downsampling slide model (metadata
    ``kind == "deformed"``), see
    :mod:`napari_m2mrf.models.deformed_checkpoints`.
    """
    from napari_m2mrf.models import build_model, fundus_metadata, list_models
    from napari_m2mrf.models.deformed_checkpoints import load_model_file

    from napari_m2mrf.inference.trained_models import trained_models

    bundled = {**bundled_models(), **trained_models()}
    name = str(source)
    if name in bundled:
        return load_model_file(bundled[name])
    path = Path(name).expanduser()
    if path.suffix in (CHECKPOINT_SUFFIX, ".pt") or path.exists():
        return load_model_file(path)
    if name in list_models():
        model = build_model(name, num_classes=len(FUNDUS_CLASSES))
        return model, {"arch": name, **fundus_metadata("idrid", {"weights": "untrained"})}
    valid = ", ".join(list(bundled) + list_models())
    raise UserError(f"unknown model {name!r}: give a checkpoint file or one of {valid}")
