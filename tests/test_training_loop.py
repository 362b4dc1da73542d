"""The training loop on generated fundus images: loss goes down, checkpoints, exact resume after a
cooperative stop and after a real SIGKILL, fine-tuning, napari-style image/label pairs, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from training.config import TrainingConfig, save_config
from training.events import CheckpointSaved, Evaluated, Finished, IterationDone, Started, event_record
from training.loop import Trainer
from training.networks import build_network
from training.sources import run_classes
from training.sources import generated_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three training and one validation image of the semi-synthetic fundus series, written once."""
    root = tmp_path_factory.mktemp("generated")
    config = tiny_config(root, root / "unused")
    generated_dataset(config.data, validation=False)
    generated_dataset(config.data, validation=True)
    return root


def tiny_config(data_root: Path, output_dir: Path, **sections: dict) -> TrainingConfig:
    """hrnetv2_w18s on 48×48 fits of generated images, 32×32 crops, every augmentation on."""
    values = {
        "data": {"kind": "generated", "root": str(data_root), "generated_train": 3, "generated_val": 1},
        "augment": {"resize": [48, 48], "crop": [32, 32], "scale_range": [0.75, 1.5]},
        "model": {"name": "hrnetv2_w18s", "options": {}},
        "run": {
            "iterations": 6,
            "batch_size": 2,
            "device": "cpu",
            "threads": 1,
            "checkpoint_every": 0,
            "output_dir": str(output_dir),
        },
    }
    for name, overrides in sections.items():
        values[name] = {**values.get(name, {}), **overrides}
    return TrainingConfig.from_dict(values)


def losses_of(events: list) -> list[float]:
    return [e.losses["loss"] for e in events if isinstance(e, IterationDone)]


def test_short_run_decreases_the_loss_and_writes_checkpoints(generated_root: Path, tmp_path: Path) -> None:
    from napari_m2mrf.models import load_checkpoint

    config = tiny_config(
        generated_root,
        tmp_path / "run",
        augment={"crop": [48, 48], "scale_range": [1.0, 1.0], "rotate90": False, "hflip": 0.0, "vflip": 0.0,
                 "photometric": False},
        optim={"name": "adam", "lr": 3e-3, "weight_decay": 0.0, "schedule": "constant"},
        run={"iterations": 10, "batch_size": 3, "eval_every": 5},
    )
    events = list(Trainer(config).run())
    losses = losses_of(events)
    assert len(losses) == 10
    assert losses[-1] < losses[0] - 0.01, losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3])

    assert isinstance(events[0], Started) and isinstance(events[-1], Finished) and not events[-1].stopped
    evaluations = [e for e in events if isinstance(e, Evaluated)]
    assert [e.iteration for e in evaluations] == [5, 10]
    assert 0.0 <= evaluations[-1].mean["aupr_official_11pt"] <= 1.0
    assert set(evaluations[-1].per_class) == {"EX", "HE", "SE", "MA"}
    kinds = {(e.kind, e.iteration) for e in events if isinstance(e, CheckpointSaved)}
    assert ("last", 10) in kinds and {k for k in kinds if k[0] == "best"} <= {("best", 5), ("best", 10)}
    assert any(kind == "best" for kind, _ in kinds)

    run_dir = tmp_path / "run"
    logged = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert logged == [json.loads(json.dumps(event_record(e))) for e in events]
    model, meta = load_checkpoint(run_dir / "best.safetensors")
    assert meta["arch"] == "hrnetv2_w18s" and [c["code"] for c in meta["classes"]] == ["EX", "HE", "SE", "MA"]
    assert meta["provenance"]["config"] == config.to_dict()
    assert not list(run_dir.glob(".*tmp*")), "temporary files left behind"


@pytest.fixture(scope="module")
def uninterrupted(generated_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[float], dict]:
    """Losses and final weights of a 6-iteration run with SGD momentum, poly lr, all augmentations."""
    output = tmp_path_factory.mktemp("uninterrupted")
    events = list(Trainer(tiny_config(generated_root, output)).run())
    state = torch.load(output / "last.pt", weights_only=True)
    return losses_of(events), state["model"]


def test_stop_and_resume_equals_an_uninterrupted_run_bit_for_bit(
    generated_root: Path, tmp_path: Path, uninterrupted: tuple[list[float], dict]
) -> None:
    reference_losses, reference_weights = uninterrupted
    config = tiny_config(generated_root, tmp_path / "run")
    steps = []

    def stop_after_three() -> bool:
        return len(steps) >= 3

    first = []
    for event in Trainer(config, should_stop=stop_after_three).run():
        first.append(event)
        if isinstance(event, IterationDone):
            steps.append(event)
    assert isinstance(first[-1], Finished) and first[-1].stopped and first[-1].iteration == 3
    assert losses_of(first) == reference_losses[:3]

    second = list(Trainer(config, resume=tmp_path / "run" / "last.pt").run())
    assert second[0].iteration == 3 and second[0].resumed_from.endswith("last.pt")
    assert [e.iteration for e in second if isinstance(e, IterationDone)] == [4, 5, 6]
    assert losses_of(second) == reference_losses[3:]
    final = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(final[name], reference_weights[name]) for name in reference_weights)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    generated_root: Path, tmp_path: Path, uninterrupted: tuple[list[float], dict]
) -> None:
    reference_losses, _ = uninterrupted
    config = tiny_config(generated_root, tmp_path / "run", run={"checkpoint_every": 1})
    path = save_config(config, tmp_path / "config.yaml")
    command = [sys.executable, "-m", "training", str(path)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            record = json.loads(line)
            if record["event"] == "checkpoint" and record["iteration"] >= 2:
                os.kill(process.pid, signal.SIGKILL)
                break
    finally:
        process.stdout.close()
        process.wait(timeout=120)
    assert process.returncode == -signal.SIGKILL
    killed_at = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"]
    assert 2 <= killed_at < 6

    resumed = subprocess.run(command + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert records[0]["event"] == "started" and records[0]["iteration"] == killed_at
    losses = [r["losses"]["loss"] for r in records if r["event"] == "iteration"]
    assert losses == reference_losses[killed_at:]


def test_fine_tuning_starts_from_the_checkpoint_weights(generated_root: Path, tmp_path: Path) -> None:
    from napari_m2mrf.models import build_model, save_checkpoint
    from napari_m2mrf.models.checkpoints import fundus_metadata

    trained = build_model("hrnetv2_w18s", num_classes=4)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.5)
    save_checkpoint(tmp_path / "start.safetensors", trained, fundus_metadata())
    config = tiny_config(generated_root, tmp_path / "run", model={"init_checkpoint": str(tmp_path / "start.safetensors")})
    model = build_network(config, run_classes(config.data), multilabel=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))

    wrong = tiny_config(generated_root, tmp_path / "run", data={"classes": ["MA"]},
                        model={"init_checkpoint": str(tmp_path / "start.safetensors")})
    with pytest.raises(UserError, match="does not fit"):
        build_network(wrong, run_classes(wrong.data), multilabel=True)


def write_pairs(folder: Path, count: int) -> list[dict[str, str]]:
    """Image/label-layer exports: PNG photographs with .npy, .tif and .png label images."""
    import tifffile
    from PIL import Image

    from sample_data.fundus_samples import generate_fundus_sample

    pairs = []
    for index in range(count):
        sample = generate_fundus_sample(index, seed=5, scale=0.5)
        image = Image.fromarray(sample.image).resize((64, 64), Image.Resampling.BILINEAR)
        labels = np.asarray(Image.fromarray(sample.labels).resize((64, 64), Image.Resampling.NEAREST))
        image_path = folder / f"image{index}.png"
        image.save(image_path)
        suffix = (".npy", ".tif", ".png")[index % 3]
        label_path = folder / f"labels{index}{suffix}"
        if suffix == ".npy":
            np.save(label_path, labels)
        elif suffix == ".tif":
            tifffile.imwrite(label_path, labels)
        else:
            Image.fromarray(labels).save(label_path)
        pairs.append({"image": str(image_path), "labels": str(label_path)})
    return pairs


@pytest.mark.parametrize("loss", ["dice", "focal"])
def test_training_on_exported_layer_pairs(tmp_path: Path, loss: str) -> None:
    from training.datasets import SampleRecord, load_sample, read_label_image

    pairs = write_pairs(tmp_path, 3)
    values = {
        "data": {"kind": "pairs", "pairs": pairs[:2], "val_pairs": pairs[2:]},
        "augment": {"resize": [64, 64], "crop": [32, 32]},
        "model": {"name": "hrnetv2_w18s", "options": {}},
        "loss": {"name": loss},
        "run": {"iterations": 2, "batch_size": 2, "device": "cpu", "threads": 1, "output_dir": str(tmp_path / "run")},
    }
    events = list(Trainer(TrainingConfig.from_dict(values)).run())
    assert isinstance(events[-1], Finished) and len(losses_of(events)) == 2
    assert any(isinstance(e, Evaluated) for e in events)

    classes = FUNDUS_CLASSES
    record = SampleRecord(image=Path(pairs[1]["image"]), labels=Path(pairs[1]["labels"]))
    labels = read_label_image(record.labels)
    multilabel = load_sample(record, classes, multilabel=True)
    assert multilabel.target.shape == (4, 64, 64)
    for k, cls in enumerate(classes):
        assert np.array_equal(multilabel.target[k], labels == cls.label)
    multiclass = load_sample(record, classes, multilabel=False)
    assert np.array_equal(multiclass.target[0], labels)


def test_bad_label_file_is_a_user_error(tmp_path: Path) -> None:
    from training.datasets import SampleRecord, load_sample

    pairs = write_pairs(tmp_path, 1)
    np.save(tmp_path / "wrong.npy", np.zeros((10, 10), np.uint8))
    record = SampleRecord(image=Path(pairs[0]["image"]), labels=tmp_path / "wrong.npy")
    with pytest.raises(UserError, match="wrong.npy.*10×10"):
        load_sample(record, FUNDUS_CLASSES[:1], multilabel=True)


def test_cli_entry_points(generated_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from napari_m2mrf.cli import main

    config = tiny_config(generated_root, tmp_path / "run", run={"iterations": 5})
    path = save_config(config, tmp_path / "config.yaml")
    assert main(["train", str(path), "--set", "run.iterations=1", "--output-dir", str(tmp_path / "other")]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in records][-1] == "finished" and records[-1]["iteration"] == 1
    assert (tmp_path / "other" / "last.pt").is_file() and not (tmp_path / "run").exists()

    assert main(["train", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: no such config file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  batch_size: 0\n")
    result = subprocess.run([sys.executable, "-m", "training", str(bad)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "run.batch_size" in result.stderr


def test_stop_file_ends_the_cli_run_with_a_resumable_checkpoint(generated_root: Path, tmp_path: Path) -> None:
    import threading
    import time

    from training.cli import STOP_FILE, main as train_main

    output = tmp_path / "run"
    config = tiny_config(generated_root, output, run={"iterations": 1000})
    path = save_config(config, tmp_path / "config.yaml")
    (output).mkdir()
    (output / STOP_FILE).write_text("left from an earlier run")  # removed at start, not obeyed

    def press_stop() -> None:
        events = output / "events.jsonl"
        for _ in range(6000):
            if events.is_file() and events.read_text().count('"event": "iteration"') >= 3:
                (output / STOP_FILE).touch()
                return
            time.sleep(0.05)

    presser = threading.Thread(target=press_stop)
    presser.start()
    assert train_main([str(path)]) == 0
    presser.join()
    records = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "finished" and records[-1]["stopped"] is True
    stopped_at = records[-1]["iteration"]
    assert 3 <= stopped_at < 1000  # the stale STOP file did not stop it at iteration 1
    assert torch.load(output / "last.pt", weights_only=True)["iteration"] == stopped_at
