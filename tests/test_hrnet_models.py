"""HRNetV2 / M2MRF-HRNetV2 models: registry, the paper's parameter counts, structure, shapes, numerics."""

from __future__ import annotations

import pytest
import torch
from model_numerics import AUTOCAST_PROBABILITY_TOLERANCE, deterministic, place_model

from napari_m2mrf.errors import UserError
from napari_m2mrf.models import build_model, count_parameters, list_models
from napari_m2mrf.models.hrnet import HRNet, HRNET_CONFIGS
from napari_m2mrf.models.m2mrf import M2MRF

M2MRF_VARIANTS = ["A", "B", "C", "D"]


def _w48(variant: str | None) -> dict:
    return {"name": "hrnetv2_w48"} if variant is None else {"name": "m2mrf_hrnetv2_w48", "variant": variant}


@pytest.mark.parametrize(
    "variant, millions", [(None, 65.85), ("A", 69.93), ("B", 67.15), ("C", 70.30), ("D", 67.52)]
)
def test_parameter_counts_match_paper_table_2(variant: str | None, millions: float) -> None:
    assert round(count_parameters(**_w48(variant), num_classes=4) / 1e6, 2) == millions


def test_registry_names() -> None:
    names = list_models()
    for width in ("w18s", "w18", "w32", "w48"):
        assert f"hrnetv2_{width}" in names and f"m2mrf_hrnetv2_{width}" in names


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UserError) as error:
        build_model("hrnet_w99")
    assert "hrnet_w99" in str(error.value)
    assert all(name in str(error.value) for name in list_models())


@pytest.mark.parametrize(
    "name, cfg, message",
    [
        ("hrnetv2_w18s", {"variant": "A"}, "does not take variant"),
        ("m2mrf_hrnetv2_w18s", {"variant": "E"}, "unknown M2MRF variant"),
        ("m2mrf_hrnetv2_w18s", {"patchsize": 4}, "does not take patchsize"),
        ("hrnetv2_w18s", {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_options_are_user_errors(name: str, cfg: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_model(name, **cfg)


def _m2mrf_scales(path: torch.nn.Module) -> list[float]:
    return [m.scale for m in path.modules() if isinstance(m, M2MRF)]


@pytest.mark.parametrize(
    "variant, down, up", [("A", [0.125], [8.0]), ("B", [0.125], [2.0] * 3), ("C", [0.5] * 3, [8.0]), ("D", [0.5] * 3, [2.0] * 3)]
)
def test_variants_place_one_step_or_cascade_m2mrf(variant: str, down: list[float], up: list[float]) -> None:
    with torch.device("meta"):
        backbone = build_model("m2mrf_hrnetv2_w48", variant=variant).backbone
    fuse = backbone.stage4[0].fuse_layers
    assert _m2mrf_scales(fuse[3][0]) == down  # stride 4 -> stride 32
    assert _m2mrf_scales(fuse[0][3]) == up  # stride 32 -> stride 4 (after the 1x1 reduction)
    assert not any(isinstance(m, torch.nn.Upsample) for m in backbone.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in backbone.modules() if m is not backbone.conv1 and m is not backbone.conv2)
    for index in (1, 2, 3):  # the transitions that open a branch use M2MRF(1/2)
        assert _m2mrf_scales(getattr(backbone, f"transition{index}")[index]) == [0.5]


def test_vanilla_uses_strided_convs_and_bilinear() -> None:
    with torch.device("meta"):
        backbone = build_model("hrnetv2_w48").backbone
    assert not any(isinstance(m, M2MRF) for m in backbone.modules())
    fuse = backbone.stage4[0].fuse_layers
    assert [m.stride for m in fuse[3][0].modules() if isinstance(m, torch.nn.Conv2d)] == [(2, 2)] * 3
    assert isinstance(fuse[0][3][2], torch.nn.Upsample) and fuse[0][3][2].scale_factor == 8


def test_operators_are_chosen_by_name() -> None:
    with torch.device("meta"):
        mixed = HRNet(HRNET_CONFIGS["w18s"], downsample="conv", upsample="m2mrf_cascade")
    assert _m2mrf_scales(mixed.stage4[0].fuse_layers[0][3]) == [2.0, 2.0, 2.0]
    assert not _m2mrf_scales(mixed.stage4[0].fuse_layers[3][0])
    with pytest.raises(ValueError, match="valid: conv, m2mrf, m2mrf_cascade"):
        HRNet(HRNET_CONFIGS["w18s"], downsample="maxpool")


@pytest.mark.parametrize(
    "variant, branch_sizes",
    [
        (None, [(239, 360), (120, 180), (60, 90), (30, 45)]),  # stride-2 convs round up
        ("A", [(239, 360), (119, 180), (59, 90), (29, 45)]),  # M2MRF floors (official)
        ("D", [(239, 360), (119, 180), (59, 90), (29, 45)]),
    ],
)
def test_official_input_size_shapes(variant: str | None, branch_sizes: list) -> None:
    """IDRiD keep-ratio input 956×1440, traced on the meta device (shapes only, instant)."""
    with torch.device("meta"):
        model = build_model(**_w48(variant))
        x = torch.empty(1, 3, 956, 1440)
        features = model.backbone(x)
        logits = model(x)
    assert [tuple(f.shape[-2:]) for f in features] == branch_sizes
    assert [f.shape[1] for f in features] == [48, 96, 192, 384]
    assert logits.shape == (1, 4, 956, 1440)


@pytest.mark.parametrize("name, variant", [("hrnetv2_w18s", None)] + [("m2mrf_hrnetv2_w18s", v) for v in M2MRF_VARIANTS])
def test_forward_returns_logits_at_input_size(name: str, variant: str | None) -> None:
    model = build_model(name, num_classes=3, **({"variant": variant} if variant else {})).eval()
    with torch.inference_mode():
        logits = model(torch.randn(2, 3, 61, 83))
    assert logits.shape == (2, 3, 61, 83)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("variant", ["A", "D"])
def test_every_parameter_is_trained(variant: str) -> None:
    model = build_model("m2mrf_hrnetv2_w18s", variant=variant).train()
    logits = model(torch.randn(2, 3, 40, 48))
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad


def _calibrated(name: str, **cfg) -> torch.nn.Module:
    """A model whose BN statistics come from data, so eval-mode activations have realistic scales."""
    model = build_model(name, **cfg)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 48, 64))
    return model.eval()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_autocast_agrees_with_float32(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    dtypes = [torch.bfloat16] if device == "cpu" else [torch.bfloat16, torch.float16]
    with deterministic(0):
        model = _calibrated("m2mrf_hrnetv2_w18s", variant="A")
        x = torch.randn(1, 3, 48, 64)
    model = place_model(model, device)
    x = x.to(device, memory_format=torch.channels_last if device == "cuda" else torch.contiguous_format)
    with torch.inference_mode():
        reference = torch.sigmoid(model(x).float())
        for dtype in dtypes:
            if dtype == torch.bfloat16 and device == "cuda" and not torch.cuda.is_bf16_supported():
                continue
            with torch.autocast(device, dtype=dtype):
                approximate = torch.sigmoid(model(x).float())
            assert (approximate - reference).abs().max() < AUTOCAST_PROBABILITY_TOLERANCE[dtype]


def test_channels_last_model_matches_contiguous() -> None:
    with deterministic(1):
        model = _calibrated("m2mrf_hrnetv2_w18s", variant="B")
        x = torch.randn(1, 3, 48, 80)
    with torch.inference_mode():
        reference = model(x)
        fast = place_model(model, "cpu", channels_last=True)(x.contiguous(memory_format=torch.channels_last))
    assert (fast - reference).abs().max() < 1e-4 * reference.abs().max()


def test_deterministic_mode_repeats_exactly_and_restores_settings() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    runs = []
    for _ in range(2):
        with deterministic(7):
            assert torch.are_deterministic_algorithms_enabled()
            model = build_model("m2mrf_hrnetv2_w18s", variant="C").train()
            logits = model(torch.randn(2, 3, 32, 40))
            logits.square().mean().backward()
            runs.append((logits.detach(), model.backbone.stage4[0].fuse_layers[0][3][2].patch_expand.weight.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert torch.are_deterministic_algorithms_enabled() == before
