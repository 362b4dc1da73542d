"""Model names → builders: vanilla HRNetV2 and M2MRF-HRNetV2 (variants A-D) lesion segmenters.

``build_model(name, **cfg)`` returns a :class:`~napari_m2mrf.models.heads.Segmenter` whose
``forward`` maps an ``N×3×H×W`` normalised image to ``N×K×H×W`` logits. Keyword arguments:

* ``num_classes`` (default 4: EX, HE, SE, MA),
* M2MRF models only: ``variant`` (``"A"``-``"D"``, default ``"A"``), ``patch_size`` (8),
  ``compress_rate`` (4), ``alpha`` (64), ``groups`` (1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from napari_m2mrf.errors import UserError
from napari_m2mrf.models.heads import FCNHead, Segmenter
from napari_m2mrf.models.hrnet import HRNET_CONFIGS, HRNet, M2MRFConfig

# Paper §3.3: variant -> (downsampling, upsampling) operator of every fuse layer.
VARIANTS: dict[str, tuple[str, str]] = {
    "A": ("m2mrf", "m2mrf"),
    "B": ("m2mrf", "m2mrf_cascade"),
    "C": ("m2mrf_cascade", "m2mrf"),
    "D": ("m2mrf_cascade", "m2mrf_cascade"),
}
DEFAULT_NUM_CLASSES = 4
DEFAULT_VARIANT = "A"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: HRNet width key (``HRNET_CONFIGS``) and whether it uses M2MRF."""

    width: str
    m2mrf: bool

    @property
    def description(self) -> str:
        kind = "M2MRF-HRNetV2" if self.m2mrf else "HRNetV2"
        width = "W18-Small" if self.width == "w18s" else self.width.upper()
        return f"{kind}-{width} + FCN head"


_MODELS: dict[str, ModelEntry] = {
    **{f"hrnetv2_{w}": ModelEntry(w, m2mrf=False) for w in HRNET_CONFIGS},
    **{f"m2mrf_hrnetv2_{w}": ModelEntry(w, m2mrf=True) for w in HRNET_CONFIGS},
}


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; :class:`UserError` listing the valid names otherwise."""
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _MODELS[name]


def resolve_config(name: str, **cfg: Any) -> dict[str, Any]:
    """Every keyword of ``name`` with its default filled in, plus ``arch``; rejects unknown keywords."""
    entry = model_entry(name)
    resolved: dict[str, Any] = {"num_classes": DEFAULT_NUM_CLASSES}
    if entry.m2mrf:
        resolved["variant"] = DEFAULT_VARIANT
        resolved.update(asdict(M2MRFConfig()))
    unknown = sorted(set(cfg) - set(resolved))
    if unknown:
        raise UserError(f"model {name!r} does not take {', '.join(unknown)}; valid options: {', '.join(resolved)}")
    resolved.update(cfg)
    if entry.m2mrf:
        resolved["variant"] = str(resolved["variant"]).upper()
        if resolved["variant"] not in VARIANTS:
            raise UserError(f"unknown M2MRF variant {cfg['variant']!r}; valid: {', '.join(VARIANTS)}")
    if int(resolved["num_classes"]) < 1:
        raise UserError(f"num_classes must be at least 1, got {resolved['num_classes']}")
    return {"arch": name, **resolved}


def build_model(name: str, **cfg: Any) -> Segmenter:
    """Build the registered model ``name`` (see the module docstring for ``cfg``), randomly initialised."""
    config = resolve_config(name, **cfg)
    entry = _MODELS[name]
    hrnet_config = HRNET_CONFIGS[entry.width]
    if entry.m2mrf:
        downsample, upsample = VARIANTS[config["variant"]]
        m2mrf = M2MRFConfig(**{k: int(config[k]) for k in asdict(M2MRFConfig())})
        backbone = HRNet(hrnet_config, downsample, upsample, m2mrf)
    else:
        backbone = HRNet(hrnet_config)
    head = FCNHead(hrnet_config.out_channels, int(config["num_classes"]))
    return Segmenter(backbone, head, config)


def build_uninitialised(name: str, **cfg: Any) -> Segmenter:
    """:func:`build_model` on the CPU with uninitialised tensors, to be filled from a checkpoint.

    Skips the random initialisation (seconds for W48); every tensor must then be loaded strictly.
    """
    with torch.device("meta"):
        model = build_model(name, **cfg)
    return model.to_empty(device="cpu")


def count_parameters(name: str, **cfg: Any) -> int:
    """Trainable parameters of ``build_model(name, **cfg)`` (BN affine included, BN buffers not).

    Built on the ``meta`` device: no memory is allocated and nothing is initialised.
    """
    with torch.device("meta"):
        model = build_model(name, **cfg)
    return sum(p.numel() for p in model.parameters())
