"""Training configs: YAML/JSON round trip, strict parsing, overrides, the shipped example configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from napari_m2mrf.errors import UserError
from training.config import TrainingConfig, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def custom_config() -> TrainingConfig:
    """A config with a non-default value in every section (lists, dicts, floats, bools)."""
    config = TrainingConfig()
    config.data.kind = "pairs"
    config.data.pairs = [{"image": "a.png", "labels": "a.npy"}]
    config.data.classes = ["MA", "HE"]
    config.augment.crop = [64, 96]
    config.augment.scale_range = [0.75, 1.5]
    config.augment.photometric = False
    config.model.name = "m2mrf_hrnetv2_w18s"
    config.model.options = {"variant": "B", "patch_size": 4}
    config.deform.enabled = True
    config.deform.output_size = [32, 48]
    config.deform.sampler = "uniform"
    config.loss.name = "focal"
    config.loss.edge_weight = 100.0
    config.optim.name = "adam"
    config.optim.schedule = "step"
    config.optim.step_every = 500
    config.run.iterations = 123
    config.run.output_dir = "somewhere/else"
    return config


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_through_files(tmp_path: Path, suffix: str) -> None:
    config = custom_config()
    path = save_config(config, tmp_path / f"config{suffix}")
    loaded = load_config(path)
    assert loaded == config
    assert loaded != TrainingConfig()
    assert TrainingConfig.from_dict(config.to_dict()) == config


def test_missing_keys_take_defaults_and_ints_become_floats(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text("optim:\n  lr: 1\nrun:\n  iterations: 7\n")
    config = load_config(path)
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.run.iterations == 7
    assert config.data == TrainingConfig().data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("run:\n  iteratons: 5\n", "unknown key run.iteratons"),
        ("colour: red\n", "unknown key colour"),
        ("run:\n  iterations: many\n", "run.iterations must be int"),
        ("loss:\n  name: hinge\n", "loss.name must be one of"),
        ("augment:\n  scale_range: [2.0, 0.5]\n", "augment.scale_range"),
        ("run:\n  device: tpu\n", "run.device"),
        ("data:\n  kind: idrid\n", "data.root is needed"),
        ("augment:\n  crop: []\n", "augment.crop is needed"),
        ("augment:\n  crop: []\n  resize: []\nrun:\n  batch_size: 1\n", "augment.resize or augment.crop is needed"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("loss:\n  edge_weight: 100\n", "needs deform.enabled"),
        ("deform:\n  enabled: true\n", "cross_entropy or focal"),
        ("run: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_overrides_parse_yaml_values() -> None:
    config = TrainingConfig().with_overrides(["run.iterations=10", "augment.crop=[32, 48]", "model.options={}"])
    assert config.run.iterations == 10 and config.augment.crop == [32, 48] and config.model.options == {}
    with pytest.raises(UserError, match="SECTION.KEY=VALUE"):
        TrainingConfig().with_overrides(["run.nope=1"])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load_and_round_trip(path: Path) -> None:
    config = load_config(path)
    assert TrainingConfig.from_dict(config.to_dict()) == config


def test_example_configs_exist() -> None:
    assert {p.stem for p in CONFIGS.glob("*.yaml")} >= {"smoke_cpu", "m2mrf_idrid", "jin_deformed_slides"}


def test_importing_training_config_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, training, training.config, training.cli; print('torch' in sys.modules, 'napari' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
