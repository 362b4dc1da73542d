"""Checkpoints: our safetensors format, and official mmseg checkpoints through the key map.

Fake official files are built from names and shapes written here from the documented patterns
(``official_segmentor_keys``), cross-checked against the two key lists of the real files
(``../shared/reference/m2mrf_official_keys_{vanilla,A}.json``) and the documented entry counts of
B, C and D. That generator is independent of napari_m2mrf's own model code on purpose.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from napari_m2mrf.cli import main
from napari_m2mrf.errors import UserError
from napari_m2mrf.models import build_model, fundus_metadata, load_checkpoint, read_checkpoint_metadata, save_checkpoint
from napari_m2mrf.models.official import (
    load_official_weights,
    load_pretrained_backbone,
    map_official_state_dict,
    official_to_ours,
)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"

# ---------------------------------------------------------------------------------------------
# Official key names and shapes

Shapes = dict[str, tuple[int, ...]]

# variant -> (down path kind, up path kind)
OFFICIAL_VARIANTS = {
    "vanilla": ("conv", "bilinear"),
    "A": ("one-step", "one-step"),
    "B": ("one-step", "cascade"),
    "C": ("cascade", "one-step"),
    "D": ("cascade", "cascade"),
}
W48 = dict(widths=(48, 96, 192, 384), stage1_blocks=4, modules=(1, 4, 3), blocks=4)
W18 = dict(widths=(18, 36, 72, 144), stage1_blocks=4, modules=(1, 4, 3), blocks=4)
W18_SMALL = dict(widths=(18, 36, 72, 144), stage1_blocks=2, modules=(1, 3, 2), blocks=2)


def _bn(prefix: str, channels: int) -> Shapes:
    shapes: Shapes = {f"{prefix}.{n}": (channels,) for n in ("weight", "bias", "running_mean", "running_var")}
    shapes[f"{prefix}.num_batches_tracked"] = ()
    return shapes


def _m2mrf(prefix: str, c_in: int, c_out: int, scale: float) -> Shapes:
    encoded = int(c_in / 4)
    fc = int(8 * 8 * encoded / 64)
    expanded = int(64 * scale * scale * encoded)
    return {
        f"{prefix}.sample_encode_conv.weight": (encoded, c_in, 1, 1),
        f"{prefix}.sample_encode_conv.bias": (encoded,),
        f"{prefix}.sample.sample_fc.weight": (fc, 64 * encoded, 1),
        f"{prefix}.sample.sample_fc.bias": (fc,),
        f"{prefix}.sample.sample_fc1.weight": (expanded, fc, 1),
        f"{prefix}.sample.sample_fc1.bias": (expanded,),
        f"{prefix}.sample_decode_conv.weight": (c_out, encoded, 1, 1),
        f"{prefix}.sample_decode_conv.bias": (c_out,),
    }


def _down(prefix: str, c_in: int, c_out: int, steps: int, kind: str) -> Shapes:
    shapes: Shapes = {}
    if kind == "one-step":
        shapes |= _m2mrf(f"{prefix}.0.0", c_in, c_out, 0.5**steps)
        return shapes | _bn(f"{prefix}.0.1", c_out)
    for k in range(steps):
        width = c_out if k == steps - 1 else c_in
        if kind == "conv":
            shapes[f"{prefix}.{k}.0.weight"] = (width, c_in, 3, 3)
        else:
            shapes |= _m2mrf(f"{prefix}.{k}.0", c_in, width, 0.5)
        shapes |= _bn(f"{prefix}.{k}.1", width)
    return shapes


def _up(prefix: str, c_in: int, c_out: int, steps: int, kind: str) -> Shapes:
    shapes: Shapes = {f"{prefix}.0.weight": (c_out, c_in, 1, 1)} | _bn(f"{prefix}.1", c_out)
    if kind == "one-step":
        shapes |= _m2mrf(f"{prefix}.2", c_out, c_out, 2.0**steps)
    elif kind == "cascade":
        for k in range(steps):
            shapes |= _m2mrf(f"{prefix}.sample_{k}", c_out, c_out, 2.0)
    return shapes


def official_backbone_keys(variant: str, widths, stage1_blocks, modules, blocks) -> Shapes:
    """Backbone entries (without the ``backbone.`` prefix) of an official HRNet / HRNet_M2MRF_<variant>."""
    down, up = OFFICIAL_VARIANTS[variant]
    shapes: Shapes = {"conv1.weight": (64, 3, 3, 3)} | _bn("bn1", 64)
    shapes |= {"conv2.weight": (64, 64, 3, 3)} | _bn("bn2", 64)
    for b in range(stage1_blocks):
        p = f"layer1.{b}"
        shapes |= {f"{p}.conv1.weight": (64, 64 if b == 0 else 256, 1, 1)} | _bn(f"{p}.bn1", 64)
        shapes |= {f"{p}.conv2.weight": (64, 64, 3, 3)} | _bn(f"{p}.bn2", 64)
        shapes |= {f"{p}.conv3.weight": (256, 64, 1, 1)} | _bn(f"{p}.bn3", 256)
        if b == 0:
            shapes |= {f"{p}.downsample.0.weight": (256, 64, 1, 1)} | _bn(f"{p}.downsample.1", 256)
    previous = (256,)
    for stage in range(3):
        channels = widths[: stage + 2]
        t = f"transition{stage + 1}"
        for i, width in enumerate(channels):
            if i >= len(previous):
                if down == "conv":
                    shapes[f"{t}.{i}.0.0.weight"] = (width, previous[-1], 3, 3)
                else:
                    shapes |= _m2mrf(f"{t}.{i}.0.0", previous[-1], width, 0.5)
                shapes |= _bn(f"{t}.{i}.0.1", width)
            elif previous[i] != width:
                shapes |= {f"{t}.{i}.0.weight": (width, previous[i], 3, 3)} | _bn(f"{t}.{i}.1", width)
        for m in range(modules[stage]):
            p = f"stage{stage + 2}.{m}"
            for b, width in enumerate(channels):
                for k in range(blocks):
                    q = f"{p}.branches.{b}.{k}"
                    shapes |= {f"{q}.conv1.weight": (width, width, 3, 3)} | _bn(f"{q}.bn1", width)
                    shapes |= {f"{q}.conv2.weight": (width, width, 3, 3)} | _bn(f"{q}.bn2", width)
            for i, target in enumerate(channels):
                for j, source in enumerate(channels):
                    if j > i:
                        shapes |= _up(f"{p}.fuse_layers.{i}.{j}", source, target, j - i, up)
                    elif j < i:
                        shapes |= _down(f"{p}.fuse_layers.{i}.{j}", source, target, i - j, down)
        previous = channels
    return shapes


def official_segmentor_keys(variant: str, num_classes: int = 4, **config) -> Shapes:
    """Every state-dict entry of an official FCN + (M2MRF-)HRNetV2 segmentor (W48 by default)."""
    config = config or W48
    width = sum(config["widths"])
    shapes = {f"backbone.{k}": v for k, v in official_backbone_keys(variant, **config).items()}
    shapes["decode_head.convs.0.conv.weight"] = (width, width, 1, 1)
    shapes |= _bn("decode_head.convs.0.bn", width)
    shapes["decode_head.conv_seg.weight"] = (num_classes, width, 1, 1)
    shapes["decode_head.conv_seg.bias"] = (num_classes,)
    return shapes


def unique_tensors(shapes: Shapes) -> dict[str, torch.Tensor]:
    """Entry ``i`` holds the value ``i`` everywhere (a stride-0 view: tiny on disk); a mis-mapped key shows."""
    tensors = {}
    for index, (key, shape) in enumerate(shapes.items()):
        if key.endswith("num_batches_tracked"):
            tensors[key] = torch.tensor(index, dtype=torch.long)
        else:
            tensors[key] = torch.tensor([float(index)]).expand(shape) if shape else torch.tensor(float(index))
    return tensors


def write_official(path: Path, state: dict[str, torch.Tensor], config_text: str = "dataset_type = 'IDRiDDataset'") -> Path:
    """An mmcv-style checkpoint: meta (plain data only), state_dict, optimizer."""
    meta = {
        "mmseg_version": "0.8.0",
        "config": config_text,
        "CLASSES": ("bg", "EX", "HE", "SE", "MA"),
        "PALETTE": [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]],
        "iter": 40000,
        "time": "Mon Jan  3 10:00:00 2022",
    }
    optimizer = {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "momentum": 0.9, "params": [0]}]}
    torch.save({"meta": meta, "state_dict": state, "optimizer": optimizer}, path)
    return path


def assert_filled_from(model: torch.nn.Module, official: dict[str, torch.Tensor]) -> None:
    """Each official tensor's value sits in the model tensor the key map names (first and last element)."""
    ours = model.state_dict()
    for key, tensor in official.items():
        value = tensor.reshape(-1)[0].item()
        filled = ours[official_to_ours(key)].reshape(-1)
        assert filled[0].item() == value and filled[-1].item() == value, key


# ---------------------------------------------------------------------------------------------
# The generator against the real key lists


@pytest.mark.parametrize("variant", ["vanilla", "A"])
def test_generated_keys_equal_the_real_official_lists(variant: str) -> None:
    listing = REFERENCE / f"m2mrf_official_keys_{variant}.json"
    if not listing.is_file():
        pytest.skip(f"{listing} is absent")
    real = {k: tuple(v) for k, v in json.loads(listing.read_text()).items()}
    assert official_segmentor_keys(variant) == real


@pytest.mark.parametrize("variant, entries", [("vanilla", 1838), ("A", 2228), ("B", 2356), ("C", 2436), ("D", 2564)])
def test_generated_key_counts_match_the_documented_sizes(variant: str, entries: int) -> None:
    assert len(official_segmentor_keys(variant)) == entries


# ---------------------------------------------------------------------------------------------
# Official checkpoints → our models


def _w48(variant: str, **kw) -> torch.nn.Module:
    if variant == "vanilla":
        return build_model("hrnetv2_w48", **kw)
    return build_model("m2mrf_hrnetv2_w48", variant=variant, **kw)


@pytest.mark.parametrize("variant", ["vanilla", "A", "B", "C", "D"])
def test_every_official_key_maps_onto_the_w48_model(variant: str) -> None:
    with torch.device("meta"):
        model = _w48(variant)
        official = {k: torch.empty(s) for k, s in official_segmentor_keys(variant).items()}
    report = map_official_state_dict(official, model)
    assert report.ok, report.describe_problems()
    assert len(report.state_dict) == len(official) == len(model.state_dict())


@pytest.mark.parametrize("variant", ["vanilla", "A", "B", "C", "D"])
def test_official_file_fills_every_tensor(variant: str, tmp_path: Path) -> None:
    official = unique_tensors(official_segmentor_keys(variant))
    path = write_official(tmp_path / f"{variant}.pth", official)
    from napari_m2mrf.models.registry import build_uninitialised

    arch = "hrnetv2_w48" if variant == "vanilla" else "m2mrf_hrnetv2_w48"
    model = build_uninitialised(arch, **({} if variant == "vanilla" else {"variant": variant}))
    assert load_official_weights(model, path) == len(official)
    assert_filled_from(model, official)


def test_wrong_variant_lists_missing_unexpected_and_misshaped_keys(tmp_path: Path) -> None:
    shapes = official_segmentor_keys("A")
    del shapes["backbone.stage2.0.fuse_layers.0.1.2.sample_encode_conv.bias"]
    shapes["backbone.stage2.0.fuse_layers.0.1.extra.weight"] = (3,)
    shapes["decode_head.conv_seg.weight"] = (4, 721, 1, 1)
    path = write_official(tmp_path / "broken.pth", unique_tensors(shapes))
    with torch.device("meta"):
        model = _w48("A")
    with pytest.raises(UserError) as error:
        load_official_weights(model, path)
    message = str(error.value)
    assert "\n" not in message
    assert "1 missing (backbone.stage2.0.fuse_layers.0.1.2.compressor.bias)" in message
    assert "1 unexpected (backbone.stage2.0.fuse_layers.0.1.extra.weight)" in message
    assert "decode_head.conv_seg.weight: (4, 721, 1, 1) vs (4, 720, 1, 1)" in message


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"x": [0.0]}, "meta": Payload()}, handle, protocol=2)
    with torch.device("meta"):
        model = _w48("vanilla")
    with pytest.raises(UserError, match=r"refused to load: the file holds a Python object \(\S*open\)"):
        load_official_weights(model, path)
    assert not marker.exists()


@pytest.mark.parametrize("config", [W18, W18_SMALL], ids=["w18", "w18s"])
def test_imagenet_backbone_initialises_vanilla_and_m2mrf_models(config: dict, tmp_path: Path) -> None:
    """HRNet-Image-Classification files: bare backbone keys plus classification layers (ignored)."""
    shapes = official_backbone_keys("vanilla", **config)
    extras = {"incre_modules.0.0.conv1.weight": (32, 18, 1, 1), "final_layer.0.weight": (2048, 1024, 1, 1), "classifier.weight": (1000, 2048), "classifier.bias": (1000,)}
    state = unique_tensors(shapes | extras)
    path = tmp_path / "hrnetv2_imagenet.pth"
    torch.save(state, path)
    width = "w18" if config is W18 else "w18s"

    vanilla = build_model(f"hrnetv2_{width}")
    head_before = vanilla.head.classifier.weight.clone()
    report = load_pretrained_backbone(vanilla, path)
    assert report.ok, report.describe_problems()
    assert sorted(report.ignored) == sorted(extras)
    assert_filled_from(vanilla, {f"backbone.{k}": state[k] for k in shapes})
    assert torch.equal(vanilla.head.classifier.weight, head_before)

    m2mrf = build_model(f"m2mrf_hrnetv2_{width}", variant="A")
    report = load_pretrained_backbone(m2mrf, path)
    # A BN where vanilla has one, with the same width, is initialised as mmcv's strict=False does ...
    same_place_bn = "backbone.stage2.0.fuse_layers.1.0.0.1.weight"
    assert torch.all(m2mrf.state_dict()[same_place_bn] == state["stage2.0.fuse_layers.1.0.0.1.weight"][0])
    # ... a narrower vanilla BN at the same place is reported, and the M2MRF weights stay to be trained.
    narrow = config["widths"][0]
    assert f"backbone.stage3.0.fuse_layers.2.0.0.1.weight: ({narrow},) vs ({4 * narrow},)" in report.mismatched
    assert "backbone.stage2.0.fuse_layers.1.0.0.0.compressor.weight" in report.missing
    assert "backbone.stage2.0.fuse_layers.1.0.0.0.weight" in report.unexpected
    assert_filled_from(m2mrf, {f"backbone.{k}": state[k] for k in shapes if k.startswith(("conv1", "layer1", "stage4.2.branches"))})


# ---------------------------------------------------------------------------------------------
# Our format


def test_save_load_roundtrip_rebuilds_the_model_from_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("m2mrf_hrnetv2_w18s", variant="C", num_classes=4, alpha=32).eval()
    meta = fundus_metadata("ddr", {"run": "test", "iterations": 3})
    path = tmp_path / "model.safetensors"
    written = save_checkpoint(path, model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == written
    assert loaded_meta["arch"] == "m2mrf_hrnetv2_w18s"
    assert loaded_meta["model"] == {"num_classes": 4, "variant": "C", "patch_size": 8, "compress_rate": 4, "alpha": 32, "groups": 1}
    assert loaded_meta["normalization"]["mean"] == [81.205, 50.636, 21.216]
    assert loaded_meta["input_size"] == [1024, 1024]
    assert [c["code"] for c in loaded_meta["classes"]] == ["EX", "HE", "SE", "MA"]
    assert loaded_meta["classes"][0]["color"] == [1.0, 0.0, 0.0, 1.0]
    assert loaded_meta["provenance"]["run"] == "test"
    assert len(loaded_meta["weights_sha256"]) == 64
    assert read_checkpoint_metadata(path) == written
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(("dtype", "size_ratio", "max_probability_error"), [(torch.float16, 0.55, 0.005), (torch.int8, 0.3, 0.05)])
def test_compact_storage_shrinks_the_file_and_loads_as_float32(
    dtype: torch.dtype, size_ratio: float, max_probability_error: float, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model("m2mrf_hrnetv2_w18s", variant="A").eval()
    full, compact = tmp_path / "full.safetensors", tmp_path / "compact.safetensors"
    save_checkpoint(full, model, fundus_metadata())
    save_checkpoint(compact, model, fundus_metadata(), dtype=dtype)
    assert compact.stat().st_size < size_ratio * full.stat().st_size
    loaded, loaded_meta = load_checkpoint(compact)
    assert loaded_meta["weights_dtype"] == str(dtype).removeprefix("torch.")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        error = (torch.sigmoid(model(x)) - torch.sigmoid(loaded(x))).abs().max()
    assert error < max_probability_error  # random weights; the bundled model's scores: BENCHMARKS.md


def test_int8_weights_are_within_half_a_quantisation_step_per_output_channel(tmp_path: Path) -> None:
    model = build_model("hrnetv2_w18s").eval()
    path = tmp_path / "int8.safetensors"
    save_checkpoint(path, model, fundus_metadata(), dtype=torch.int8)
    loaded, _ = load_checkpoint(path)
    quantised = 0
    for (name, original), restored in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        if original.is_floating_point() and original.dim() >= 2 and original.numel() >= 1024:
            step = original.abs().reshape(original.shape[0], -1).amax(dim=1) / 127
            error = (original - restored).abs().reshape(original.shape[0], -1).amax(dim=1)
            assert torch.all(error <= step / 2 + 1e-7), name
            quantised += 1
    assert quantised > 100


def test_edited_weights_fail_the_sha256_check(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, build_model("hrnetv2_w18s"), fundus_metadata())
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        load_checkpoint(path)


def test_bad_files_give_one_line_user_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    not_safetensors = tmp_path / "image.safetensors"
    not_safetensors.write_bytes(b"\x89PNG not a checkpoint")
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(2)}, bare)
    for path, expected in [
        (tmp_path / "absent.safetensors", "no such file"),
        (not_safetensors, "not a safetensors checkpoint"),
        (bare, "without napari-m2mrf metadata"),
    ]:
        with pytest.raises(UserError, match=expected) as error:
            load_checkpoint(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_saving_checks_the_metadata(tmp_path: Path) -> None:
    model = build_model("hrnetv2_w18s", num_classes=2)
    with pytest.raises(UserError, match="lacks provenance"):
        save_checkpoint(tmp_path / "m.safetensors", model, {k: v for k, v in fundus_metadata().items() if k != "provenance"})
    with pytest.raises(UserError, match="4 classes, the model has 2"):
        save_checkpoint(tmp_path / "m.safetensors", model, fundus_metadata())
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# The command line


def test_convert_checkpoint_finds_the_variant_and_reports_the_keys(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    official = unique_tensors(official_segmentor_keys("C", **W18_SMALL))
    source = write_official(tmp_path / "fcn_hr18s-M2MRF-C_60k_ddr.pth", official, config_text="data_root = 'data/DDR'")
    assert main(["convert-checkpoint", str(source), str(tmp_path / "converted"), "--arch", "m2mrf_hrnetv2_w18s"]) == 0
    out = capsys.readouterr().out
    assert f"mapped {len(official)} keys" in out and "variant C" in out and "ddr" in out
    model, meta = load_checkpoint(tmp_path / "converted.safetensors")
    assert meta["model"]["variant"] == "C"
    assert meta["normalization"]["mean"] == [81.205, 50.636, 21.216]
    assert meta["provenance"]["file"] == source.name
    assert_filled_from(model, official)


def test_convert_checkpoint_exits_2_listing_the_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shapes = official_segmentor_keys("B", **W18_SMALL)
    shapes.pop("backbone.conv1.weight")
    source = write_official(tmp_path / "b.pth", unique_tensors(shapes))
    code = main(["convert-checkpoint", str(source), str(tmp_path / "out"), "--arch", "m2mrf_hrnetv2_w18s", "--variant", "B"])
    assert code == 2
    assert "1 missing (backbone.conv1.weight)" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_models_command_prints_the_paper_parameter_counts(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "w48", "--params"]) == 0
    lines = capsys.readouterr().out.splitlines()
    w48 = {tuple(line.split()[:2]): line.split()[-1] for line in lines[1:]}
    assert w48 == {
        ("hrnetv2_w48", "-"): "65.85M",
        ("m2mrf_hrnetv2_w48", "A"): "69.93M",
        ("m2mrf_hrnetv2_w48", "B"): "67.15M",
        ("m2mrf_hrnetv2_w48", "C"): "70.30M",
        ("m2mrf_hrnetv2_w48", "D"): "67.52M",
    }
