"""Load the official M2MRF / mmseg HRNetV2 checkpoints through an explicit key map.

Official state-dict names (mmseg 0.8 + the M2MRF code) → ours:

===========================================  ===========================================
official                                     ours
===========================================  ===========================================
``backbone.<path>``                          ``backbone.<path>`` (same HRNet nesting)
``…fuse_layers.i.j.sample_k.…`` (cascade up) ``…fuse_layers.i.j.<2+k>.…``
``….sample_encode_conv.``                    ``….compressor.``
``….sample.sample_fc.`` (Conv1d, ``o×i×1``)  ``….patch_reduce.`` (``o×i``)
``….sample.sample_fc1.`` (Conv1d)            ``….patch_expand.``
``….sample_decode_conv.``                    ``….recover.``
``decode_head.convs.0.conv.``                ``head.fuse.0.``
``decode_head.convs.0.bn.``                  ``head.fuse.1.``
``decode_head.conv_seg.``                    ``head.classifier.``
===========================================  ===========================================

Files are read with ``torch.load(weights_only=True)``: no code from the file runs. A full
checkpoint (``{'meta', 'state_dict', 'optimizer'}``) must fill every tensor of the model; an
ImageNet-pretrained backbone (``hrnetv2_w18/w48`` from HRNet-Image-Classification, keys without a
prefix, plus classification-only layers) loads as training initialisation, the way mmcv's
``strict=False`` does: matching names and shapes are copied, the rest is reported.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_m2mrf.errors import UserError

# Dataset settings of the official configs (normalisation: RGB, 0-255; input size: H, W).
OFFICIAL_PRESETS: dict[str, dict[str, Any]] = {
    "idrid": {
        "mean": [116.513, 56.437, 16.309],
        "std": [80.206, 41.232, 13.293],
        "input_size": [960, 1440],
    },
    "ddr": {
        "mean": [81.205, 50.636, 21.216],
        "std": [76.252, 48.798, 21.625],
        "input_size": [1024, 1024],
    },
}

_CASCADE_UP = re.compile(r"\.sample_(\d+)\.")  # k-th ×2 M2MRF of a cascade: index 2 + k after conv, BN
_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\.sample_encode_conv\."), ".compressor."),
    (re.compile(r"\.sample\.sample_fc1\."), ".patch_expand."),
    (re.compile(r"\.sample\.sample_fc\."), ".patch_reduce."),
    (re.compile(r"\.sample_decode_conv\."), ".recover."),
    (re.compile(r"^decode_head\.convs\.0\.conv\."), "head.fuse.0."),
    (re.compile(r"^decode_head\.convs\.0\.bn\."), "head.fuse.1."),
    (re.compile(r"^decode_head\.conv_seg\."), "head.classifier."),
)
_PATCH_LINEAR = re.compile(r"\.patch_(reduce|expand)\.weight$")
# Layers of the ImageNet classification network that a segmentation backbone does not have.
_CLASSIFICATION_ONLY = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


def official_to_ours(key: str) -> str:
    """Our state-dict name for an official one (see the module docstring)."""
    key = _CASCADE_UP.sub(lambda m: f".{2 + int(m.group(1))}.", key)
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key)
    return key


def _converted(key: str, tensor: torch.Tensor, target_shape: torch.Size) -> torch.Tensor | None:
    """``tensor`` in our layout, or ``None`` when its shape does not fit ``target_shape``."""
    if tensor.shape == target_shape:
        return tensor
    if _PATCH_LINEAR.search(key) and tensor.shape == (*target_shape, 1):  # Conv1d(k=1) → linear
        return tensor[..., 0]
    return None


@dataclass
class KeyMapReport:
    """What a key-mapped load did: converted tensors and every problem found."""

    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)  # official keys with no place in the model
    missing: list[str] = field(default_factory=list)  # model tensors no official key was meant for
    mismatched: list[str] = field(default_factory=list)  # "key: official shape vs ours"
    ignored: list[str] = field(default_factory=list)  # keys that have no meaning here (by design)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe_problems(self) -> str:
        """One line: ``N missing (k1, k2, …); M unexpected (…); L mis-shaped (key: official shape vs ours)``."""
        groups = (("missing", self.missing), ("unexpected", self.unexpected), ("mis-shaped", self.mismatched))
        return "; ".join(f"{len(keys)} {label} ({', '.join(keys)})" for label, keys in groups if keys)


def map_official_state_dict(official: Mapping[str, torch.Tensor], model: nn.Module) -> KeyMapReport:
    """Convert ``official`` tensors into ``model``'s names and layouts.

    Nothing is loaded into ``model``; the report lists what fits and what does not.
    """
    ours = model.state_dict()
    report = KeyMapReport()
    misshaped: set[str] = set()
    for official_key, tensor in official.items():
        if not isinstance(tensor, torch.Tensor):
            report.unexpected.append(f"{official_key} (not a tensor)")
            continue
        key = official_to_ours(official_key)
        if key not in ours:
            report.unexpected.append(official_key)
            continue
        converted = _converted(key, tensor, ours[key].shape)
        if converted is None:
            report.mismatched.append(f"{official_key}: {tuple(tensor.shape)} vs {tuple(ours[key].shape)}")
            misshaped.add(key)
            continue
        report.state_dict[key] = converted.to(ours[key].dtype)
    report.missing = [k for k in ours if k not in report.state_dict and k not in misshaped]
    return report


def read_official_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` from an official ``.pth``, read with ``weights_only=True``.

    Accepts an mmcv checkpoint (``{'meta', 'state_dict', 'optimizer'}``), a ``{'model': …}``
    wrapper or a bare state dict; strips a DataParallel ``module.`` prefix.
    """
    from napari_m2mrf.io.input_gate import check_path

    path = Path(path)
    check_path(path, folder_ok=False)  # a FIFO, device, loop or empty file: refused unopened
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if unsafe:
            raise UserError(
                f"{path}: refused to load: the file holds a Python object ({unsafe.group(1)}) beyond tensors and plain data, "
                "which could run code"
            ) from exc
        raise UserError(f"{path}: not a PyTorch checkpoint (unreadable pickle)") from exc
    except (RuntimeError, EOFError, OSError, ValueError, LookupError, TypeError, AttributeError, UnicodeError) as exc:
        # the weights-only unpickler on arbitrary bytes fails in many ways (IndexError on a text file)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {first})") from exc
    if not isinstance(content, dict):
        raise UserError(f"{path}: expected a dict of tensors, found {type(content).__name__}")
    meta = content.get("meta") if isinstance(content.get("meta"), dict) else {}
    for wrapper in ("state_dict", "model"):
        if isinstance(content.get(wrapper), dict):
            content = content[wrapper]
            break
    state = {k.removeprefix("module."): v for k, v in content.items()}
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: holds no tensors")
    return state, meta


def load_official_weights(model: nn.Module, path: str | Path) -> int:
    """Fill every tensor of ``model`` from an official mmseg checkpoint; returns the number of keys mapped.

    Raises :class:`UserError` listing every missing, unexpected or mis-shaped key when the file
    does not fit the model exactly; ``model`` is left untouched then.
    """
    state, _ = read_official_file(path)
    report = map_official_state_dict(state, model)
    if not report.ok:
        raise UserError(f"{path}: does not fit {_describe(model)}: {report.describe_problems()}")
    model.load_state_dict(report.state_dict, strict=True)
    return len(report.state_dict)


def fitting_variants(state: Mapping[str, torch.Tensor], arch: str, num_classes: int) -> list[str]:
    """The M2MRF variants (A-D) of ``arch`` whose official key map ``state`` fits exactly.

    The four variants differ in key names (one-step vs cascade paths), so at most one fits a
    complete official checkpoint. Models are built on the ``meta`` device (no memory, instant).
    """
    from napari_m2mrf.models.registry import VARIANTS, build_model

    fitting = []
    for variant in VARIANTS:
        with torch.device("meta"):
            model = build_model(arch, variant=variant, num_classes=num_classes)
        if map_official_state_dict(state, model).ok:
            fitting.append(variant)
    return fitting


def official_num_classes(state: Mapping[str, torch.Tensor], path: str | Path) -> int:
    """Output classes of an official segmentation checkpoint (rows of ``decode_head.conv_seg.weight``)."""
    weight = state.get("decode_head.conv_seg.weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise UserError(f"{path}: no decode_head.conv_seg.weight: not an mmseg segmentation checkpoint")
    return int(weight.shape[0])


def load_pretrained_backbone(model: nn.Module, path: str | Path) -> KeyMapReport:
    """Initialise ``model.backbone`` from an ImageNet HRNet file (``hrnetv2_w18/w48-*.pth``) as mmcv's ``strict=False``.

    Tensors whose mapped name and shape match are copied (in M2MRF models that includes the BN
    layers that sit where vanilla BNs sit); classification-only layers are ``ignored``; everything
    else is reported. Raises :class:`UserError` when nothing at all matches (a wrong file).
    """
    state, _ = read_official_file(path)
    classification = [k for k in state if k.removeprefix("backbone.").startswith(_CLASSIFICATION_ONLY)]
    backbone_state = {
        k if k.startswith("backbone.") else f"backbone.{k}": v for k, v in state.items() if k not in classification
    }
    report = map_official_state_dict(backbone_state, model)
    report.ignored = classification
    report.missing = [k for k in report.missing if k.startswith("backbone.")]
    if not report.state_dict:
        raise UserError(f"{path}: no tensor fits the backbone of {_describe(model)}")
    model.load_state_dict(report.state_dict, strict=False)
    return report


def _describe(model: nn.Module) -> str:
    config = getattr(model, "build_config", {})
    return " ".join(f"{k}={v}" for k, v in config.items()) or type(model).__name__
