"""Fault injection with real processes and real files: SIGKILL a writer at several points, then check
that the previous version is intact and readable, the new one complete or absent, and that running
again resumes or restarts correctly. Also: two writers of one output, a full disk, a read-only output.

Kill points are random delays after a marker (a line printed, a folder appearing), seeded so a
failure repeats. Spawns are few (each PyTorch import costs seconds); the long variants are marked
``soak`` (``pytest -m soak``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_m2mrf.cli import main
from napari_m2mrf.io.workspace import Workspace

CLI = str(Path(sys.executable).with_name("napari-m2mrf"))
REPO = Path(__file__).resolve().parents[1]

SAVE_CORRECTIONS = """
import sys
import numpy as np
from napari_m2mrf.io.fundus_results import save_fundus_labels

workspace, source = sys.argv[1], sys.argv[2]
image = np.zeros((768, 1024, 3), np.uint8)
version = 1
while True:  # what the Correct widget's save does (napari_m2mrf.widgets.saving), again and again
    corrected = np.full((768, 1024), version % 5, np.uint8)
    save_fundus_labels(workspace, corrected, prediction=corrected, image=image, source=source)
    print(version, flush=True)
    version += 1
"""


def _kill_after(process: subprocess.Popen, ready: Callable[[], bool], delay: float, timeout: float = 120) -> bool:
    """SIGKILL ``process`` ``delay`` s after ``ready()`` holds; False if it ended before that."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the marker never appeared")
        time.sleep(0.01)
    time.sleep(delay)
    if process.poll() is not None:
        return False
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return True


def _random_tiff(path: Path, seed: int, shape: tuple[int, int] = (2048, 2048)) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 255, (*shape, 3), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    return image


def _check_image(out: Path, expected: np.ndarray) -> None:
    workspace = Workspace.open(out, mode="r")
    assert workspace.has_image
    levels = workspace.image.levels
    assert np.array_equal(np.asarray(levels[0][...]), np.moveaxis(expected, -1, 0))
    np.asarray(levels[-1][...])  # every level complete and readable


# -- (a) saving corrections, as the Correct widget does -------------------------------------------------


def _save_corrections_killed(tmp_path: Path, kills: int, seed: int) -> None:
    from napari_m2mrf.io.fundus_results import CORRECTED, save_fundus_labels

    rng = random.Random(seed)
    source = tmp_path / "photo.png"
    source.write_bytes(b"")  # only named as the workspace's source
    workspace = tmp_path / "photo.m2mrf.zarr"
    first = np.full((768, 1024), 4, np.uint8)
    save_fundus_labels(workspace, first, image=np.zeros((768, 1024, 3), np.uint8), source=source)
    for _ in range(kills):
        process = subprocess.Popen([sys.executable, "-c", SAVE_CORRECTIONS, str(workspace), str(source)],
                                   stdout=subprocess.PIPE, text=True, cwd=REPO)
        wanted, lines = rng.randint(1, 2), iter(process.stdout)
        _kill_after(process, lambda: [next(lines, None) for _ in range(wanted)][-1] is not None, rng.uniform(0, 0.4))
        process.stdout.close()
        stored = Workspace.open(workspace, mode="r")
        corrected = np.asarray(stored.labels(CORRECTED).levels[0][...])
        assert corrected.shape == (768, 1024) and len(np.unique(corrected)) == 1  # one complete version
        np.asarray(stored.labels(CORRECTED).levels[-1][...])
        np.asarray(stored.labels("prediction").levels[-1][...])
        assert stored.has_image
    again = np.full((768, 1024), 3, np.uint8)
    save_fundus_labels(workspace, again, source=source)  # the next save works and cleans the leftovers
    assert np.array_equal(np.asarray(Workspace.open(workspace).labels(CORRECTED).levels[0][...]), again)
    assert not list(workspace.rglob(".*tmp-*")) and not list(workspace.rglob("*.partial"))


def test_killed_correction_saves_leave_one_complete_version(tmp_path: Path) -> None:
    _save_corrections_killed(tmp_path, kills=2, seed=1)


# -- (b) (d) convert: a photograph's workspace and a tiled image; a second writer ---------------------------


def _convert_killed(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    first, second = tmp_path / "first.tif", tmp_path / "second.tif"
    image_a, image_b = _random_tiff(first, 1), _random_tiff(second, 2)
    out = tmp_path / "slide.zarr"
    for _ in range(kills):
        process = subprocess.Popen([CLI, "convert", str(first), str(out), "--chunk", "128", "--quiet"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if _kill_after(process, lambda: (out / "0").is_dir(), rng.uniform(0.05, 1.5)):
            if Workspace.open(out, mode="r").has_image:  # killed after the end: it is complete
                _check_image(out, image_a)
    # resumed from the same source: complete and equal to it
    assert main(["convert", str(first), str(out), "--chunk", "128", "--quiet"]) in (0, 2)
    _check_image(out, image_a)
    # a killed conversion re-run with a different source of the same size restarts, not resumes
    process = subprocess.Popen([CLI, "convert", str(first), str(tmp_path / "b.zarr"), "--chunk", "128", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_after(process, lambda: (tmp_path / "b.zarr" / "0").is_dir(), rng.uniform(0.2, 1.0))
    assert main(["convert", str(second), str(tmp_path / "b.zarr"), "--chunk", "128", "--quiet"]) == 0
    _check_image(tmp_path / "b.zarr", image_b)


def test_killed_conversions_resume_or_restart_and_a_second_writer_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _convert_killed(tmp_path, kills=2, seed=2)
    # two processes writing one output: the second gets the lock error and the first finishes
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(5).integers(0, 255, (1800, 1800, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "photo.zarr"
    writer = subprocess.Popen([CLI, "convert", str(photo), str(out), "--chunk", "128", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "0").is_dir() and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    capsys.readouterr()  # only what the second writer says
    code = main(["convert", str(photo), str(out), "--quiet"])
    second = capsys.readouterr().err.strip().splitlines()
    writer.wait(timeout=300)
    assert writer.returncode == 0, writer.stderr.read()
    if code == 2:  # (the first may have finished already on a fast machine: then it says "exists already")
        assert len(second) == 1 and (
            f"is being written by another napari-m2mrf process (pid {writer.pid})" in second[0]
            or "exists already" in second[0]
        ), second
    _check_image(out, np.asarray(Image.open(photo)))


# -- (c) predict --masks and (e) train, the PyTorch writers ----------------------------------------------------


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_m2mrf.models import build_model, fundus_metadata, save_checkpoint

    path = tmp_path_factory.mktemp("model") / "w18s.safetensors"
    meta = {**fundus_metadata("idrid", {"purpose": "test"}), "input_size": [128, 128]}
    save_checkpoint(path, build_model("hrnetv2_w18s", num_classes=4), meta)
    return path


def test_killed_predict_keeps_readable_masks_and_reruns(small_model: Path, tmp_path: Path) -> None:
    from napari_m2mrf.inference.batch import PredictOptions, predict_many
    from napari_m2mrf.io.idrid_masks import read_idrid_mask
    from napari_m2mrf.io.output_gate import OutputExists
    from sample_data.fundus_samples import write_fundus_dataset

    root = write_fundus_dataset(tmp_path / "data", 2, seed=3, scale=0.5)
    images = root / "1. Original Images" / "a. Training Set"
    out = tmp_path / "out"
    options = PredictOptions(model=str(small_model), out_dir=out, masks=True, thresholds=(0.5,) * 4)
    inputs = sorted(images.iterdir())
    predict_many(inputs, options)
    before = {p.name: read_idrid_mask(p) for p in (out / "masks").glob("*.tif")}
    assert len(before) == 8
    with pytest.raises(OutputExists, match="use --overwrite"):  # refused before any work
        predict_many(inputs, options)

    command = [CLI, "predict", str(images), "--model", str(small_model), "--out", str(out), "--masks", "--overwrite",
               "--thresholds", "0.1,0.1,0.1,0.1"]
    masks_changed = lambda: any(p.stat().st_mtime_ns > max_mtime for p in (out / "masks").glob("*.tif"))  # noqa: E731
    max_mtime = max(p.stat().st_mtime_ns for p in (out / "masks").glob("*.tif"))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _kill_after(process, masks_changed, random.Random(3).uniform(0, 0.05))
    for path in (out / "masks").glob("*.tif"):  # each mask is a whole old or a whole new one
        assert read_idrid_mask(path).shape == before[path.name].shape
    assert sorted(p.name for p in (out / "masks").glob("*.tif")) == sorted(before)
    for workspace in out.glob("*.m2mrf.zarr"):
        np.asarray(Workspace.open(workspace, mode="r").labels("prediction").levels[0][...])
    rerun = predict_many(inputs, dataclasses.replace(options, overwrite=True))  # in process: no spawn
    assert [len(r["masks"]) for r in rerun] == [4, 4]
    assert not list(out.rglob(".*.tmp-*"))  # the rerun's writes removed the killed run's temporaries


def test_killed_training_keeps_a_loadable_checkpoint_and_resumes(tmp_path: Path, capsys) -> None:
    from napari_m2mrf.models.checkpoints import load_checkpoint as load_model_file
    from training.checkpointing import load_training_state
    from training.cli import main as train_main
    from training.config import TrainingConfig, save_config

    from test_training_loop import write_pairs

    pairs = write_pairs(tmp_path, 2)
    output = tmp_path / "run"
    values = {
        "data": {"kind": "pairs", "pairs": pairs},
        "augment": {"resize": [64, 64], "crop": [32, 32]},
        "model": {"name": "hrnetv2_w18s", "options": {}},
        "run": {"iterations": 200, "batch_size": 2, "device": "cpu", "threads": 1, "checkpoint_every": 1,
                "output_dir": str(output)},
    }
    config = save_config(TrainingConfig.from_dict(values), tmp_path / "config.yaml")
    process = subprocess.Popen([sys.executable, "-m", "training", str(config)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    lines = iter(process.stdout)
    checkpoints = 0

    def checkpointed() -> bool:
        nonlocal checkpoints
        line = next(lines, None)
        checkpoints += bool(line) and json.loads(line)["event"] == "checkpoint"
        return checkpoints >= 2

    _kill_after(process, checkpointed, random.Random(4).uniform(0, 0.3))  # often while the next one is written
    process.stdout.close()
    state = load_training_state(output / "last.pt")
    killed_at = state["iteration"]
    assert killed_at >= 1
    load_model_file(output / "last.safetensors")
    assert train_main([str(config)]) == 2  # a fresh run does not replace them silently
    assert "--overwrite" in capsys.readouterr().err
    assert train_main([str(config), "--resume", "--set", f"run.iterations={killed_at + 1}"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[0]["event"] == "started" and records[0]["iteration"] == killed_at
    assert load_training_state(output / "last.pt")["iteration"] == killed_at + 1


# -- a full disk and a read-only output ------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip() or result.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_and_read_only_output_are_one_line_errors(
    small_tmpfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "big.tif"
    _random_tiff(source, 7, (1024, 1024))  # 3 MiB of noise: more than the 2 MiB file system holds
    out = small_tmpfs / "big.zarr"
    assert main(["convert", str(source), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device" in err[0], err
    assert not out.exists() or not Workspace.open(out, mode="r").has_image  # never loads as if complete
    for leftover in small_tmpfs.rglob("*"):
        if leftover.is_file():
            leftover.unlink()
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], capture_output=True)
    if remounted.returncode != 0:
        pytest.skip("cannot remount the tmpfs read-only")
    assert main(["convert", str(source), str(small_tmpfs / "ro.zarr"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read-only file system" in err[0], err


# -- soak: many kill points ---------------------------------------------------------------------------------------


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(5))
def test_soak_conversions_killed_many_times(tmp_path: Path, seed: int) -> None:
    _convert_killed(tmp_path, kills=8, seed=100 + seed)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(5))
def test_soak_correction_saves_killed_many_times(tmp_path: Path, seed: int) -> None:
    _save_corrections_killed(tmp_path, kills=10, seed=200 + seed)
