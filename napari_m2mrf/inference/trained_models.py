"""Checkpoints the user trained, registered by name so every widget can offer them.

The register is a JSON file ``{name: checkpoint path}`` in the user cache, written atomically;
``registry_changed`` (a psygnal signal, no Qt) fires after each registration so open widgets
refresh their model lists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from psygnal import Signal, SignalInstance

from napari_m2mrf.cache import cache_dir
from napari_m2mrf.errors import UserError

REGISTER_FILE = "trained_models.json"


class _RegistryEvents:
    changed = Signal(str)


_events = _RegistryEvents()
registry_changed: SignalInstance = _events.changed


def _register_path() -> Path:
    return cache_dir() / REGISTER_FILE


def trained_models() -> dict[str, Path]:
    """Registered names and checkpoint paths, oldest first (entries whose file is gone are left out)."""
    path = _register_path()
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {name: Path(file) for name, file in entries.items() if Path(file).is_file()}


def register_trained_model(name: str, checkpoint: str | os.PathLike[str]) -> str:
    """Register ``checkpoint`` under ``name`` (replacing an entry of that name); returns the name."""
    checkpoint = Path(checkpoint).resolve()
    if not checkpoint.is_file():
        raise UserError(f"checkpoint file not found: {checkpoint}")
    entries = {n: str(p) for n, p in trained_models().items()}
    entries[name] = str(checkpoint)
    path = _register_path()
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(entries, indent=2))
    os.replace(temporary, path)
    registry_changed.emit(name)
    return name
