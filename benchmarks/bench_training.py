"""Training speed and memory: M2MRF-HRNetV2-W48 against vanilla HRNetV2-W48, and DDP scaling.

Part 1 (``models``): one training step of the bundled trainer (``training.networks.forward_losses``
with the official binary Dice loss, backward, SGD momentum step) on a random ``batch × 3 × H × W``
input (default 960×1440, batch 2). Time: both models live in this process; after one warm-up step
each, their steps alternate (baseline, M2MRF, baseline, ...) so machine load hits both alike;
seconds per step are the median. Memory: each model's step also runs in a fresh child process
whose peak resident set (CPU, ``ru_maxrss``) or peak CUDA allocation (GPU) is its own; the
figure reported is that peak minus the same child's resident set before the first step (model
and optimiser state included in both). On a GPU use ``--device cuda --amp --batch 4``.

Part 2 (``ddp``): the trainer's CLI on the same config and global batch as one process with 1
thread and with ``threads`` threads (``python -m training``) and as ``torchrun --nproc_per_node 2``
(gloo, ``threads / 2`` threads each) with and without synchronised BatchNorm, the four
alternated ``--ddp-repeats`` times; seconds per
iteration are the median of the iteration events after the first two of each run.

Run: ``.venv/bin/python benchmarks/bench_training.py [--size 960 1440] [--batch 2] [--steps 3]
[--variant A] [--parts models ddp]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_m2mrf.models import build_model
from training.config import LossConfig, OptimConfig
from training.losses import SegmentationLoss
from training.networks import forward_losses
from training.schedules import build_optimizer

REPO = Path(__file__).resolve().parents[1]
BASELINE = "hrnetv2_w48"
M2MRF = "m2mrf_hrnetv2_w48"


class Step:
    """A model, its SGD optimiser and a fixed random batch; ``run()`` is one training step."""

    def __init__(self, name: str, variant: str, batch: int, size: tuple[int, int], device: str, amp: bool) -> None:
        options = {"variant": variant} if name == M2MRF else {}
        torch.manual_seed(0)
        self.model = build_model(name, num_classes=4, **options).to(device).train()
        self.optimizer = build_optimizer(self.model.parameters(), OptimConfig())
        self.loss = SegmentationLoss(LossConfig(name="dice"))
        generator = torch.Generator().manual_seed(1)
        self.images = torch.randn(batch, 3, *size, generator=generator).to(device)
        self.targets = (torch.rand(batch, 4, *size, generator=generator) > 0.99).to(torch.uint8).to(device)
        self.device, self.amp = torch.device(device), amp

    def run(self) -> float:
        """One step; returns its wall seconds (synchronised on GPU)."""
        began = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            losses = forward_losses(self.model, self.model, self.images, self.targets, self.loss)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began


def rss_bytes() -> int:
    """Current resident set of this process (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(args: argparse.Namespace) -> None:
    """Child process: one step of ``args.memory_child``; prints its peak memory as JSON."""
    step = Step(args.memory_child, args.variant, args.batch, tuple(args.size), args.device, args.amp)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        seconds = step.run()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = rss_bytes()
        seconds = step.run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    print(json.dumps({"peak_bytes": peak, "seconds": seconds}))


def child_peak(name: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--memory-child", name, "--variant", args.variant, "--batch", str(args.batch),
               "--size", *map(str, args.size), "--device", args.device] + (["--amp"] if args.amp else [])
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def models_part(args: argparse.Namespace) -> None:
    """Memory first, in fresh children while this process is still small (at 960×1440 one step needs
    most of a 24 GB machine); then, with ``--steps N`` > 0, the alternating in-process timing. With
    ``--steps 0`` the time is each child's single step (the first step of a fresh process)."""
    size = tuple(args.size)
    memory = {name: child_peak(name, args) for name in (BASELINE, M2MRF)}
    times: dict[str, list[float]] = {name: [memory[name]["seconds"]] for name in (BASELINE, M2MRF)}
    if args.steps > 0:
        steps = {name: Step(name, args.variant, args.batch, size, args.device, args.amp) for name in (BASELINE, M2MRF)}
        for step in steps.values():
            step.run()  # warm-up
        times = {name: [] for name in steps}
        for _ in range(args.steps):
            for name, step in steps.items():
                times[name].append(step.run())
        del steps
    label = f"{args.batch}×3×{size[0]}×{size[1]}, {args.device}{' autocast fp16' if args.amp else ''}"
    timing = (f"median of {args.steps} alternating steps after 1 warm-up each" if args.steps > 0
              else "one step in a fresh process each (no warm-up)")
    print(f"\ntraining step, {label}, {timing}")
    print("| model | s/step | steps/s | ratio (time) | peak memory of the step | ratio (memory) |")
    print("|---|---|---|---|---|---|")
    base_time = statistics.median(times[BASELINE])
    base_memory = memory[BASELINE]["peak_bytes"]
    for name in (BASELINE, M2MRF):
        median = statistics.median(times[name])
        peak = memory[name]["peak_bytes"]
        title = f"{name} (variant {args.variant})" if name == M2MRF else f"{name} (baseline)"
        print(f"| {title} | {median:.2f} | {1 / median:.3f} | {median / base_time:.2f} | "
              f"{peak / 2**30:.2f} GiB | {peak / base_memory:.2f} |")
    print("all step times:", {k: [round(t, 2) for t in v] for k, v in times.items()})


def write_ddp_data(folder: Path, count: int, side: int) -> list[dict[str, str]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    pairs = []
    for index in range(count):
        image = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        labels = (rng.random((side, side)) < 0.02).astype(np.uint8) * rng.integers(1, 5)
        Image.fromarray(image).save(folder / f"image{index}.png")
        np.save(folder / f"labels{index}.npy", labels)
        pairs.append({"image": str(folder / f"image{index}.png"), "labels": str(folder / f"labels{index}.npy")})
    return pairs


def ddp_seconds(command: list[str], config: Path, threads: int) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command + [str(config)], cwd=REPO, capture_output=True, text=True, env=env, check=True)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [r["seconds"] for r in records if r["event"] == "iteration"]


def ddp_part(args: argparse.Namespace) -> None:
    from training.config import TrainingConfig, save_config

    torchrun = str(Path(sys.executable).with_name("torchrun"))
    # (processes, threads each, synchronised BatchNorm)
    layouts = [(1, 1, True), (1, args.threads, True), (2, args.threads // 2, True), (2, args.threads // 2, False)]
    results: dict[tuple[int, int, bool], list[float]] = {layout: [] for layout in layouts}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        pairs = write_ddp_data(folder, 8, args.ddp_size)
        for repeat in range(args.ddp_repeats):
            for processes, threads, sync in layouts:
                config = TrainingConfig.from_dict({
                    "data": {"kind": "pairs", "pairs": pairs},
                    "augment": {"resize": [args.ddp_size] * 2, "crop": [args.ddp_size] * 2,
                                "scale_range": [1.0, 1.0], "rotate90": False, "hflip": 0.0, "vflip": 0.0,
                                "photometric": False},
                    "model": {"name": args.ddp_model, "options": {}, "sync_batchnorm": sync},
                    "run": {"iterations": args.ddp_iterations, "batch_size": 4, "device": "cpu", "threads": threads,
                            "checkpoint_every": 0, "output_dir": str(folder / f"run{processes}x{threads}{sync}-{repeat}")},
                })
                path = save_config(config, folder / f"config{processes}x{threads}{sync}-{repeat}.yaml")
                command = [sys.executable, "-m", "training"] if processes == 1 else \
                    [torchrun, "--standalone", "--nproc_per_node", str(processes), "-m", "training"]
                results[(processes, threads, sync)] += ddp_seconds(command, path, threads)[2:]
    print(f"\nDDP scaling on CPU ({args.ddp_model}, global batch 4 of {args.ddp_size}², gloo), runs alternated "
          f"{args.ddp_repeats}×, median of iterations 3..{args.ddp_iterations} of every run")
    print("| processes × threads | BatchNorm | s/iteration | iterations/s | speed-up vs 1 × 1 |")
    print("|---|---|---|---|---|")
    base = statistics.median(results[layouts[0]])
    for (processes, threads, sync), seconds in results.items():
        median = statistics.median(seconds)
        norm = "per process" if not sync else ("synchronised" if processes > 1 else "plain")
        print(f"| {processes} × {threads} | {norm} | {median:.2f} | {1 / median:.2f} | {base / median:.2f} |")
    print("all iteration times:", {f"{p}x{t}{'' if s else ' no sync'}": [round(x, 2) for x in v]
                                   for (p, t, s), v in results.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["models", "ddp"], choices=["models", "ddp"])
    parser.add_argument("--size", nargs=2, type=int, default=[960, 1440], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--variant", default="A")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ddp-model", default="hrnetv2_w18s")
    parser.add_argument("--ddp-size", type=int, default=192)
    parser.add_argument("--ddp-iterations", type=int, default=8)
    parser.add_argument("--ddp-repeats", type=int, default=2)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, device {args.device}")
    if "models" in args.parts:
        models_part(args)
    if "ddp" in args.parts:
        ddp_part(args)


if __name__ == "__main__":
    main()
