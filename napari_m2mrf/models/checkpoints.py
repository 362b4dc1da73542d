"""Checkpoints: one ``.safetensors`` file, weights plus JSON metadata in its header.

The header's ``__metadata__`` holds one entry, ``"napari_m2mrf"``, a JSON object::

    {
      "format": "napari-m2mrf-checkpoint", "format_version": 1,
      "arch": "m2mrf_hrnetv2_w48",                    # registry name
      "model": {"num_classes": 4, "variant": "A", "patch_size": 8, ...},   # build_model kwargs
      "classes": [{"label": 1, "code": "EX", "name": "Hard exudates", "color": [1, 0, 0, 1]}, ...],
      "normalization": {"mean": [R, G, B], "std": [R, G, B]},            # RGB, 0-255 pixel values
      "input_size": [H, W],                                               # pixels the model expects
      "provenance": {...},                                                # free-form: data, run, source
      "weights_sha256": "…",                                              # see weights_sha256()
      "weights_dtype": "float32"
    }

plus any other keys the caller adds. ``load_checkpoint`` rebuilds the model from this metadata alone
and checks the weights against their sha256. Loading never executes code from the file (safetensors
holds raw tensors only). Weights may be stored as float16 (``dtype=torch.float16``) to halve a
bundled file, or as int8 (``dtype=torch.int8``) to quarter it; they become float32 on load.

int8 storage (``"weights_dtype": "int8"``): every floating-point tensor of two or more dimensions with
at least ``INT8_MIN_ELEMENTS`` elements (convolution and linear weights, (C_out, C_in, ...)) is
quantised symmetrically per output channel: ``scale[c] = max|w[c]| / 127``, ``q = round(w / scale)``
as int8, stored under its own name with the float32 scales (C_out,) under ``<name>@scale``; on load
``w = q · scale``, so each weight is within ``scale[c] / 2`` of the original. Smaller tensors (biases,
BatchNorm statistics) are stored as float16.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from napari_m2mrf.classes import FUNDUS_CLASSES, LesionClass
from napari_m2mrf.errors import UserError
from napari_m2mrf.models.official import OFFICIAL_PRESETS
from napari_m2mrf.models.registry import build_uninitialised

FORMAT = "napari-m2mrf-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "napari_m2mrf"
REQUIRED_KEYS = ("classes", "normalization", "input_size", "provenance")
INT8_MIN_ELEMENTS = 1024
SCALE_SUFFIX = "@scale"


def fundus_metadata(dataset: str = "idrid", provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Metadata for a fundus lesion model: EX, HE, SE, MA with their colours, and the official
    normalisation and input size of ``dataset`` (``"idrid"`` or ``"ddr"``)."""
    if dataset not in OFFICIAL_PRESETS:
        raise UserError(f"unknown dataset preset {dataset!r}; valid: {', '.join(OFFICIAL_PRESETS)}")
    preset = OFFICIAL_PRESETS[dataset]
    return {
        "classes": [class_to_json(c) for c in FUNDUS_CLASSES],
        "normalization": {"mean": list(preset["mean"]), "std": list(preset["std"])},
        "input_size": list(preset["input_size"]),
        "provenance": {"dataset_preset": dataset, **(provenance or {})},
    }


def class_to_json(cls: LesionClass) -> dict[str, Any]:
    return {"label": cls.label, "code": cls.code, "name": cls.name, "color": list(cls.color)}


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: name, dtype, shape and raw bytes of each."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a whole file (for provenance records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_metadata(meta: Mapping[str, Any], num_classes: int, where: str) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise UserError(f"{where}: checkpoint metadata lacks {', '.join(missing)}")
    classes = meta["classes"]
    if not isinstance(classes, list) or len(classes) != num_classes:
        raise UserError(f"{where}: metadata lists {len(classes) if isinstance(classes, list) else 'no'} classes, the model has {num_classes} outputs")
    for entry in classes:
        if not isinstance(entry, dict) or not {"label", "code", "name", "color"} <= set(entry):
            raise UserError(f"{where}: each class needs label, code, name and color, got {entry!r}")
    norm = meta["normalization"]
    if not isinstance(norm, dict) or any(len(norm.get(k, ())) != 3 for k in ("mean", "std")):
        raise UserError(f"{where}: normalization needs 3 RGB means and 3 stds (0-255), got {norm!r}")
    size = meta["input_size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or min(size) < 1:
        raise UserError(f"{where}: input_size must be [height, width], got {size!r}")


def save_checkpoint(
    path: str | Path, model: nn.Module, meta: Mapping[str, Any], dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Write ``model`` and ``meta`` to one ``.safetensors`` file (atomically); returns the metadata written.

    ``model`` must come from :func:`~napari_m2mrf.models.build_model` (its ``build_config`` gives
    ``arch`` and ``model``); ``meta`` must hold ``classes``, ``normalization``, ``input_size`` and
    ``provenance`` (:func:`fundus_metadata` makes them for fundus models). Floating-point tensors are
    stored as ``dtype`` (float32 or float16).
    """
    config = dict(getattr(model, "build_config", {}))
    if "arch" not in config:
        raise ValueError("save_checkpoint needs a model built by build_model (it has no build_config)")
    arch = config.pop("arch")
    _check_metadata(meta, int(config["num_classes"]), str(path))
    return write_checkpoint_file(path, model.state_dict(), meta, arch, config, dtype)


def write_checkpoint_file(
    path: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    arch: str,
    model_config: Mapping[str, Any],
    dtype: torch.dtype = torch.float32,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``state_dict`` (floating-point tensors stored as ``dtype``: float32, float16, or int8 as in
    the module docstring) and the full metadata — ``meta``, format, ``arch``, ``model`` config,
    ``extra`` keys and the weights' sha256 — to ``path`` atomically."""
    state = stored_tensors(state_dict, dtype)
    full = {
        **meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **extra,
        "arch": arch,
        "model": dict(model_config),
        "weights_sha256": weights_sha256(state),
        "weights_dtype": str(dtype).removeprefix("torch."),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(state, temporary, metadata={METADATA_KEY: json.dumps(full)})
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a checkpoint is shared like any data file
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return full


def stored_tensors(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors written for ``state_dict`` when floating-point weights are stored as ``dtype``."""
    stored = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        if not tensor.is_floating_point():
            stored[name] = tensor.contiguous()
        elif dtype != torch.int8:
            stored[name] = tensor.to(dtype).contiguous()
        elif tensor.dim() >= 2 and tensor.numel() >= INT8_MIN_ELEMENTS:
            stored[name], stored[name + SCALE_SUFFIX] = quantize_per_channel(tensor)
        else:
            stored[name] = tensor.to(torch.float16).contiguous()
    return stored


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: ``weight`` (C_out, ...) as int8 ``q`` of the same shape and float32 ``scale``
    (C_out,) with ``weight ≈ q · scale`` per output channel (symmetric, max |w| → 127)."""
    weight = weight.float()
    peak = weight.abs().reshape(weight.shape[0], -1).amax(dim=1)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    broadcast = scale.reshape(-1, *([1] * (weight.dim() - 1)))
    quantized = torch.round(weight / broadcast).clamp_(-127, 127).to(torch.int8)
    return quantized.contiguous(), scale.contiguous()


def dequantized(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stored tensors back to model tensors: each int8 tensor with a ``@scale`` partner becomes float32."""
    tensors = {}
    for name, tensor in state.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = state.get(name + SCALE_SUFFIX)
        if scale is not None:
            tensor = tensor.float() * scale.float().reshape(-1, *([1] * (tensor.dim() - 1)))
        tensors[name] = tensor
    return tensors


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: not a safetensors checkpoint ({exc})") from exc
    if METADATA_KEY not in header:
        raise UserError(f"{path}: a safetensors file without napari-m2mrf metadata (convert official .pth files with 'napari-m2mrf convert-checkpoint')")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: checkpoint metadata is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT or not isinstance(meta.get("format_version"), int):
        raise UserError(f"{path}: not a {FORMAT} file")
    if meta["format_version"] > FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {meta['format_version']} is newer than this napari-m2mrf ({FORMAT_VERSION}); update the plugin")
    return meta


def read_checked_tensors(path: str | Path, meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model tensors of checkpoint ``path`` (int8 weights dequantised), after checking the stored
    tensors against the sha256 in its metadata ``meta``."""
    with safe_open(str(path), framework="pt") as handle:
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    if weights_sha256(state) != meta.get("weights_sha256"):
        raise UserError(f"{path}: weights do not match their sha256 in the metadata (file corrupted or edited)")
    return dequantized(state)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the file's metadata and load its weights; returns ``(model in eval mode, meta)``."""
    path = Path(path)
    meta = read_checkpoint_metadata(path)
    if "arch" not in meta or not isinstance(meta.get("model"), dict):
        raise UserError(f"{path}: checkpoint metadata lacks arch or model")
    model = build_uninitialised(meta["arch"], **meta["model"])
    _check_metadata(meta, model.num_classes, str(path))
    state = read_checked_tensors(path, meta)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        problems = [f"missing: {k}" for k in missing] + [f"unexpected: {k}" for k in unexpected] + [f"shape mismatch: {k}" for k in mismatched]
        raise UserError(f"{path}: weights do not fit {meta['arch']}: {'; '.join(problems)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return model.to(device).eval(), meta
