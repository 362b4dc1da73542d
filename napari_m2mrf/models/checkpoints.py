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

plus any other keys the caller adds. A deformed-downsampling segmenter (Jin et al.;
:class:`~napari_m2mrf.models.deform.DeformedSegmenter`, its whole state ``seg_net.*`` and
``deformation.*``) is the same container; ``arch``/``model`` describe its segmentation network and
two entries are added::

    "kind": "deformed",
    "deformed": {"output_size": [h, w], "density_size": [h_d, w_d], "sampler": "deformed" | "uniform",
                 "sigma": σ (density pixels), "truncate": t, "aspect_ratio": 1.0 | "grid",
                 "deformation": "paper" | "official", "edge_weight": γ}

and, when the training slides had a pixel size, ``"training_scale"`` — the µm per pixel of the
training slides and the µm per sample the model saw them at (:mod:`napari_m2mrf.models.training_scale`;
optional: a checkpoint without it loads as before). :func:`update_checkpoint_metadata` adds such an
entry to an existing file without touching its tensors.

``output`` says how logits become probabilities (:mod:`napari_m2mrf.models.outputs`): ``"sigmoid"``
(one channel per class; fundus models) or ``"softmax"`` (channel 0 is background, as the trainer's
slide models). Fundus checkpoints have no ``kind`` (or ``"fundus"``).

**One loader.** :func:`load_checkpoint` opens every model file: it reads the safetensors header
once (through the read-side gate, ``napari_m2mrf.io.input_gate.check_safetensors_header``),
validates the metadata once (:func:`validate_metadata`: limits on sizes, class counts, normalisation
and patch settings, so a hostile or damaged file gives a one-line ``UserError``, never a traceback
or a giant allocation), builds the network its ``kind`` names, loads the weights strictly
(:func:`load_state_strict`) after checking them against their sha256. Loading never executes code
from the file (safetensors holds raw tensors only).

**Construction policy** (both kinds): the network is built on the CPU with ``build_model`` (its
random initialisation is then overwritten), not on the ``meta`` device: the first ``meta`` build in
a process imports torch's reference kernels while holding the GIL for 0.1–0.4 s at a time, which
would freeze a GUI whose worker thread loads the model. CPU initialisation costs more CPU time
(about a second for W48) but releases the GIL. :func:`build_deformed` is the only builder of a
:class:`DeformedSegmenter` (the trainer converts its ``DeformConfig`` to these settings). Weights may be stored as float16 (``dtype=torch.float16``) to halve a
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
import logging
import math
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
from napari_m2mrf.errors import InputRefused, LimitExceeded, UserError
from napari_m2mrf.models.deform import DeformationModule, DeformedSampler, DeformedSegmenter, UniformSampler
from napari_m2mrf.models.official import OFFICIAL_PRESETS
from napari_m2mrf.models.registry import build_model
from napari_m2mrf.models.multiscale import class_scales, multiscale_thresholds
from napari_m2mrf.models.training_scale import METADATA_KEY as SCALE_KEY, TrainingScale

logger = logging.getLogger(__name__)

FORMAT = "napari-m2mrf-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "napari_m2mrf"
REQUIRED_KEYS = ("classes", "normalization", "input_size", "provenance")
INT8_MIN_ELEMENTS = 1024
SCALE_SUFFIX = "@scale"
DEFORMED_KIND = "deformed"
KINDS = ("fundus", DEFORMED_KIND)
# Limits of metadata validation: anything outside is refused before a tensor is allocated.
MAX_SIDE = 16384  # input_size, output_size, density_size: px per side
MAX_CLASSES = 255  # label values are uint8
MODEL_LIMITS = {"num_classes": (1, MAX_CLASSES), "patch_size": (1, 32), "compress_rate": (1, 64), "alpha": (1, 4096),
                "groups": (1, 64)}


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


def _fail(where: str, message: str) -> UserError:
    return UserError(f"{where}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_size(value: Any, key: str, where: str) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_int(v) and 1 <= v <= MAX_SIDE for v in value):
        raise _fail(where, f"{key} must be [height, width], whole numbers 1..{MAX_SIDE}, got {value!r}")


def _check_deformed(settings: Any, where: str) -> None:
    if not isinstance(settings, dict):
        raise _fail(where, f"a deformed checkpoint needs a 'deformed' settings object, got {settings!r}")
    _check_size(settings.get("output_size"), "deformed output_size", where)
    if settings.get("density_size") is not None:
        _check_size(settings["density_size"], "deformed density_size", where)
    sampler = settings.get("sampler", "deformed")
    if sampler not in ("deformed", "uniform"):
        raise _fail(where, f"deformed sampler must be 'deformed' or 'uniform', got {sampler!r}")
    if sampler == "deformed":
        for key, default, top in (("sigma", None, 1024.0), ("truncate", 1.0, 64.0)):
            value = settings.get(key, default)
            if not _is_number(value) or not 0 < value <= top:
                raise _fail(where, f"deformed {key} must be a number in (0, {top:g}], got {value!r}")
        aspect = settings.get("aspect_ratio", 1.0)
        if aspect != "grid" and (not _is_number(aspect) or not 0 < aspect <= 64):
            raise _fail(where, f"deformed aspect_ratio must be 'grid' or a number in (0, 64], got {aspect!r}")
    if settings.get("deformation", "paper") not in ("paper", "official"):
        raise _fail(where, f"deformed deformation must be 'paper' or 'official', got {settings.get('deformation')!r}")
    edge = settings.get("edge_weight", 0.0)
    if not _is_number(edge) or edge < 0:
        raise _fail(where, f"deformed edge_weight must be a number ≥ 0, got {edge!r}")


def validate_metadata(meta: Mapping[str, Any], where: str, num_classes: int | None = None) -> None:
    """Check checkpoint metadata ``meta`` (of the file ``where``) once, before anything is built:
    required keys, classes (1..255, each with label 0..255, code, name, colour; as many as the model
    has outputs: ``num_classes``, else ``meta["model"]["num_classes"]`` when present), finite RGB
    normalisation with every std > 0, ``input_size`` (1..16384 px per side), ``output``, the model's
    build options (whole numbers within ``MODEL_LIMITS``), a deformed model's settings, the
    optional ``training_scale`` (:mod:`napari_m2mrf.models.training_scale`) and a fundus model's
    optional ``test_time`` scales and thresholds (:mod:`napari_m2mrf.models.multiscale`).
    ``UserError`` naming ``where`` and the field otherwise."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise _fail(where, f"checkpoint metadata lacks {', '.join(missing)}")
    options = meta.get("model")
    if options is not None:
        if not isinstance(options, dict):
            raise _fail(where, f"checkpoint metadata 'model' must be an object of build options, got {options!r}")
        for key, (low, high) in MODEL_LIMITS.items():
            if key in options and not (_is_int(options[key]) and low <= options[key] <= high):
                raise _fail(where, f"model option {key} must be a whole number {low}..{high}, got {options[key]!r}")
        if num_classes is None and "num_classes" in options:
            num_classes = options["num_classes"]
    classes = meta["classes"]
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES or (
        num_classes is not None and len(classes) != num_classes
    ):
        count = len(classes) if isinstance(classes, list) else "no"
        raise _fail(where, f"metadata lists {count} classes, the model has {num_classes} outputs")
    for entry in classes:
        if not isinstance(entry, dict) or not {"label", "code", "name", "color"} <= set(entry):
            raise _fail(where, f"each class needs label, code, name and color, got {entry!r}")
        if not _is_int(entry["label"]) or not 0 <= entry["label"] <= MAX_CLASSES:
            raise _fail(where, f"class labels must be whole numbers 0..{MAX_CLASSES}, got {entry['label']!r}")
    norm = meta["normalization"]
    if not isinstance(norm, dict) or any(
        not isinstance(norm.get(k), (list, tuple)) or len(norm[k]) != 3 or not all(_is_number(v) for v in norm[k])
        for k in ("mean", "std")
    ) or not all(v > 0 for v in norm["std"]):
        raise _fail(where, f"normalization needs 3 finite RGB means and 3 stds > 0 (0-255), got {norm!r}")
    _check_size(meta["input_size"], "input_size", where)
    if meta.get("output", "sigmoid") not in ("sigmoid", "softmax"):
        raise _fail(where, f"output must be 'sigmoid' or 'softmax', got {meta.get('output')!r}")
    kind = meta.get("kind", "fundus")
    if kind not in KINDS:
        raise _fail(where, f"unknown checkpoint kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == DEFORMED_KIND:
        _check_deformed(meta.get("deformed"), where)
    if meta.get(SCALE_KEY) is not None:
        try:
            TrainingScale.from_json(meta[SCALE_KEY])
        except ValueError as exc:
            raise _fail(where, f"{SCALE_KEY}: {exc}") from None
    if meta.get("test_time") is not None:
        try:
            class_scales(meta)
            multiscale_thresholds(meta)
        except UserError as exc:
            raise _fail(where, str(exc)) from None


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
    validate_metadata({**meta, "model": config}, str(path), int(config["num_classes"]))
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
    _write_file(path, state, full)
    return full


def _write_file(path: str | Path, state: Mapping[str, torch.Tensor], full: Mapping[str, Any]) -> None:
    """Write stored tensors ``state`` and the full metadata ``full`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(dict(state), temporary, metadata={METADATA_KEY: json.dumps(full)})
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a checkpoint is shared like any data file
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def update_checkpoint_metadata(path: str | Path, updates: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the metadata of the checkpoint at ``path`` and rewrite it atomically,
    the stored tensors unchanged (same dtypes, bytes and ``weights_sha256``; the file's own sha256
    changes with its header). The weights are checked against their sha256 first and the new metadata
    validated; ``format``, ``arch``, ``model`` and the weights' entries cannot be updated. Returns the
    metadata written."""
    fixed = {"format", "format_version", "arch", "model", "weights_sha256", "weights_dtype"} & set(updates)
    if fixed:
        raise ValueError(f"cannot update {', '.join(sorted(fixed))}: they describe the stored weights")
    meta = read_checkpoint_metadata(path)
    state = _checked_stored_tensors(path, meta)
    full = {**meta, **updates}
    validate_metadata(full, str(path))
    _write_file(path, state, full)
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
    """The JSON metadata of a checkpoint, validated (:func:`validate_metadata`), without reading its
    tensors: the safetensors header is read once, through the read-side gate."""
    from napari_m2mrf.io.input_gate import check_path, check_safetensors_header

    path = Path(path)
    check_path(path, folder_ok=False)  # a missing file, FIFO, device or folder: named, never opened
    try:
        header = check_safetensors_header(path)
    except LimitExceeded as exc:
        raise UserError(f"{path}: not a safetensors checkpoint ({_reason(exc, path)})") from None
    except InputRefused as exc:
        raise UserError(f"{path}: not a safetensors checkpoint ({_reason(exc, path)})") from None
    stored = header.get("__metadata__") or {}
    if METADATA_KEY not in stored:
        raise UserError(f"{path}: a safetensors file without napari-m2mrf metadata (convert official .pth files with 'napari-m2mrf convert-checkpoint')")
    try:
        meta = json.loads(stored[METADATA_KEY])
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{path}: checkpoint metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not _is_int(meta.get("format_version")):
        raise UserError(f"{path}: not a {FORMAT} file")
    if meta["format_version"] > FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {meta['format_version']} is newer than this napari-m2mrf ({FORMAT_VERSION}); update the plugin")
    if not isinstance(meta.get("arch"), str) or not isinstance(meta.get("model"), dict):
        raise UserError(f"{path}: checkpoint metadata lacks arch or model")
    validate_metadata(meta, str(path))
    return meta


def _reason(exc: Exception, path: Path) -> str:
    """The gate's message without the leading ``path: `` it starts with."""
    return str(exc).removeprefix(f"{path}: ")


def read_checked_tensors(path: str | Path, meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model tensors of checkpoint ``path`` (int8 weights dequantised), after checking the stored
    tensors against the sha256 in its metadata ``meta``."""
    return dequantized(_checked_stored_tensors(path, meta))


def _checked_stored_tensors(path: str | Path, meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of checkpoint ``path`` as stored (int8 weights and their scales as they are), checked
    against the sha256 in its metadata ``meta``."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: cannot read the checkpoint's tensors ({exc})") from None
    if weights_sha256(state) != meta.get("weights_sha256"):
        raise UserError(f"{path}: weights do not match their sha256 in the metadata (file corrupted or edited)")
    return state


def is_deformed(meta: Mapping[str, Any]) -> bool:
    """True when checkpoint metadata describes a deformed-downsampling segmenter."""
    return meta.get("kind") == DEFORMED_KIND


def deformed_settings(model: DeformedSegmenter) -> dict[str, Any]:
    """The JSON ``"deformed"`` entry describing ``model``'s sizes, sampler and deformation module."""
    sampler = model.sampler
    settings: dict[str, Any] = {
        "output_size": list(model.output_size),
        "density_size": list(model.density_size),
        "deformation": getattr(model.deformation, "variant", "paper"),
        "edge_weight": model.edge_weight,
    }
    if isinstance(sampler, DeformedSampler):
        settings.update(sampler="deformed", sigma=sampler.sigma, truncate=sampler.truncate,
                        aspect_ratio=sampler.aspect_ratio)
    elif isinstance(sampler, UniformSampler):
        settings["sampler"] = "uniform"
    else:
        raise ValueError(f"cannot describe sampler {type(sampler).__name__}")
    return settings


def build_deformed(seg_net: nn.Module, settings: Mapping[str, Any]) -> DeformedSegmenter:
    """The one builder of a :class:`DeformedSegmenter`: ``seg_net`` behind the deformation module and
    sampler that the ``"deformed"`` entry ``settings`` describes (``output_size``, optional
    ``density_size`` (default: the output size), ``sampler`` ``"deformed"`` (``sigma``, ``truncate``
    1, ``aspect_ratio`` 1) or ``"uniform"``, ``deformation`` ``"paper"``, ``edge_weight`` 0)."""
    if settings.get("sampler", "deformed") == "uniform":
        sampler: nn.Module = UniformSampler()
    else:
        aspect = settings.get("aspect_ratio", 1.0)
        sampler = DeformedSampler(
            sigma=float(settings["sigma"]), truncate=float(settings.get("truncate", 1.0)),
            aspect_ratio=aspect if aspect == "grid" else float(aspect),
        )
    return DeformedSegmenter(
        seg_net,
        output_size=tuple(settings["output_size"]),
        density_size=tuple(settings.get("density_size") or settings["output_size"]),
        sampler=sampler,
        deformation=DeformationModule(settings.get("deformation", "paper")),
        edge_weight=float(settings.get("edge_weight", 0.0)),
    )


def save_deformed_checkpoint(
    path: str | Path, model: DeformedSegmenter, meta: Mapping[str, Any], dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Write ``model`` (its ``seg_net`` built by ``build_model``) and ``meta`` to one ``.safetensors`` file.

    ``meta`` needs ``classes`` (one per output channel), ``normalization``, ``input_size`` and
    ``provenance``, as fundus checkpoints, plus ``output`` (``"softmax"`` or ``"sigmoid"``).
    Returns the metadata written.
    """
    config = dict(getattr(model.seg_net, "build_config", {}))
    if "arch" not in config:
        raise ValueError("the segmentation network must come from build_model (it has no build_config)")
    if meta.get("output") not in ("softmax", "sigmoid"):
        raise ValueError("meta['output'] must be 'softmax' or 'sigmoid'")
    arch = config.pop("arch")
    settings = deformed_settings(model)
    validate_metadata({**meta, "model": config, "kind": DEFORMED_KIND, "deformed": settings}, str(path),
                      int(config["num_classes"]))
    return write_checkpoint_file(path, model.state_dict(), meta, arch, config, dtype, kind=DEFORMED_KIND, deformed=settings)


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], where: str | Path, what: str) -> None:
    """Load ``state`` into ``model`` only if every key is there, none is extra and every shape fits;
    else one ``UserError`` naming ``where``, ``what`` the model is and the first problems."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        problems = ([f"missing: {k}" for k in missing[:3]] + [f"unexpected: {k}" for k in unexpected[:3]]
                    + [f"shape mismatch: {k}" for k in mismatched[:3]])
        raise UserError(f"{where}: weights do not fit {what}: {'; '.join(problems)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def build_from_metadata(meta: Mapping[str, Any]) -> nn.Module:
    """The untrained network validated metadata ``meta`` describes, built on the CPU (see the
    construction policy in the module docstring): a registry model, or one behind a deformed sampler."""
    seg_net = build_model(meta["arch"], **meta["model"])
    return build_deformed(seg_net, meta["deformed"]) if is_deformed(meta) else seg_net


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", meta: Mapping[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, metadata)`` of any model file, fundus or deformed (the one loader; see
    the module docstring). ``meta``: the file's metadata when already read (by
    :func:`read_checkpoint_metadata`, e.g. through ``napari_m2mrf.catalog.resolve``), so the header
    is read once."""
    path = Path(path)
    meta = dict(meta) if meta is not None else read_checkpoint_metadata(path)
    model = build_from_metadata(meta)
    what = f"a deformed {meta['arch']}" if is_deformed(meta) else meta["arch"]
    load_state_strict(model, read_checked_tensors(path, meta), path, what)
    logger.info("loaded %s (%s) from %s, weights sha256 %s", what, meta.get("kind", "fundus"), path,
                meta.get("weights_sha256"))
    return model.to(device).eval(), meta
