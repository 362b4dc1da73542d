"""Whole-model inference: M2MRF-HRNetV2-W48 A-D against vanilla HRNetV2-W48, and peak memory.

Speed: every model is built once (random weights, eval mode, 4 classes), then each round runs one
``inference_mode`` forward of every model in turn on the same ``N×3×H×W`` input (default
1×3×960×1440), so slow phases of a shared machine hit all models alike; the figure per model is the
minimum over rounds (CPU time of the process and wall time), and the ratio is against vanilla from
the same run. Memory: one forward per model in a fresh subprocess; the peak resident memory during
the forward minus the resident memory just before it (model and input already allocated).
On CUDA (when present) the same comparison runs in float32 and under autocast, batch 1 and 4, with
frames per second and ``torch.cuda.max_memory_allocated``.

Run: ``.venv/bin/python benchmarks/bench_models.py [--rounds 3] [--threads N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from napari_m2mrf.models import build_model

MODELS = {"vanilla": ("hrnetv2_w48", {}), **{v: ("m2mrf_hrnetv2_w48", {"variant": v}) for v in "ABCD"}}


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def memory_child(label: str, height: int, width: int, threads: int) -> None:
    """Print the peak extra resident memory (bytes) of one forward of ``label`` as JSON."""
    torch.set_num_threads(threads)
    name, cfg = MODELS[label]
    model = build_model(name, **cfg).eval()
    x = torch.randn(1, 3, height, width)
    before = _resident_bytes()
    with torch.inference_mode():
        model(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"label": label, "peak_extra_bytes": peak - before, "peak_bytes": peak}))


def cpu_speed(models: dict, x: torch.Tensor, rounds: int) -> dict[str, dict[str, float]]:
    best = {label: {"cpu_s": float("inf"), "wall_s": float("inf")} for label in models}
    with torch.inference_mode():
        for label, model in models.items():  # warm-up
            model(x)
        for round_index in range(rounds):
            for label, model in models.items():
                cpu, wall = time.process_time(), time.perf_counter()
                model(x)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                best[label]["cpu_s"] = min(best[label]["cpu_s"], cpu)
                best[label]["wall_s"] = min(best[label]["wall_s"], wall)
                print(f"  round {round_index + 1} {label:8s} {wall:7.2f} s wall {cpu:7.2f} s cpu", flush=True)
    return best


def cuda_speed(models: dict, height: int, width: int, rounds: int) -> dict:
    """fps and peak memory on CUDA, float32 and autocast, batch 1 and 4, channels_last."""
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    results: dict = {}
    for batch in (1, 4):
        x = torch.randn(batch, 3, height, width, device="cuda").contiguous(memory_format=torch.channels_last)
        for precision in ("fp32", "autocast"):
            for label, model in models.items():
                model = model.cuda().to(memory_format=torch.channels_last)
                torch.cuda.reset_peak_memory_stats()
                with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=precision == "autocast"):
                    for _ in range(3):
                        model(x)
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    for _ in range(rounds):
                        model(x)
                    torch.cuda.synchronize()
                seconds = (time.perf_counter() - start) / rounds
                key = f"{label} batch{batch} {precision}"
                results[key] = {"fps": batch / seconds, "peak_bytes": torch.cuda.max_memory_allocated()}
                print(f"  {key:28s} {batch / seconds:7.2f} images/s  peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--height", type=int, default=960)
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.height, args.width, args.threads)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {label: build_model(name, **cfg).eval() for label, (name, cfg) in MODELS.items()}
    results: dict = {"args": {k: v for k, v in vars(args).items() if k != "memory_child"}}

    print(f"CPU, {args.threads} thread(s), 1x3x{args.height}x{args.width}, inference_mode, float32, best of {args.rounds}")
    speed = cpu_speed(models, torch.randn(1, 3, args.height, args.width), args.rounds)
    for label, figures in speed.items():
        figures["ratio_cpu"] = figures["cpu_s"] / speed["vanilla"]["cpu_s"]
        figures["ratio_wall"] = figures["wall_s"] / speed["vanilla"]["wall_s"]
        print(f"{label:8s} {figures['wall_s']:7.2f} s wall {figures['cpu_s']:7.2f} s cpu  "
              f"time vs vanilla {figures['ratio_wall']:.3f} (wall) {figures['ratio_cpu']:.3f} (cpu)")
    results["cpu"] = speed

    if not args.skip_memory:
        memory = {}
        for label in MODELS:
            command = [sys.executable, __file__, "--memory-child", label, "--height", str(args.height),
                       "--width", str(args.width), "--threads", str(args.threads)]
            child = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            memory[label] = child
            print(f"{label:8s} peak memory of one forward: {child['peak_extra_bytes'] / 2**30:.2f} GiB above the model "
                  f"({child['peak_bytes'] / 2**30:.2f} GiB resident at peak)", flush=True)
        results["memory"] = memory

    if torch.cuda.is_available():
        print(f"CUDA: {torch.cuda.get_device_name()}")
        results["cuda"] = cuda_speed(models, args.height, args.width, max(args.rounds, 20))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
