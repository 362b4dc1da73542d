"""Checkpoints of a run, each written atomically (aside, then renamed over the previous one).

``<output_dir>/last.pt`` is the exact resume state after some iteration: model and optimiser
state, gradient-scaler state, torch RNG state, best score so far and the config. It holds only
tensors and plain Python values, so it loads with ``torch.load(weights_only=True)`` and no code in
the file is ever run. A run killed at any moment leaves the previous complete ``last.pt``.

``<output_dir>/last.safetensors`` and ``best.safetensors`` are the model checkpoints the plugin
loads (``napari_m2mrf.models.checkpoints.load_checkpoint``): weights plus metadata
(architecture, classes, normalisation, input size, training provenance; for a slide model the
µm per sample it was trained at), for fundus and deformed models alike; loading them never runs code from the file.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_m2mrf.classes import LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.atomic import atomic_path
from napari_m2mrf.models.checkpoints import class_to_json
from napari_m2mrf.models.training_scale import METADATA_KEY as SCALE_KEY, TrainingScale
from training.config import TrainingConfig

STATE_FORMAT = 1
LAST_STATE = "last.pt"
LAST_MODEL = "last.safetensors"
BEST_MODEL = "best.safetensors"
BACKGROUND = LesionClass(0, "BG", "Background", (0.0, 0.0, 0.0, 0.0))


def save_training_state(
    path: str | os.PathLike[str],
    *,
    iteration: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    best_score: float,
    best_iteration: int,
    config: TrainingConfig,
) -> Path:
    """Write the resume state after ``iteration`` completed steps to ``path`` atomically."""
    state = {
        "format": STATE_FORMAT,
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "torch_rng": torch.get_rng_state(),
        "best_score": best_score,
        "best_iteration": best_iteration,
        "config": config.to_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_training_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a resume state written by :func:`save_training_state` (tensors on CPU).

    Raises ``UserError`` naming the file when it is missing, unreadable or not a resume state.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such resume state")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"{path}: not a readable training state ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path}: not a training resume state of format {STATE_FORMAT}")
    return state


def model_metadata(
    config: TrainingConfig,
    classes: tuple[LesionClass, ...],
    multilabel: bool,
    iteration: int,
    metrics: dict[str, Any] | None,
    scale: TrainingScale | None = None,
) -> dict[str, Any]:
    """The metadata stored with an exported model (``napari_m2mrf.models.save_checkpoint``): one
    class per output channel (a softmax model's channel 0 is background), normalisation, input
    size, how it was trained and, for a slide model, the physical ``scale`` it was trained at
    (:func:`training.slide_scale.training_scale`; left out when None)."""
    channels = list(classes) if multilabel else [BACKGROUND, *classes]
    scale_entry = {} if scale is None else {SCALE_KEY: scale.to_json()}
    return {
        **scale_entry,
        "classes": [class_to_json(c) for c in channels],
        "normalization": {"mean": list(config.data.mean), "std": list(config.data.std)},
        "input_size": list(config.augment.resize or config.augment.crop),
        "output": "sigmoid" if multilabel else "softmax",
        "provenance": {
            "trainer": "napari-m2mrf training",
            "iteration": iteration,
            "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, float) and math.isfinite(v)},
            "config": config.to_dict(),
        },
    }


def export_model(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model`` as a plugin checkpoint at ``path`` (``.safetensors``, atomic) and return it.

    A deformed-downsampling segmenter is written with its deformation module and sampler settings
    (``napari_m2mrf.models.checkpoints.save_deformed_checkpoint``), any other registry
    model with ``napari_m2mrf.models.save_checkpoint``.
    """
    from napari_m2mrf.models import save_checkpoint
    from napari_m2mrf.models.deform import DeformedSegmenter
    from napari_m2mrf.models.checkpoints import save_deformed_checkpoint

    path = Path(path)
    if isinstance(model, DeformedSegmenter):
        save_deformed_checkpoint(path, model, meta)
    else:
        save_checkpoint(path, model, meta)
    return path
