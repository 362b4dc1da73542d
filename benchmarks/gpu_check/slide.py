"""Stage ``slide``: ``run_slide_segmentation`` with the bundled slide model on a synthetic slide.

The slide is the procedural, lazy pyramid of :mod:`.synthetic_slide` (65536² at full size, 512²
chunks rendered on read, standing in for decoding) in place of a slide file, so the run needs no
12 GiB file; everything else — density map, grid, pyramid sampling, segmentation, reverse fill of
level 0 into a zarr workspace, coarser levels, probability maps — is the real code path. Seconds
per step come from its progress messages.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .settings import Settings
from .slide_steps import StepClock
from .synthetic_slide import synthetic_pyramid

LOG = logging.getLogger("gpu_check")

SLIDE_MODEL = "slide_deformed_w18s"


def stage_slide(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Seconds of ``run_slide_segmentation`` on the synthetic slide, per deformed-image output size;
    a further output size is skipped when 1.5× the first run's wall time would pass ``deadline``."""
    import napari_m2mrf.io.slides as slides
    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation

    model = resolve(SLIDE_MODEL)
    default = tuple(model.metadata["deformed"]["output_size"])  # None below: this grid, not one matched to µm
    source = scratch / "synthetic_slide"  # never created: the pyramid is procedural
    pyramid = synthetic_pyramid(settings.slide_side, source)
    original = slides.ensure_pyramid
    slides.ensure_pyramid = lambda path, **kwargs: pyramid  # the run reads the lazy pyramid instead of a file
    device = settings.device
    workers = max(2, min(16, os.cpu_count() or 2))
    figures: dict[str, float] = {}
    runs: dict[str, Any] = {}
    try:
        for index, output in enumerate(settings.slide_outputs):
            if index and time.time() > deadline - 1.5 * runs[next(iter(runs))]["wall_s"]:
                LOG.info("slide: skipping output %s (deadline)", output)
                break
            clock = StepClock()
            request = SlideRequest(model, device=device, output_size=(output, output) if output else default,
                                   workspace=scratch / f"slide{index}.m2mrf.zarr", workers=workers)
            cpu, start = time.process_time(), time.perf_counter()
            result = run_slide_segmentation(source, request, progress=clock)
            wall = time.perf_counter() - start
            steps = clock.seconds(3)
            h, w = result.labels.shape
            label = f"{h}x{w}"
            runs[label] = {
                "wall_s": round(wall, 2), "cpu_s": round(time.process_time() - cpu, 2), "steps_s": steps,
                "samples": int(h * w), "chunks_per_level": result.read.chunks_per_level,
                "bytes_decoded_MiB": round(result.read.bytes_decoded / 2**20, 1),
                "probability_downsample": result.probability_downsample,
            }
            figures[f"{label}.wall_s"] = round(wall, 3)
            figures[f"{label}.megapixels_per_s"] = round(settings.slide_side**2 / 1e6 / wall, 2)
            for name, seconds in steps.items():
                if seconds > 0:
                    figures[f"{label}.{name}_s"] = seconds
            LOG.info("slide %d² output %s: %.2f s wall %s", settings.slide_side, label, wall, steps)
            shutil.rmtree(request.workspace, ignore_errors=True)
    finally:
        slides.ensure_pyramid = original
    return {
        "figures": figures,
        "results": {"model": SLIDE_MODEL, "slide": f"synthetic {settings.slide_side}² RGB uint8, 512² chunks, "
                    f"{len(pyramid.levels)} levels (procedural, rendered on read)", "device": device,
                    "workers": workers, "runs": runs},
    }
