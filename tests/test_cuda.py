"""Tests that need a CUDA GPU (marker ``cuda``; every test skips without one).

Run on the device machine by ``scripts/gpu_check.sh`` (``pytest -c scripts/gpu_pytest.ini -m cuda
tests/test_cuda.py`` with plugin autoloading off), so this file must import nothing beyond torch,
numpy and the Qt-free core: no napari, Qt, zarr, dask.

* float32 against bf16 / fp16 autocast forwards of M2MRF-HRNetV2 on CUDA, within the project's
  autocast tolerance on sigmoid probabilities;
* tiled fundus prediction on CUDA (autocast, channels_last) against the CPU (float32);
* a real CUDA out-of-memory (allocator capped with ``set_per_process_memory_fraction``) makes
  tiled prediction halve its tiles and still give the same probabilities;
* the bundled trainer's loop on CUDA with float16 autocast and its GradScaler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_m2mrf.models import build_model

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# Largest difference of sigmoid probabilities between autocast and float32 inference that we accept.
try:
    from model_numerics import AUTOCAST_PROBABILITY_TOLERANCE
except ImportError:  # the module is being moved; these are its values
    AUTOCAST_PROBABILITY_TOLERANCE = {torch.bfloat16: 0.05, torch.float16: 0.01}

IDRID_MEAN = (116.513, 56.437, 16.309)
IDRID_STD = (80.206, 41.232, 13.293)


def _calibrated(name: str, seed: int = 0, **cfg) -> torch.nn.Module:
    """A model in eval mode whose BatchNorm statistics come from data (realistic activation scales)."""
    torch.manual_seed(seed)
    model = build_model(name, num_classes=4, **cfg)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 96, 128))
    return model.eval()


def _fundus_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a smooth reddish disc with noise, roughly a fundus photograph's statistics."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    disc = (((y - height / 2) / (0.48 * height)) ** 2 + ((x - width / 2) / (0.48 * width)) ** 2) < 1
    base = np.stack([np.full((height, width), v) for v in IDRID_MEAN], axis=-1) * disc[..., None]
    image = base + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("variant", ["A", "D"])
def test_autocast_forward_agrees_with_float32(variant: str) -> None:
    model = _calibrated("m2mrf_hrnetv2_w18s", variant=variant).cuda().to(memory_format=torch.channels_last)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 256, 384, device="cuda").contiguous(memory_format=torch.channels_last)
    dtypes = [torch.float16] + ([torch.bfloat16] if torch.cuda.is_bf16_supported() else [])
    with torch.inference_mode():
        reference = torch.sigmoid(model(x).float())
        for dtype in dtypes:
            with torch.autocast("cuda", dtype=dtype):
                logits = model(x)
            assert logits.dtype == dtype
            error = (torch.sigmoid(logits.float()) - reference).abs().max().item()
            assert error < AUTOCAST_PROBABILITY_TOLERANCE[dtype], (dtype, error)


def test_tiled_fundus_prediction_on_cuda_matches_cpu() -> None:
    from napari_m2mrf.inference.devices import autocast_dtype
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing

    prep = Preprocessing(IDRID_MEAN, IDRID_STD, (1440, 960))
    image = _fundus_like(600, 800)
    model = _calibrated("m2mrf_hrnetv2_w18s", variant="A")
    cpu = FundusPredictor(model, prep, device="cpu").predict_tiled(image, tile=384, overlap=64)
    gpu = FundusPredictor(model, prep, device="cuda").predict_tiled(image, tile=384, overlap=64)
    assert gpu.shape == cpu.shape == (4, 600, 800)
    assert np.isfinite(gpu).all()
    tolerance = AUTOCAST_PROBABILITY_TOLERANCE[autocast_dtype(torch.device("cuda"))]
    assert np.abs(gpu - cpu).max() < tolerance


def test_real_cuda_out_of_memory_halves_the_tiles() -> None:
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing

    prep = Preprocessing(IDRID_MEAN, IDRID_STD, (1440, 960))
    image = _fundus_like(1024, 1024, seed=2)
    predictor = FundusPredictor(_calibrated("m2mrf_hrnetv2_w18s", variant="A"), prep, device="cuda")
    predictor.predict_tiled(image[:256, :256], tile=256, overlap=32)  # warm-up: kernels, workspaces
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    predictor.predict_tiled(image[:256, :256], tile=256, overlap=32)
    one_tile = torch.cuda.max_memory_allocated() - base
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    # Cap the allocator at what is resident plus two 256² tiles' worth of work: a 1024² tile (16× the
    # work) must run out of memory, a 256² tile fits.
    cap = torch.cuda.memory_reserved() + 2 * one_tile
    notices: list[str] = []
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
    try:
        result = predictor.predict_tiled(image, tile=1024, overlap=128, notify=notices.append)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert notices, "a 1024² tile under the cap should have run out of GPU memory"
    assert notices[0] == "out of GPU memory: retrying with 512×512 px tiles"
    tile = int(notices[-1].rsplit(" ", 3)[-3].split("×")[0])
    assert tile in (256, 512), notices
    expected = predictor.predict_tiled(image, tile=tile, overlap=128 * tile // 1024)
    assert result.shape == (4, 1024, 1024)
    assert np.abs(result - expected).max() < 1e-2


def test_trainer_loop_on_cuda_with_autocast_and_grad_scaler(tmp_path: Path) -> None:
    from PIL import Image

    from training.config import TrainingConfig
    from training.loop import Trainer

    rng = np.random.default_rng(0)
    pairs = []
    for index in range(4):
        image = _fundus_like(128, 160, seed=10 + index)
        labels = np.zeros((128, 160), np.uint8)
        labels[rng.integers(20, 100), :] = rng.integers(1, 5)  # a thin line of one lesion class
        labels[40:60, 50:90] = 1 + index % 4
        Image.fromarray(image).save(tmp_path / f"image{index}.png")
        np.save(tmp_path / f"labels{index}.npy", labels)
        pairs.append({"image": str(tmp_path / f"image{index}.png"), "labels": str(tmp_path / f"labels{index}.npy")})
    config = TrainingConfig.from_dict({
        "data": {"kind": "pairs", "pairs": pairs, "val_pairs": pairs[:1]},
        "augment": {"resize": [128, 160], "crop": [96, 96], "scale_range": [1.0, 1.0], "photometric": False},
        "model": {"name": "m2mrf_hrnetv2_w18s", "options": {"variant": "A"}, "sync_batchnorm": False},
        "optim": {"name": "adam", "lr": 1e-3},
        "run": {"iterations": 6, "batch_size": 2, "device": "cuda", "amp": True, "checkpoint_every": 0,
                "output_dir": str(tmp_path / "run")},
    })
    events = list(Trainer(config).run())
    iterations = [e for e in events if type(e).__name__ == "IterationDone"]
    assert len(iterations) == 6
    assert all(np.isfinite(e.losses["loss"]) for e in iterations)
    started = next(e for e in events if type(e).__name__ == "Started")
    assert started.device.startswith("cuda")
    from training.checkpointing import load_training_state

    state = load_training_state(tmp_path / "run" / "last.pt")
    assert state.get("scaler"), "the GradScaler state is saved with the run"
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_the_widgets_name_the_gpu_that_runs() -> None:
    from napari_m2mrf.inference.devices import describe_device

    described = describe_device("auto")
    assert described.startswith("cuda:0 (") and torch.cuda.get_device_name(0) in described
    assert ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") in described
