"""Sampling dots in napari: 512×512 = 262,144 points, a naive Points layer vs ``SamplingDots``.

Runs a real napari viewer (needs a display: ``xvfb-run -a``). One process, one viewer, a
32768²-pixel world (a small image scaled up stands in for the slide) and a deformed 512×512
sampling grid (a blobby density through the paper's deformed sampler). For each representation:

* **add**: seconds to add the layer and draw the first frame;
* **frames**: a scripted camera path (zoom from the whole slide in to 1/64 of its width and back,
  panning at every zoom level); each step sets the camera, lets the event loop run and forces a
  synchronous repaint of the canvas. Reported: median and worst step (the worst is the longest
  the event loop was blocked by that step), as wall milliseconds;
* the ratio naive / ours for each figure; the slide alone (an empty Points layer) is the floor
  (software OpenGL under Xvfb repaints the canvas slowly whatever it shows). Both dot layers use
  the same dot settings (size, ``canvas_size_limits``, no border, no antialiasing).

``SamplingDots`` updates are throttled (80 ms), so the benchmark waits out the throttle and then
times the update itself as part of the following step, exactly what a user sees.

Run: ``xvfb-run -a .venv/bin/python benchmarks/bench_sampling_dots.py [--grid 512] [--steps 40]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

WORLD = 32768


def deformed_points(grid: int, seed: int = 0) -> np.ndarray:
    """``grid×grid×2`` level-0 ``(y, x)`` positions over a 32768² slide from a blobby density."""
    import torch

    from napari_m2mrf.models.deform import DeformedSampler, grid_to_pixels

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    density = np.full((64, 64), 0.2)
    for _ in range(6):
        cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.04, 0.12)
        density += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) * rng.uniform(2, 6)
    density_t = torch.from_numpy(density / density.sum()).float()[None, None]
    grid_t = DeformedSampler(sigma=6.0)(density_t, (grid, grid))
    return grid_to_pixels(grid_t[0], (WORLD, WORLD)).numpy()


def blank_slide() -> list:
    """A lazy 32768² multiscale grey image (dask zeros, 512 chunks): the slide layer stand-in."""
    import dask.array as da

    return [da.zeros((WORLD >> k, WORLD >> k), np.uint8, chunks=512) for k in range(7)]


def camera_path(steps: int) -> list[tuple[float, tuple[float, float]]]:
    """(zoom factor over the fit-to-view zoom, centre) for each step: zoom in 64× and out, panning."""
    path = []
    rng = np.random.default_rng(1)
    zooms = np.geomspace(1, 64, steps // 2).tolist()
    for zoom in zooms + zooms[::-1]:
        half = WORLD / (2 * zoom)
        centre = (float(rng.uniform(half, WORLD - half)), float(rng.uniform(half, WORLD - half)))
        path.append((zoom, centre))
    return path


def run_path(viewer, path, settle_ms: int) -> list[float]:
    from qtpy.QtWidgets import QApplication

    from napari_m2mrf.widgets.view import camera

    cam = camera(viewer)
    native = viewer.window._qt_viewer.canvas._scene_canvas.native
    viewer.reset_view()
    base_zoom = cam.zoom
    times = []
    for zoom, centre in path:
        start = time.perf_counter()
        cam.zoom = base_zoom * zoom
        cam.center = centre
        QApplication.processEvents()
        native.repaint()
        times.append(time.perf_counter() - start)
        if settle_ms:  # let the throttled update fire; it is timed with the next step
            deadline = time.perf_counter() + settle_ms / 1000
            while time.perf_counter() < deadline:
                QApplication.processEvents()
                time.sleep(0.005)
    return times


def measure(viewer, add, settle_ms: int, path) -> dict:
    from qtpy.QtWidgets import QApplication

    native = viewer.window._qt_viewer.canvas._scene_canvas.native
    start = time.perf_counter()
    layer = add()
    QApplication.processEvents()
    native.repaint()
    added = time.perf_counter() - start
    frames = run_path(viewer, path, settle_ms)
    shown = len(layer.data)
    viewer.layers.remove(layer)
    QApplication.processEvents()
    return {
        "add_s": round(added, 3),
        "median_step_ms": round(1000 * statistics.median(frames), 1),
        "worst_step_ms": round(1000 * max(frames), 1),
        "points_in_layer_at_end": shown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=512)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()

    import napari

    from napari_m2mrf.inference.slide import relative_sample_density
    from napari_m2mrf.widgets.slide_layers import (
        DOT_ANTIALIASING,
        DOT_CANVAS_PX,
        UPDATE_THROTTLE_MS,
        density_colors,
        show_sampling_dots,
    )

    points = deformed_points(args.grid)
    density = relative_sample_density(points, (WORLD, WORLD))
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    image = viewer.add_image(blank_slide(), multiscale=True, contrast_limits=(0, 255), name="slide")
    path = camera_path(args.steps)
    spacing = WORLD / args.grid

    def naive():
        flat = points.reshape(-1, 2)
        limits = tuple(np.percentile(density, [1, 99]))
        return viewer.add_points(flat, size=spacing / 3, border_width=0, canvas_size_limits=DOT_CANVAS_PX,
                                 antialiasing=DOT_ANTIALIASING, face_color=density_colors(density.ravel(), limits),
                                 name="naive dots")

    def ours():
        return show_sampling_dots(viewer, image, points, density).layer

    def nothing():
        return viewer.add_points(np.empty((0, 2)), name="no dots")

    results = {
        "grid": f"{args.grid}x{args.grid} = {args.grid * args.grid:,} points",
        "baseline (slide, no dots)": measure(viewer, nothing, 0, path),
        "naive": measure(viewer, naive, 0, path),
        "ours": measure(viewer, ours, UPDATE_THROTTLE_MS + 20, path),
    }
    naive_r, ours_r = results["naive"], results["ours"]
    results["ratio naive/ours"] = {
        key: round(naive_r[key] / max(ours_r[key], 1e-9), 1) for key in ("add_s", "median_step_ms", "worst_step_ms")
    }
    print(json.dumps(results, indent=2))
    viewer.close()


if __name__ == "__main__":
    main()
