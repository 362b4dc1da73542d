"""Checkpoints of deformed-downsampling segmenters (Jin et al.) and one loader for every model file.

A deformed checkpoint is the same container as :mod:`napari_m2mrf.models.checkpoints` (one
``.safetensors`` file: tensors plus the ``"napari_m2mrf"`` JSON metadata entry) holding the whole
:class:`~napari_m2mrf.models.deform.DeformedSegmenter` state (``seg_net.*`` and ``deformation.*``).
``arch``/``model`` describe the segmentation network (registry name and build kwargs) and two
entries are added::

    "kind": "deformed",
    "deformed": {"output_size": [h, w], "density_size": [h_d, w_d], "sampler": "deformed" | "uniform",
                 "sigma": σ (density pixels), "truncate": t, "aspect_ratio": 1.0 | "grid",
                 "deformation": "paper" | "official", "edge_weight": γ}

``output`` says how logits become probabilities: ``"softmax"`` (channel 0 is background, as the
trainer's slide models) or ``"sigmoid"`` (one channel per class). Fundus checkpoints have no
``kind`` (or ``"fundus"``).

:func:`load_model_file` opens any model file: a fundus or deformed ``.safetensors`` checkpoint
(the trainer writes its deformed ``best``/``last`` models in this format). Loading never executes
code from a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_m2mrf.errors import UserError
from napari_m2mrf.models.checkpoints import (
    _check_metadata,
    load_checkpoint,
    read_checked_tensors,
    read_checkpoint_metadata,
    write_checkpoint_file,
)
from napari_m2mrf.models.deform import (
    DeformationModule,
    DeformedSampler,
    DeformedSegmenter,
    UniformSampler,
)
from napari_m2mrf.models.registry import build_model

DEFORMED_KIND = "deformed"


def _seg_net(arch: str, **options: Any) -> nn.Module:
    """The segmentation network to load weights into.

    Built on the CPU (its random initialisation is overwritten) rather than on the ``meta``
    device: the first ``meta`` build in a process imports torch's reference kernels while holding
    the GIL for 0.1–0.4 s at a time, which would freeze a GUI whose worker thread loads the model.
    """
    return build_model(arch, **options)


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
    """A :class:`DeformedSegmenter` around ``seg_net`` as the ``"deformed"`` entry ``settings`` says."""
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
    _check_metadata(meta, int(config["num_classes"]), str(path))
    return write_checkpoint_file(
        path, model.state_dict(), meta, arch, config, dtype, kind=DEFORMED_KIND, deformed=deformed_settings(model)
    )


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: Path, arch: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        problems = ([f"missing: {k}" for k in missing[:3]] + [f"unexpected: {k}" for k in unexpected[:3]]
                    + [f"shape mismatch: {k}" for k in mismatched[:3]])
        raise UserError(f"{where}: weights do not fit a deformed {arch}: {'; '.join(problems)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def load_deformed_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DeformedSegmenter, dict]:
    """Rebuild a deformed segmenter from a file written by :func:`save_deformed_checkpoint` (eval mode)."""
    path = Path(path)
    meta = read_checkpoint_metadata(path)
    if not is_deformed(meta) or not isinstance(meta.get("deformed"), dict):
        raise UserError(f"{path}: not a deformed-downsampling checkpoint")
    seg_net = _seg_net(meta["arch"], **meta["model"])
    _check_metadata(meta, seg_net.num_classes, str(path))
    model = build_deformed(seg_net, meta["deformed"])
    state = read_checked_tensors(path, meta)
    _load_state(model, state, path, meta["arch"])
    return model.to(device).eval(), meta


def load_model_file(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """``(model in eval mode, metadata)`` from a fundus or deformed checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint file not found: {path}")
    if is_deformed(read_checkpoint_metadata(path)):
        return load_deformed_checkpoint(path, device)
    return load_checkpoint(path, device)
