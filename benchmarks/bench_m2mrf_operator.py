"""M2MRF operator, forward + backward: ours against the Unfold/Fold formulation, at real W48 shapes.

The shapes are every M2MRF call inside the fuse layers of M2MRF-HRNetV2-W48 variants A-D for one
``N×3×H×W`` input (default 1×3×960×1440), found by tracing the models on the ``meta`` device. Each
distinct call (channels, scale, input size) is timed once per round, ours and the baseline
alternately, with the same parameters, input and output gradient; the per-variant totals weigh each
call by how often it runs in one forward of that variant. The baseline is the official
formulation: zero pad → ``nn.Conv2d`` 1×1 → ``nn.Unfold`` → two kernel-1 ``Conv1d`` → ``nn.Fold``
→ ``nn.Conv2d`` 1×1 → crop. Results must agree (float32, relative 1e-4) before any timing counts.

Times are the minimum over rounds of the process CPU time (robust on a shared machine) and of the
wall time. Run: ``.venv/bin/python benchmarks/bench_m2mrf_operator.py [--threads 1] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F

from napari_m2mrf.models import build_model
from napari_m2mrf.models.m2mrf import M2MRF

Call = tuple[int, int, float, int, int]  # C_in, C_out, scale, H, W


def fuse_layer_calls(variant: str, batch: int, height: int, width: int) -> Counter[Call]:
    """How often each M2MRF call shape runs in the fuse layers of one forward of M2MRF-HRNetV2-W48."""
    calls: Counter[Call] = Counter()
    with torch.device("meta"):
        model = build_model("m2mrf_hrnetv2_w48", variant=variant)
        hooks = [
            module.register_forward_hook(
                lambda m, inputs, _: calls.update([(m.in_channels, m.out_channels, m.scale, *inputs[0].shape[-2:])])
            )
            for name, module in model.named_modules()
            if isinstance(module, M2MRF) and ".fuse_layers." in name
        ]
        with torch.no_grad():
            model(torch.empty(batch, 3, height, width))
    for hook in hooks:
        hook.remove()
    return calls


def unfold_fold_m2mrf(op: M2MRF, x: torch.Tensor) -> torch.Tensor:
    """The official formulation with ``op``'s parameters."""
    size, scale = op.patch_size, op.scale
    height, width = x.shape[-2:]
    padded_h, padded_w = math.ceil(height / size) * size, math.ceil(width / size) * size
    x = F.pad(x, (0, padded_w - width, 0, padded_h - height))
    encoded = F.conv2d(x, op.compressor.weight, op.compressor.bias)
    columns = F.unfold(encoded, kernel_size=size, stride=size)
    hidden = F.conv1d(columns, op.patch_reduce.weight[..., None], op.patch_reduce.bias, groups=op.groups)
    expanded = F.conv1d(hidden, op.patch_expand.weight[..., None], op.patch_expand.bias, groups=op.groups)
    k = op.out_patch_size
    assembled = F.fold(expanded, (int(padded_h * scale), int(padded_w * scale)), kernel_size=k, stride=k)
    out = F.conv2d(assembled, op.recover.weight, op.recover.bias)
    return out[:, :, : max(int(height * scale), 1), : max(int(width * scale), 1)]


def forward_backward(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one forward + backward."""
    x.grad = None
    cpu, wall = time.process_time(), time.perf_counter()
    function(x).backward(grad)
    return time.process_time() - cpu, time.perf_counter() - wall


def check_agreement(op: M2MRF, x: torch.Tensor, grad: torch.Tensor) -> float:
    """Largest relative difference of output and input gradient between the two formulations."""
    worst = 0.0
    results = []
    for function in (op, lambda t: unfold_fold_m2mrf(op, t)):
        x.grad = None
        out = function(x)
        out.backward(grad)
        results.append((out.detach(), x.grad.clone()))
    for ours, reference in zip(*results):
        worst = max(worst, ((ours - reference).abs().max() / reference.abs().max()).item())
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadiest on a shared machine)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, default=960)
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    per_variant = {v: fuse_layer_calls(v, args.batch, args.height, args.width) for v in "ABCD"}
    distinct = sorted(set().union(*per_variant.values()))
    print(f"{len(distinct)} distinct M2MRF calls in the fuse layers of W48 A-D at {args.batch}x3x{args.height}x{args.width}, "
          f"{args.threads} thread(s), best of {args.rounds} rounds, forward + backward")
    timings: dict[Call, dict[str, tuple[float, float]]] = {}
    for call in distinct:
        c_in, c_out, scale, height, width = call
        op = M2MRF(c_in, c_out, scale)
        x = torch.randn(args.batch, c_in, height, width, requires_grad=True)
        out_h, out_w = op.output_size(height, width)
        grad = torch.randn(args.batch, c_out, out_h, out_w)
        error = check_agreement(op, x, grad)
        if error > 1e-4:
            raise SystemExit(f"formulations disagree on {call}: relative error {error:.2e}")
        best = {"ours": (math.inf, math.inf), "unfold_fold": (math.inf, math.inf)}
        for _ in range(args.rounds):
            for label, function in (("ours", op), ("unfold_fold", lambda t, op=op: unfold_fold_m2mrf(op, t))):
                cpu, wall = forward_backward(function, x, grad)
                best[label] = (min(best[label][0], cpu), min(best[label][1], wall))
        timings[call] = best
        ours, base = best["ours"], best["unfold_fold"]
        print(f"  {c_in:3d}->{c_out:3d} x{scale:<6g} {height:3d}x{width:<3d}  ours {ours[0] * 1e3:7.1f} ms cpu "
              f"{ours[1] * 1e3:7.1f} ms wall | unfold/fold {base[0] * 1e3:7.1f} ms cpu {base[1] * 1e3:7.1f} ms wall "
              f"| speed-up {base[0] / ours[0]:.2f}x cpu {base[1] / ours[1]:.2f}x wall   (rel. err {error:.1e})")

    summary = {}
    for variant, calls in per_variant.items():
        totals = {label: [sum(n * timings[c][label][i] for c, n in calls.items()) for i in (0, 1)] for label in ("ours", "unfold_fold")}
        summary[variant] = {
            "calls": sum(calls.values()),
            "ours_cpu_s": totals["ours"][0],
            "unfold_fold_cpu_s": totals["unfold_fold"][0],
            "speedup_cpu": totals["unfold_fold"][0] / totals["ours"][0],
            "speedup_wall": totals["unfold_fold"][1] / totals["ours"][1],
        }
        s = summary[variant]
        print(f"variant {variant}: {s['calls']} fuse-layer M2MRF calls per forward; ours {s['ours_cpu_s']:.3f} s cpu, "
              f"unfold/fold {s['unfold_fold_cpu_s']:.3f} s cpu -> {s['speedup_cpu']:.2f}x cpu, {s['speedup_wall']:.2f}x wall")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "variants": summary, "calls": {str(c): t for c, t in timings.items()}}, handle, indent=1)


if __name__ == "__main__":
    main()
