"""Opening and showing the 32768² sample slide in napari: seconds and extra RSS.

Runs a real napari viewer (needs a display: ``xvfb-run -a``). For each format (OME-Zarr,
OME-TIFF) in a fresh child process: create the viewer, show a 2048×2048 in-memory RGB image as
the baseline (open + first screenshot), then open the slide with this plugin's reader and take a
screenshot (which draws the tiles in view at the chosen zoom). Reported: wall and CPU seconds
(all threads) from ``viewer.open`` to the drawn screenshot (the first open includes importing
zarr, dask and tifffile), the RSS it added, and the ratio to the baseline.

Run: ``xvfb-run -a .venv/bin/python benchmarks/bench_open_slide.py [--slide DIR]``
(``DIR`` holds ``slide.ome.zarr`` and ``slide.ome.tif``; default: ``sample_slide()``, generated
into the user cache on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
import numpy as np, psutil, napari
process = psutil.Process()
viewer = napari.Viewer(show=True)
def timed(action):
    rss = process.memory_info().rss
    start, cpu = time.perf_counter(), time.process_time()
    action()
    viewer.screenshot(canvas_only=True)
    return time.perf_counter() - start, time.process_time() - cpu, (process.memory_info().rss - rss) / 2**20
base = timed(lambda: viewer.add_image(np.random.default_rng(0).integers(0, 255, (2048, 2048, 3), dtype=np.uint8)))
viewer.layers.clear()
viewer.screenshot(canvas_only=True)
slide = timed(lambda: viewer.open(sys.argv[1], plugin="napari-m2mrf"))
names = [layer.name for layer in viewer.layers]
shape = viewer.layers[0].data[0].shape
print(json.dumps({"base": base, "slide": slide, "layers": names, "shape": list(shape)}))
viewer.close()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=None, help="folder with slide.ome.zarr and slide.ome.tif")
    args = parser.parse_args()
    if args.slide is None:
        from sample_data.slide_sample import sample_slide

        args.slide = sample_slide().ome_zarr.parent
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)")
    print("| what | wall s | CPU s | extra RSS MiB | ratio to baseline (wall) |")
    print("|---|---|---|---|---|")
    for name in ("slide.ome.zarr", "slide.ome.tif"):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.slide / name)], cwd=ROOT, capture_output=True, text=True, check=True
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        (base_s, base_cpu, base_mib), (slide_s, slide_cpu, slide_mib) = result["base"], result["slide"]
        side = "×".join(str(n) for n in result["shape"][:2])
        print(f"| baseline: add a 2048×2048 RGB array, first draw | {base_s:.2f} | {base_cpu:.2f} | {base_mib:.0f} | 1 |")
        print(f"| open {name} ({side}, layers {', '.join(result['layers'])}), first draw | {slide_s:.2f} | "
              f"{slide_cpu:.2f} | {slide_mib:.0f} | {slide_s / base_s:.1f}× |")


if __name__ == "__main__":
    main()
