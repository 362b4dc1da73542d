"""Reverse fill (the paper's Π): our exact nearest-sample fill against two scipy baselines, same process.

Cases (probability maps, float32):

* 4×4096×4096 from 256×256 samples;
* 19×1024×2048 from 64×128 samples (the Cityscapes setting of the paper).

Samples lie on a deformed grid (the deformed sampler applied to a random blobby density).

* (a) official-style: the C×H×W map is NaN except at each sample's pixel, a 3-D
  ``NearestNDInterpolator`` is built over the (class, y, x) of the valid pixels next to a missing
  one and evaluated at every missing (class, y, x) — as the official code's ``'nearest'`` mode;
* (b) a 2-D ``NearestNDInterpolator`` over the sample positions, evaluated at every pixel centre;
* ours: :class:`napari_m2mrf.sampling.reverse.ReverseSampler`, 1 and 2 threads.

Times are wall and process-CPU seconds, best of 3 runs for ours, of 2 for (b), one run of (a)
(the VM is shared, so wall times are noisy; CPU seconds much less so); peak RSS is sampled every
2 ms above the level before the call. Agreement is the fraction of identical output values (ties may differ).

Usage: ``.venv/bin/python benchmarks/bench_reverse_fill.py [--skip-official]``
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Self

import numpy as np
import psutil
import torch
from scipy.interpolate import NearestNDInterpolator
from scipy.ndimage import binary_dilation

from napari_m2mrf.models.deform import DeformedSampler, grid_to_pixels
from napari_m2mrf.sampling.reverse import ReverseSampler


class PeakRSS:
    """Highest resident set size (bytes) above the starting level while the block runs."""

    def __enter__(self) -> Self:
        self._process = psutil.Process()
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def increase(self) -> int:
        return self.peak - self.start


def timed(run: Callable[[], np.ndarray], repeats: int = 1) -> tuple[np.ndarray, float, float, int]:
    """Result, wall seconds, CPU seconds, peak RSS increase (bytes) of ``run()``; best of ``repeats``."""
    best = (np.inf, np.inf, 0)
    for _ in range(repeats):
        result = None  # free the previous result before the next run
        with PeakRSS() as memory:
            wall, cpu = time.perf_counter(), time.process_time()
            result = run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best = (min(best[0], wall), min(best[1], cpu), max(best[2], memory.increase))
    return result, *best


def deformed_points(image_size: tuple[int, int], grid_size: tuple[int, int], seed: int) -> np.ndarray:
    """``h×w×2`` level-0 (y, x) positions of a deformed grid over ``image_size``."""
    generator = torch.Generator().manual_seed(seed)
    h, w = grid_size
    coarse = torch.randn(1, 1, 8, 8, generator=generator) * 2.0
    logits = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic")
    density = torch.softmax(logits.reshape(1, -1), dim=1).reshape(1, 1, h, w)
    grid = DeformedSampler(sigma=max(h, w) / 16)(density, (h, w))
    return grid_to_pixels(grid.double(), image_size)[0].numpy()


def official_style_fill(points: np.ndarray, probabilities: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """3-D (class, y, x) nearest fill of a map that is NaN except at the samples' pixels."""
    channels = probabilities.shape[0]
    height, width = image_size
    filled = np.full((channels, height, width), np.nan, dtype=np.float32)
    rows = np.clip(np.rint(points[..., 0]), 0, height - 1).astype(np.int64).ravel()
    cols = np.clip(np.rint(points[..., 1]), 0, width - 1).astype(np.int64).ravel()
    filled[:, rows, cols] = probabilities.reshape(channels, -1)  # collisions: last write wins
    missing = np.isnan(filled)
    border = ~missing & binary_dilation(missing, structure=np.ones((1, 3, 3), dtype=bool))
    known = np.argwhere(border)
    interpolator = NearestNDInterpolator(known.astype(np.float64), filled[border])
    wanted = np.argwhere(missing)
    for start in range(0, len(wanted), 1 << 22):  # evaluated in pieces to bound the query memory
        part = wanted[start : start + (1 << 22)]
        filled[part[:, 0], part[:, 1], part[:, 2]] = interpolator(part.astype(np.float64))
    return filled


def two_d_fill(points: np.ndarray, probabilities: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """2-D nearest fill: NearestNDInterpolator over the positions, evaluated at every pixel centre."""
    channels = probabilities.shape[0]
    interpolator = NearestNDInterpolator(points.reshape(-1, 2), probabilities.reshape(channels, -1).T)
    rows, cols = np.mgrid[0 : image_size[0], 0 : image_size[1]]
    centres = np.stack((rows.ravel(), cols.ravel()), axis=1).astype(np.float64)
    return interpolator(centres).T.reshape(channels, *image_size)


def our_fill(points: np.ndarray, probabilities: np.ndarray, image_size: tuple[int, int], workers: int) -> np.ndarray:
    sampler = ReverseSampler(points, probabilities, workers=workers)
    return sampler.fill(slice(0, image_size[0]), slice(0, image_size[1]))


def run_case(channels: int, image_size: tuple[int, int], grid_size: tuple[int, int], official: bool) -> None:
    points = deformed_points(image_size, grid_size, seed=channels)
    probabilities = np.random.default_rng(0).random((channels, *grid_size), dtype=np.float32)
    output_mb = channels * image_size[0] * image_size[1] * 4 / 2**20
    print(f"\n## {channels}×{image_size[0]}×{image_size[1]} from {grid_size[0]}×{grid_size[1]} samples "
          f"(output {output_mb:.0f} MiB)")
    rows = {}
    ours, *rows["ours, 1 thread"] = timed(lambda: our_fill(points, probabilities, image_size, workers=1), repeats=3)
    _, *rows["ours, 2 threads"] = timed(lambda: our_fill(points, probabilities, image_size, workers=2), repeats=3)
    two_d, *rows["(b) 2-D NearestNDInterpolator"] = timed(
        lambda: two_d_fill(points, probabilities, image_size), repeats=2
    )
    agreement = {"(b) 2-D NearestNDInterpolator": float(np.mean(two_d == ours))}
    del two_d
    if official:
        official_map, *rows["(a) official-style 3-D NNDI"] = timed(
            lambda: official_style_fill(points, probabilities, image_size)
        )
        agreement["(a) official-style 3-D NNDI"] = float(np.mean(official_map == ours))
        del official_map
    base_wall, base_cpu = rows["ours, 1 thread"][0], rows["ours, 1 thread"][1]
    print("| method | wall s | CPU s | peak RSS increase MiB | wall / ours (1 thread) | CPU / ours "
          "| identical values |")
    print("|---|---|---|---|---|---|---|")
    for name, (wall, cpu, rss) in rows.items():
        same = f"{agreement[name]:.4f}" if name in agreement else "—"
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss / 2**20:.0f} | {wall / base_wall:.1f}× | "
              f"{cpu / base_cpu:.1f}× | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-official", action="store_true", help="skip the slow 3-D baseline (a)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"load average before: {psutil.getloadavg()}")
    run_case(4, (4096, 4096), (256, 256), official=not args.skip_official)
    run_case(19, (1024, 2048), (64, 128), official=not args.skip_official)
    print(f"\nload average after: {psutil.getloadavg()}")


if __name__ == "__main__":
    main()
