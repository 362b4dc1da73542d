"""The Train widget's presets: trainer configs the trainer accepts, and a trainer command that a
``training`` folder in the current directory cannot shadow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from training.config import TrainingConfig, save_config
from training.presets import (
    OFFICIAL_INPUT_SIZE,
    folder_data,
    pairs_data,
    trainer_command,
    training_config,
)

BUNDLED_FUNDUS = Path(__file__).resolve().parents[1] / "sample_data" / "checkpoints" / "fundus_m2mrf_w18s.safetensors"
CHOICES = dict(model="m2mrf_hrnetv2_w18s", variant="B", init_checkpoint="", iterations=100, batch_size=2, lr=1e-3,
               crop=256, device="cpu")


def test_a_from_scratch_preset_is_a_valid_config_at_the_official_size(tmp_path: Path) -> None:
    values = training_config(folder_data("idrid", tmp_path), output_dir=tmp_path / "run", **CHOICES)
    config = TrainingConfig.from_dict(values, "preset")
    assert config.model.name == "m2mrf_hrnetv2_w18s" and config.model.options == {"variant": "B"}
    assert list(config.augment.resize) == list(OFFICIAL_INPUT_SIZE) and list(config.augment.crop) == [256, 256]
    assert config.run.eval_every == 25 and config.run.checkpoint_every == 25 and config.optim.min_lr == 1e-5
    assert config.data.kind == "idrid" and config.data.train_split == "train" and config.data.val_split == "test"
    assert save_config(config, tmp_path / "config.yaml").is_file()


def test_a_plain_hrnet_takes_no_variant_and_a_short_run_still_evaluates(tmp_path: Path) -> None:
    values = training_config(pairs_data([]), output_dir=tmp_path, **{**CHOICES, "model": "hrnetv2_w18s",
                                                                       "iterations": 3})
    assert values["model"]["options"] == {}
    assert values["run"]["eval_every"] == 1 and values["run"]["checkpoint_every"] == 1


def test_fine_tuning_takes_the_checkpoints_architecture_and_input_size(tmp_path: Path) -> None:
    from napari_m2mrf.models import read_checkpoint_metadata

    meta = read_checkpoint_metadata(BUNDLED_FUNDUS)
    values = training_config(pairs_data([{"image": "a.png", "labels": "a.npy"}]), output_dir=tmp_path,
                             **{**CHOICES, "model": "hrnetv2_w48", "init_checkpoint": str(BUNDLED_FUNDUS)})
    assert values["model"]["name"] == meta["arch"] and values["augment"]["resize"] == list(meta["input_size"])
    assert "num_classes" not in values["model"]["options"]
    TrainingConfig.from_dict(values, "preset")


def test_data_sections() -> None:
    assert folder_data("folder", "/data") == {"kind": "folder", "root": "/data", "train_split": "", "val_split": ""}
    pairs = [{"image": "a.png", "labels": "a.npy"}]
    assert pairs_data(pairs) == {"kind": "pairs", "pairs": pairs, "val_pairs": pairs}


def test_a_training_folder_in_the_current_directory_cannot_shadow_the_trainer(tmp_path: Path) -> None:
    fake = tmp_path / "training"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('the shadowing training package was imported')\n")
    (fake / "__main__.py").write_text("raise RuntimeError('the shadowing training package was run')\n")
    command = trainer_command(tmp_path / "config.yaml")
    assert command[0] == sys.executable and command[-1] == str(tmp_path / "config.yaml")
    # the same start without -P runs the folder's package: the test would catch a regression
    plain = [arg for arg in command[:-1] if arg != "-P"] + ["--help"]
    shadowed = subprocess.run(plain, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shadowed.returncode != 0 and "shadowing training package" in shadowed.stderr
    result = subprocess.run(command[:-1] + ["--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SECTION.KEY=VALUE" in result.stdout  # the real trainer's argument parser answered
    probe = [command[0], "-P", "-c", "import training; print(training.__file__)"]
    where = subprocess.run(probe, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert Path(where.stdout.strip()) == Path(__file__).resolve().parents[1] / "training" / "__init__.py"


def test_presets_import_neither_torch_nor_qt() -> None:
    code = ("import sys, training.presets, training.events; "
            "print(any(m in sys.modules for m in ('torch', 'napari', 'qtpy', 'PyQt6')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
