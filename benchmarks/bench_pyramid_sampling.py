"""Grid construction + pyramid-aware sampling of a 512×512 output from the synthetic 32768² slide.

Steps, each timed (wall and process-CPU seconds, one run):

1. read the low-resolution view (level 5, 1024²) and the ground-truth labels at the same level;
2. the deformation module (paper variant, untrained) on the 512² view — its cost only;
3. the density used for sampling: a simulated "edge-based" density (paper A.5) from the labels —
   edge target + blurred object mask over a uniform floor, at a moderate and a strong
   concentration — and the deformed sampler (eq. 3), giving a 512×512 grid in level-0 pixels;
4. :func:`sample_pyramid` at that grid (2 decoding threads), against the uniform 512×512 grid in
   the same process, and against what a level-0 bilinear read would have to decode.

Bytes decoded are the chunks read × their uncompressed size (from the sampler's counts), checked
against an independent count of the chunk keys the zarr store handed out (with their compressed
sizes). Accuracy: for up to 80 random samples per level used, the box average of level 0 over a window as wide as the
local sample spacing (the properly low-pass-filtered level 0) against our value, against a plain
bilinear read of level 0, and against other level choices at the same grid: one level finer, one
level coarser, and a trilinear blend of the two levels bracketing the spacing (weight
``log2(spacing / pitch)``, as mip-mapping does).

Usage: ``.venv/bin/python benchmarks/bench_pyramid_sampling.py`` (generates the sample slide into
the user cache on first use).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import psutil
import torch
import zarr
from bench_reverse_fill import PeakRSS
from zarr.storage import LocalStore

from napari_m2mrf.models.deform import (
    DeformationModule,
    DeformedSampler,
    edge_target,
    gaussian_blur,
    grid_to_pixels,
    uniform_grid,
)
from napari_m2mrf.sampling.pyramid import (
    level_bytes,
    local_spacing,
    sample_pyramid,
)
from sample_data.slide_sample import sample_slide

OUTPUT = (512, 512)
DENSITY = (512, 512)
VIEW_LEVEL = 5


def clock(run):
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


# name -> (σ of the deformed sampler in density pixels, weight of the label edges, weight of the objects)
DENSITIES = {"moderate": (16.0, 100.0, 20.0), "strong": (8.0, 400.0, 60.0)}


def simulated_edge_density(labels_lr: np.ndarray, edge_weight: float, object_weight: float) -> torch.Tensor:
    """``1×1×h×w`` density: uniform floor + weighted edges and blurred masks of the labelled objects."""
    labels = torch.from_numpy(labels_lr.astype(np.int64))[None]
    objects = gaussian_blur((labels > 0).float()[None], sigma=2.0)
    density = 1.0 + edge_weight * edge_target(labels) + object_weight * objects
    return density / density.sum()


def box_reference(level0, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Mean of level 0 over a ``spacing``-wide square window around each point, ``(n, 3)``."""
    _, height, width = level0.shape
    values = np.empty((len(points), 3), dtype=np.float32)
    for i, ((y, x), s) in enumerate(zip(points, spacing)):
        half = max(0.5, s / 2)
        y0, y1 = int(np.clip(round(y - half + 0.5), 0, height - 1)), int(np.clip(round(y + half + 0.5), 1, height))
        x0, x1 = int(np.clip(round(x - half + 0.5), 0, width - 1)), int(np.clip(round(x + half + 0.5), 1, width))
        values[i] = np.asarray(level0[:, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)], dtype=np.float32).mean(axis=(1, 2))
    return values


def bilinear_level0(level0, points: np.ndarray) -> np.ndarray:
    """Plain bilinear read of level 0 at each point (no low-pass filter), ``(n, 3)``."""
    _, height, width = level0.shape
    values = np.empty((len(points), 3), dtype=np.float32)
    for i, (y, x) in enumerate(points):
        y, x = float(np.clip(y, 0, height - 1)), float(np.clip(x, 0, width - 1))
        y0, x0 = min(int(y), height - 2), min(int(x), width - 2)
        patch = np.asarray(level0[:, y0 : y0 + 2, x0 : x0 + 2], dtype=np.float32)
        wy, wx = y - y0, x - x0
        top = patch[:, 0, 0] * (1 - wx) + patch[:, 0, 1] * wx
        bottom = patch[:, 1, 0] * (1 - wx) + patch[:, 1, 1] * wx
        values[i] = top * (1 - wy) + bottom * wy
    return values


def other_level_choices(levels, factors, points: np.ndarray, result) -> dict[str, tuple[np.ndarray, int]]:
    """Values ``(…, 3)`` and bytes decoded of other level choices at the same grid: one level finer,
    one level coarser, and the trilinear blend of the chosen level and the next coarser one."""
    spacing = local_spacing(points)
    finer = sample_pyramid(levels, factors, points, spacing=spacing / 2, workers=2)
    coarser = sample_pyramid(levels, factors, points, spacing=spacing * 2, workers=2)
    pitch = np.asarray(factors)[result.level]
    weight = np.clip(np.log2(spacing / pitch), 0, 1)[..., None] * (coarser.level > result.level)[..., None]
    blend = result.values * (1 - weight) + coarser.values * weight
    return {
        "one level finer": (finer.values, finer.stats.bytes_decoded),
        "one level coarser": (coarser.values, coarser.stats.bytes_decoded),
        "trilinear (chosen + next coarser level)": (blend, result.stats.bytes_decoded + coarser.stats.bytes_decoded),
    }


def level0_chunks_under(points: np.ndarray, chunk: int) -> int:
    """Number of level-0 chunks a bilinear read at every point would decode."""
    rows = np.clip(np.floor(points[..., 0]), 0, None).astype(np.int64) // chunk
    cols = np.clip(np.floor(points[..., 1]), 0, None).astype(np.int64) // chunk
    return len(np.unique(rows * 1_000_000 + cols))


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from counting_store import CountingStore

    torch.set_num_threads(2)
    print(f"load average before: {psutil.getloadavg()}")
    slide, seconds, _ = clock(sample_slide)
    print(f"sample slide: {slide.ome_zarr} ({seconds:.1f} s to locate/generate)")
    fetched: list = []
    root = zarr.open_group(CountingStore(LocalStore(str(slide.ome_zarr), read_only=True), fetched), mode="r")
    levels = [root[str(k)] for k in range(slide.levels)]
    factors = [2.0**k for k in range(slide.levels)]
    truth = zarr.open_group(LocalStore(str(slide.ome_zarr), read_only=True), mode="r")["labels/ground_truth"]
    level0 = zarr.open_group(LocalStore(str(slide.ome_zarr), read_only=True), mode="r")["0"]
    full_bytes = level_bytes(levels[0])
    rows = []

    view, wall, cpu = clock(lambda: np.asarray(levels[VIEW_LEVEL]))
    rows.append(("read low-res view (level 5, 1024²)", wall, cpu))
    labels5 = np.asarray(truth[str(VIEW_LEVEL)])
    labels_lr = labels5.reshape(512, 2, 512, 2).max(axis=(1, 3))  # 512² class map; keeps small objects
    image_lr = torch.nn.functional.interpolate(torch.from_numpy(view).float()[None] / 255, size=DENSITY, mode="area")
    module = DeformationModule("paper").eval()
    with torch.no_grad():
        _, wall, cpu = clock(lambda: module(image_lr))
    rows.append(("deformation module forward, 512² (paper variant, cost only)", wall, cpu))

    uniform = grid_to_pixels(uniform_grid(1, OUTPUT, dtype=torch.float64), levels[0].shape[1:])[0].numpy()
    fetched.clear()
    uniform_result, wall, cpu = clock(lambda: sample_pyramid(levels, factors, uniform, workers=2))
    rows.append(("baseline: pyramid sampling, uniform grid", wall, cpu))
    reads = {"uniform": (uniform_result, len(fetched), sum(size for _, size in fetched), 0)}

    results = {}
    for name, (sigma, edge_weight, object_weight) in DENSITIES.items():
        with PeakRSS() as memory:
            def build_grid(sigma=sigma, edge_weight=edge_weight, object_weight=object_weight) -> np.ndarray:
                with torch.no_grad():
                    density = simulated_edge_density(labels_lr, edge_weight, object_weight)
                    grid = DeformedSampler(sigma=sigma)(density, OUTPUT)
                return grid_to_pixels(grid.double(), levels[0].shape[1:])[0].numpy()

            points, wall, cpu = clock(build_grid)
            rows.append((f"{name} density + deformed sampler → 512×512 grid", wall, cpu))
            fetched.clear()
            result, wall, cpu = clock(lambda points=points: sample_pyramid(levels, factors, points, workers=2))
            rows.append((f"{name} density: pyramid sampling", wall, cpu))
        chunk_values = [size for key, size in fetched if "/c/" in key]
        reads[name] = (result, len(chunk_values), sum(chunk_values), memory.increase)
        results[name] = (points, result)

    print("\n| step | wall s | CPU s |\n|---|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.3f} | {cpu:.3f} |")
    print("\n| grid | samples per level 0..6 | chunks decoded per level | chunk values from the store (compressed MiB) "
          "| decoded MiB | % of level 0 | peak RSS increase MiB (grid + sampling) |\n|---|---|---|---|---|---|---|")
    for name, (result, count, compressed, rss) in reads.items():
        per_level = np.bincount(result.level.ravel(), minlength=len(levels)).tolist()
        decoded = result.stats.bytes_decoded
        print(f"| {name} | {per_level} | {result.stats.chunks_per_level} | {count} ({compressed / 2**20:.1f}) "
              f"| {decoded / 2**20:.1f} | {100 * decoded / full_bytes:.3f} | {rss / 2**20:.0f} |")
    print(f"(level 0: {full_bytes / 2**30:.2f} GiB decoded)")

    rng = np.random.default_rng(0)
    for name, (points, result) in results.items():
        naive_chunks = level0_chunks_under(points, levels[0].chunks[-1])
        chunk_bytes = 3 * levels[0].chunks[-2] * levels[0].chunks[-1]
        print(f"\n{name}: a level-0 bilinear read would decode {naive_chunks} chunks = "
              f"{100 * naive_chunks * chunk_bytes / full_bytes:.1f} % of level 0")
        flat_points = points.reshape(-1, 2)
        spacing = local_spacing(points).reshape(-1)
        level_of = result.level.reshape(-1)
        picks = np.concatenate([  # up to 80 random samples from each level used: fine levels count too
            rng.choice(np.flatnonzero(level_of == k), size=min(80, np.count_nonzero(level_of == k)), replace=False)
            for k in np.unique(level_of)
        ])
        reference = box_reference(level0, flat_points[picks], spacing[picks])
        ours = result.values.reshape(-1, 3)[picks]
        naive = bilinear_level0(level0, flat_points[picks])
        reads = {"pyramid sampling": (ours, result.stats.bytes_decoded), "bilinear read of level 0": (naive, None)}
        for label, (values, decoded) in other_level_choices(levels, factors, points, result).items():
            reads[label] = (values.reshape(-1, 3)[picks], decoded)
        for label, (values, decoded) in reads.items():
            error = np.abs(values - reference)
            share = "" if decoded is None else f" ({100 * decoded / full_bytes:.2f} % of level 0 decoded)"
            print(f"{name}: {label} vs box-filtered level 0 ({len(picks)} samples, ≤ 80 per level): mean abs error "
                  f"{error.mean():.2f}, 99th percentile {np.percentile(error, 99):.1f} grey levels{share}")
    print(f"\nload average after: {psutil.getloadavg()}")
    print("GPU: none in this session (CPU only)")


if __name__ == "__main__":
    main()
