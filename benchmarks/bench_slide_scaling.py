"""How the cost of a slide run grows with the slide: 32768², 65536² and 131072² procedural slides.

The slides are :mod:`benchmarks.gpu_check.synthetic_slide` pyramids (H&E-like, rendered chunk by chunk
on read: no 48 GB file is written); the run reads them through the real code path
(``run_slide_segmentation`` with ``ensure_pyramid`` pointed at the procedural pyramid, as the GPU
check does). The model is the bundled slide model (``slide_deformed_w18s``) at a fixed sample budget
(its own output size unless ``--output`` is given, passed explicitly: left to itself a run would match
the grid to the model's training scale, 2× per side on the larger 0.25 µm slides), so the network's work
is the same for every size.

Each size runs in a child process of its own (fresh memory, torch warm-up included in every row):

* ``labels on screen s``: Run until the lazy result is handed out (model load, density, pyramid
  sampling, segmentation, the lazy level objects with their coarse levels ≤ 1 Mpx filled) — what the
  Segment widget waits for before the label layer appears;
* ``view ms``: filling one 1600×1000 screen of the lazy level 0 (zoomed in to full resolution, cold
  cache) and the whole coarse level napari shows the whole slide with (≤ 1024², already filled);
* ``saved s``: Run until the full pyramids (labels and probabilities, every level), sampling points,
  deformation map and provenance are published in the workspace;
* ``peak RSS``: the child's highest resident set size (psutil, sampled every 20 ms), before the
  save and over the whole run;
* ``level 0 decoded``: pixels of level 0 the run rendered (read) over all of level 0, counted by a
  wrapper around the procedural levels (the counting a ``tests/counting_store.CountingStore``
  does for a zarr store), and the chunks the sampler reports per level.

Then a least-squares fit of ``log(time)`` and ``log(memory)`` against ``log(area)`` gives the growth
exponents (1 = linear in the area, 0 = flat).

Run: ``nohup .venv/bin/python benchmarks/bench_slide_scaling.py > scaling.json 2> scaling.log &``
(``--sizes 32768 65536`` for fewer, ``--no-save`` for the lazy part alone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (32768, 65536, 131072)
SCREEN = (1000, 1600)  # level pixels of one zoomed-in screen


class PeakRss:
    """Highest RSS of this process seen by a 20 ms sampling thread (MiB); ``mark()`` snapshots the peak so far."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def mib(self) -> float:
        self.peak = max(self.peak, self.process.memory_info().rss)
        return round(self.peak / 2**20, 1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def child(size: int, output: int | None, save: bool) -> dict:
    """One run on a ``size``² procedural slide, in this (child) process."""
    rss = PeakRss()
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import napari_m2mrf.io.slides as slides
    from benchmarks.gpu_check.synthetic_slide import SyntheticSlideLevel, synthetic_pyramid
    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation, save_slide_result

    rendered: dict[int, int] = {}

    class Counted(SyntheticSlideLevel):
        def render(self, rows: slice, cols: slice) -> np.ndarray:
            level = int(np.log2(self.downsample))
            rendered[level] = rendered.get(level, 0) + (rows.stop - rows.start) * (cols.stop - cols.start)
            return super().render(rows, cols)

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        source = Path(tmp) / "synthetic_slide"  # never created: the pyramid is procedural
        pyramid = synthetic_pyramid(size, source)
        pyramid.levels[:] = [Counted(size, int(f)) for f in pyramid.downsamples]
        slides.ensure_pyramid = lambda path, **kwargs: pyramid
        model = resolve("slide_deformed_w18s")
        grid = (output, output) if output else tuple(model.metadata["deformed"]["output_size"])  # a fixed budget
        request = SlideRequest(model, device="cpu", workspace=Path(tmp) / "slide.m2mrf.zarr", output_size=grid)
        start = time.perf_counter()
        cpu = time.process_time()
        result = run_slide_segmentation(source, request, save=False)
        on_screen = time.perf_counter() - start
        rss_on_screen = rss.mib()
        # what napari asks for: the whole coarse level it shows the whole slide with, one full-resolution screen
        coarse = next(level for level in result.label_levels if max(level.level_shape) <= 1024)
        t = time.perf_counter()
        np.asarray(coarse[:, :])
        coarse_ms = (time.perf_counter() - t) * 1000
        y, x = size // 2, size // 3
        t = time.perf_counter()
        np.asarray(result.label_levels[0][y : y + SCREEN[0], x : x + SCREEN[1]])
        screen_ms = (time.perf_counter() - t) * 1000
        row = {
            "size": size,
            "level0_megapixels": round(size * size / 1e6),
            "samples": int(result.labels.size),
            "labels_on_screen_s": round(on_screen, 2),
            "coarse_view_ms": round(coarse_ms, 1),
            "coarse_view_shape": list(coarse.level_shape),
            "screen_view_ms": round(screen_ms, 1),
            "peak_rss_on_screen_MiB": rss_on_screen,
            "level0_decoded_fraction": rendered.get(0, 0) / (size * size),
            "rendered_pixels_per_level": {str(k): v for k, v in sorted(rendered.items())},
            "chunks_per_level": {str(k): v for k, v in sorted(result.read.chunks_per_level.items())},
        }
        if save:
            save_slide_result(result)
            row["saved_s"] = round(time.perf_counter() - start, 2)
            row["save_only_s"] = round(result.save_seconds, 2)
            row["workspace_MiB"] = round(sum(p.stat().st_size for p in request.workspace.rglob("*") if p.is_file())
                                         / 2**20, 1)
        row["cpu_s"] = round(time.process_time() - cpu, 1)
        row["peak_rss_MiB"] = rss.mib()
    rss.stop()
    return row


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) against log(x)."""
    import numpy as np

    pairs = [(x, y) for x, y in zip(xs, ys) if y and y > 0]
    if len(pairs) < 2:
        return None
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--output", type=int, default=None, help="deformed-image side (default: the model's)")
    parser.add_argument("--no-save", action="store_true", help="measure the lazy result only")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.output, not args.no_save)))
        return
    import psutil

    rows = []
    for size in args.sizes:
        command = [sys.executable, __file__, "--child", str(size)]
        if args.output:
            command += ["--output", str(args.output)]
        if args.no_save:
            command.append("--no-save")
        load_before = os.getloadavg()[0]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"size {size}: child failed ({done.returncode})")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["load_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    areas = [float(r["size"]) ** 2 for r in rows]
    exponents = {key: slope(areas, [r.get(key) for r in rows])
                 for key in ("labels_on_screen_s", "screen_view_ms", "peak_rss_on_screen_MiB", "saved_s",
                             "save_only_s", "peak_rss_MiB", "level0_decoded_fraction")}
    print(json.dumps({"machine": f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB",
                      "rows": rows, "log_log_slope_vs_area": exponents}, indent=2))


if __name__ == "__main__":
    main()
