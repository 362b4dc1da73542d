"""Deformed-downsample inference on the 32768² sample slide: seconds per stage, bytes decoded, peak RSS.

One process, two runs of ``run_slide_segmentation`` with the same randomly initialised slide
model (HRNetV2-W18-small behind the paper's deformation module; the weights do not change the
cost) and a 512×512 output (262,144 samples): the learned deformed sampler, then the uniform
baseline through the same steps. Each run writes a full workspace (``labels/prediction`` at
32768² with its pyramid, the per-class float16 probability pyramid, sampling points, deformation
map) into a temporary folder.

Reported per run: wall seconds per stage (from the progress messages), CPU seconds, bytes the
pyramid sampling decoded against the bytes of the whole level 0 (what sampling level 0 alone would
decode), the probability pyramid's size on disk, peak RSS above the level before the run (sampled
every 20 ms), and the ratio learned / uniform.

Run: ``.venv/bin/python benchmarks/bench_slide_inference.py [--output 512] [--device cpu]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path


class PeakRss:
    """Highest resident set size seen by a 20 ms sampling thread, in MiB above the start."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def increase_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def run_once(slide: Path, model: Path, sampler: str, output: int, device: str, workspace: Path) -> dict:
    from benchmarks.gpu_check.slide_steps import StepClock
    from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation
    from napari_m2mrf.io.slides import open_pyramid
    from napari_m2mrf.sampling.pyramid import level_bytes

    clock = StepClock()
    request = SlideRequest(str(model), device=device, sampler=sampler, output_size=(output, output), workspace=workspace)
    cpu = time.process_time()
    with PeakRss() as rss:
        start = time.perf_counter()
        result = run_slide_segmentation(slide, request, progress=clock)
        wall = time.perf_counter() - start
    stages = clock.seconds(2)
    level0 = level_bytes(open_pyramid(slide).levels[0])
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "stages_s": stages,
        "chunks_per_level": result.read.chunks_per_level,
        "bytes_decoded_MiB": round(result.read.bytes_decoded / 2**20, 1),
        "level0_bytes_MiB": round(level0 / 2**20, 1),
        "decoded_fraction_of_level0": round(result.read.bytes_decoded / level0, 4),
        "probabilities_on_disk_MiB": round(_folder_bytes(workspace / "probabilities") / 2**20, 2),
        "peak_rss_increase_MiB": round(rss.increase_mib),
    }


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))  # benchmarks.gpu_check.slide_steps
    sys.path.insert(0, str(root / "tests"))
    from slide_helpers import save_slide_model

    from sample_data.slide_sample import sample_slide

    slide = sample_slide().ome_zarr
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = save_slide_model(tmp / "slide.safetensors", output_size=(args.output, args.output),
                                 density_size=(args.output // 4, args.output // 4))
        results = {"slide": str(slide), "output": f"{args.output}x{args.output}", "device": args.device}
        for sampler in ("learned", "uniform"):
            results[sampler] = run_once(slide, model, sampler, args.output, args.device, tmp / f"{sampler}.m2mrf.zarr")
        learned, uniform = results["learned"], results["uniform"]
        results["ratio learned/uniform"] = {
            key: round(learned[key] / max(uniform[key], 1e-9), 2)
            for key in ("wall_s", "cpu_s", "bytes_decoded_MiB", "peak_rss_increase_MiB")
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
