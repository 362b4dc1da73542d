"""torchrun with 2 CPU processes (gloo) follows the same loss trajectory as 1 process with the same
global batch, thanks to the iteration sampler and process-synchronised BatchNorm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from training.config import TrainingConfig, save_config
from training.sync_batchnorm import ProcessSyncBatchNorm2d, convert_batchnorm

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def write_blob_pairs(folder: Path, count: int) -> list[dict[str, str]]:
    """Small photographs with coloured discs and their label images (values 1..4)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows, cols = np.ogrid[:64, :64]
    pairs = []
    for index in range(count):
        image = np.full((64, 64, 3), (120, 60, 20), np.uint8) + rng.integers(0, 20, (64, 64, 3), dtype=np.uint8)
        labels = np.zeros((64, 64), np.uint8)
        for label, colour in enumerate([(250, 220, 60), (140, 20, 20), (230, 230, 200), (90, 10, 10)], start=1):
            y, x, r = rng.integers(8, 56), rng.integers(8, 56), rng.integers(3, 9)
            disc = (rows - y) ** 2 + (cols - x) ** 2 <= r * r
            labels[disc], image[disc] = label, colour
        Image.fromarray(image).save(folder / f"image{index}.png")
        np.save(folder / f"labels{index}.npy", labels)
        pairs.append({"image": str(folder / f"image{index}.png"), "labels": str(folder / f"labels{index}.npy")})
    return pairs


def run_losses(command: list[str], config: Path) -> tuple[list[float], int]:
    """Iteration losses and world size printed by a training command."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command + [str(config)], cwd=REPO, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert records[0]["event"] == "started"
    return [r["losses"]["loss"] for r in records if r["event"] == "iteration"], records[0]["world_size"]


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.is_file() and shutil.which("torchrun") is None, reason="torchrun not installed")
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    pairs = write_blob_pairs(tmp_path, 6)
    losses = {}
    for processes in (1, 2):
        values = {
            "data": {"kind": "pairs", "pairs": pairs},
            # 48-pixel crops: HRNet's 1/32 branch keeps 2×2 pixels, so BatchNorm over the batch does not
            # amplify float rounding; one process with 1 or 2 threads then agrees within ~3e-6.
            "augment": {"resize": [64, 64], "crop": [48, 48], "scale_range": [0.8, 1.25]},
            "model": {"name": "hrnetv2_w18s", "options": {}},
            "optim": {"lr": 0.01},
            "run": {"iterations": 5, "batch_size": 4, "device": "cpu", "threads": 1, "checkpoint_every": 0,
                    "output_dir": str(tmp_path / f"run{processes}")},
        }
        config = save_config(TrainingConfig.from_dict(values), tmp_path / f"config{processes}.yaml")
        if processes == 1:
            command = [sys.executable, "-m", "training"]
        else:
            torchrun = str(TORCHRUN) if TORCHRUN.is_file() else shutil.which("torchrun")
            command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "training"]
        losses[processes], world_size = run_losses(command, config)
        assert world_size == processes and len(losses[processes]) == 5
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-4)
    assert len(set(losses[1])) == 5  # the weights really changed between iterations


def test_synchronised_batchnorm_is_plain_batchnorm_in_one_process() -> None:
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    synced = convert_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
    synced.load_state_dict(plain.state_dict())
    assert isinstance(synced[1], ProcessSyncBatchNorm2d) and not dist.is_initialized()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(plain(x), synced(x))
    assert set(synced.state_dict()) == set(plain.state_dict())
