"""The model catalogue: which models the user can run, and what one name or path stands for.

Three kinds of source, looked up in this order:

* **bundled** models: the checkpoints shipped as package data in ``sample_data/checkpoints``
  (found with ``importlib.resources``, the core's only lookup of package data);
* **trained** models: checkpoints the user trained, catalogued by name in a JSON file
  ``{name: checkpoint path}`` in the user cache (written atomically); ``catalogue_changed`` (a
  psygnal signal, no Qt) fires after each addition so open widgets refresh their model lists;
* a **checkpoint file** path, or an architecture name of the registry
  (:mod:`napari_m2mrf.models.registry`; "registry" means architectures only), which gives an
  untrained network with the official IDRiD settings — useful to try the pipeline and for tests.

:func:`resolve` turns a source into a :class:`ModelRef` — name, path, architecture, metadata and
the weights' sha256 — reading the checkpoint's header once and no weights. A run calls it once and
passes the ``ModelRef`` on (``SegmentRequest``, ``PredictOptions``, ``SlideRequest``), so every
run's provenance records which weights it used; :meth:`ModelRef.load` builds the model through
the one loader, :func:`napari_m2mrf.models.checkpoints.load_checkpoint`.

Light to import (no torch): widgets list and inspect models before PyTorch has loaded.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psygnal import Signal, SignalInstance

from napari_m2mrf.cache import cache_dir
from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

# The only place the core finds the bundled checkpoints: package data looked up by package name
# (importlib.resources runs sample_data's docstring-only __init__, imports none of its modules).
BUNDLED_DIR = Path(str(resources.files("sample_data") / "checkpoints"))
CHECKPOINT_SUFFIX = ".safetensors"
CATALOGUE_FILE = "trained_models.json"


class _CatalogueEvents:
    changed = Signal(str)


_events = _CatalogueEvents()
catalogue_changed: SignalInstance = _events.changed


@dataclass(frozen=True)
class ModelRef:
    """What a model source resolved to: ``name`` (as given, or the bundled/trained name), the
    checkpoint ``path`` (None for an untrained registry architecture), ``arch`` (registry name),
    the checkpoint ``metadata`` and its ``weights_sha256`` (None when untrained)."""

    name: str
    path: Path | None
    arch: str
    metadata: dict[str, Any] = field(compare=False, repr=False)
    weights_sha256: str | None = None

    def load(self, device: Any = "cpu") -> nn.Module:
        """The model in eval mode on ``device`` (the checkpoint's weights, or an untrained network)."""
        if self.path is None:
            from napari_m2mrf.models import build_model

            return build_model(self.arch, **self.metadata.get("model", {})).to(device).eval()
        from napari_m2mrf.models.checkpoints import load_checkpoint

        model, _ = load_checkpoint(self.path, device, meta=self.metadata)
        return model

    def provenance(self) -> dict[str, Any]:
        """What a run records about its model."""
        return {"model": self.name, "checkpoint": None if self.path is None else str(self.path), "arch": self.arch,
                "weights_sha256": self.weights_sha256}


def bundled_models() -> dict[str, Path]:
    """Names (file stems) and paths of the checkpoints shipped in ``sample_data/checkpoints``."""
    return {path.stem: path for path in sorted(BUNDLED_DIR.glob(f"*{CHECKPOINT_SUFFIX}"))}


def _catalogue_path() -> Path:
    return cache_dir() / CATALOGUE_FILE


def trained_models() -> dict[str, Path]:
    """Catalogued trained models and their checkpoint paths, oldest first (entries whose file is gone
    are left out)."""
    path = _catalogue_path()
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {str(name): Path(file) for name, file in entries.items() if isinstance(file, str) and Path(file).is_file()}


def register_trained_model(name: str, checkpoint: str | os.PathLike[str]) -> str:
    """Catalogue ``checkpoint`` under ``name`` (replacing an entry of that name); returns the name."""
    checkpoint = Path(checkpoint).resolve()
    if not checkpoint.is_file():
        raise UserError(f"checkpoint file not found: {checkpoint}")
    entries = {n: str(p) for n, p in trained_models().items()}
    entries[name] = str(checkpoint)
    path = _catalogue_path()
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(entries, indent=2))
    os.replace(temporary, path)
    catalogue_changed.emit(name)
    return name


def named_models() -> dict[str, Path]:
    """Bundled and trained models by name (a trained model may shadow a bundled one of its name)."""
    return {**bundled_models(), **trained_models()}


def model_choices() -> list[str]:
    """The models a user can segment with: bundled checkpoints first, then the user's trained models.

    Registry architectures are left out: untrained, they label almost every pixel (see
    :func:`untrained_architecture`)."""
    return list(named_models())


def untrained_architecture(source: str | os.PathLike[str]) -> str | None:
    """Why ``source`` cannot segment, when it names a bare registry architecture (no bundled or trained
    model of that name); None otherwise. One line for the user."""
    from napari_m2mrf.models.registry import list_models

    name = str(source)
    if name in named_models() or name not in list_models():
        return None
    return (f"{name} is an untrained architecture; train it first with napari-m2mrf train "
            f"(or the Train widget), or give a trained model: {', '.join(named_models()) or 'a checkpoint file'}")


def resolve(source: str | os.PathLike[str] | ModelRef) -> ModelRef:
    """The :class:`ModelRef` of a bundled or trained name, a checkpoint path or a registry name
    (a ``ModelRef`` is returned as it is); ``UserError`` for anything else or an unreadable file.

    Reads the checkpoint's header once (validated metadata, no weights)."""
    if isinstance(source, ModelRef):
        return source
    from napari_m2mrf.models.checkpoints import fundus_metadata, read_checkpoint_metadata
    from napari_m2mrf.models.registry import list_models

    name = str(source)
    named = named_models()
    path = named.get(name)
    if path is None:
        candidate = Path(name).expanduser()
        if candidate.suffix in (CHECKPOINT_SUFFIX, ".pt") or candidate.exists():
            path = candidate
    if path is not None:
        if not os.path.lexists(path):
            raise UserError(f"checkpoint file not found: {path}")
        meta = read_checkpoint_metadata(path)
        ref = ModelRef(name, path, str(meta["arch"]), meta, meta.get("weights_sha256"))
    elif name in list_models():
        meta = {"arch": name, "model": {"num_classes": len(FUNDUS_CLASSES)}, **fundus_metadata("idrid", {"weights": "untrained"})}
        ref = ModelRef(name, None, name, meta, None)
    else:
        valid = ", ".join(list(named) + list_models())
        raise UserError(f"unknown model {name!r}: give a checkpoint file or one of {valid}")
    logger.info("model %s resolved: %s, arch %s, weights sha256 %s", ref.name, ref.path or "untrained", ref.arch,
                ref.weights_sha256)
    return ref


def resolve_model(source: str | os.PathLike[str] | ModelRef) -> tuple[nn.Module, dict]:
    """``(model in eval mode on the CPU, metadata)`` of ``source``: :func:`resolve`, then :meth:`ModelRef.load`."""
    ref = resolve(source)
    return ref.load(), ref.metadata


def model_metadata(source: str | os.PathLike[str] | ModelRef) -> dict | None:
    """The metadata of the model ``source`` names, reading no weights; None when it names nothing
    readable (the run that follows reports the problem)."""
    try:
        return resolve(source).metadata
    except UserError:
        return None
