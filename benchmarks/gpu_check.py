"""One prepared GPU check: CUDA tests, W48 inference and training speed, the slide model, a fundus run.

Run through ``bash scripts/gpu_check.sh OUT_DIR [--budget-s 480] [--tiny]`` (which sets up the
Python environment on the device machine first) or directly as
``python benchmarks/gpu_check.py OUT_DIR [--budget-s S] [--tiny|--full] [--idrid DIR]``.

Stages, each in its own child process (a crash, an error or a hang of one stage is recorded and
the next stage still runs; each child has its own CUDA context, so peak-memory figures are its own):

``cuda_tests``
    ``pytest -m cuda tests/test_cuda.py`` under ``scripts/gpu_pytest.ini`` with plugin autoloading
    off (no pytest-qt, pytest-xvfb, pydantic needed). Without CUDA every test skips.
``inference``
    Images/s of HRNetV2-W48 (vanilla) and M2MRF-HRNetV2-W48 variants A–D on a ``1×3×960×1440``
    input (IDRiD's official 1440×960), float32 and bf16 autocast (fp16 where bf16 is missing),
    channels_last, ``inference_mode``: warm-up, then rounds that run every model once in turn, each
    forward timed between ``torch.cuda.synchronize()`` calls; the figure is the median; the ratio
    is the variant's median seconds over vanilla's (1.10 = 10 % slower).
``training``
    Iterations/s of one M2MRF-HRNetV2-W48-A training step (binary Dice, SGD momentum) at batch
    ``4×3×960×1440`` under bf16 autocast (no gradient scaler needed for bf16), median after two
    warm-up steps, and the step's peak ``torch.cuda.max_memory_allocated``.
``slide``
    ``napari_m2mrf.inference.slide.run_slide_segmentation`` with the bundled
    ``slide_deformed_w18s`` on a 65536² synthetic slide: a procedurally rendered, lazy pyramid
    (:class:`SyntheticSlideLevel`, 512² chunks rendered on read, standing in for decoding) in place
    of a slide file, so the run needs no 12 GiB file; everything else — density map, grid, pyramid
    sampling, segmentation, reverse fill of level 0 into a zarr workspace, coarser levels,
    probability maps — is the real code path. Seconds per step from its progress messages.
``fundus``
    The bundled fundus recipe (``sample_data/checkpoints/fundus_m2mrf_w18s.yaml``) trained with
    ``python -m training`` for the time left: real IDRiD images (``--idrid``, else
    ``../shared/data/idrid_subset`` or ``.cache/gpu-wheelhouse/data/idrid_subset``) plus
    semi-synthetic ones, or generated images only. The iteration count comes from a short timing of
    the same network step; a ``STOP`` file ends the run cooperatively at the deadline. The
    checkpoint (``fundus/model.safetensors``), the effective config (``fundus/config.yaml``) and
    ``fundus.json`` (what ran, losses, metrics) are the hook for the later cross-validation.

Everything is written under ``OUT_DIR``: one ``<stage>.json`` per stage, the summary
``gpu_check.json`` (device, versions, every figure, each stage's wall time and error), the log
``gpu_check.log``; scratch files go to ``OUT_DIR/scratch`` and are deleted at the end (kept with
``--keep-scratch``). ``--tiny`` (chosen automatically without CUDA) runs every stage with tiny
sizes on the CPU so the check is exercised by the normal test suite (``tests/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LOG = logging.getLogger("gpu_check")

# (stage, seconds allotted out of the default 480 s budget, least seconds it needs to be worth starting)
STAGES: list[tuple[str, float, float]] = [
    ("cuda_tests", 70, 20),
    ("inference", 70, 20),
    ("training", 50, 15),
    ("slide", 110, 30),
    ("fundus", 180, 40),
]
DEFAULT_BUDGET_S = 480.0
GRACE_S = 20.0  # a stage child may run this long past its deadline before it is killed
W48_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "vanilla": ("hrnetv2_w48", {}),
    **{v: ("m2mrf_hrnetv2_w48", {"variant": v}) for v in "ABCD"},
}
TINY_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "vanilla": ("hrnetv2_w18s", {}),
    **{v: ("m2mrf_hrnetv2_w18s", {"variant": v}) for v in "ABCD"},
}
SLIDE_MODEL = "slide_deformed_w18s"


@dataclass
class Settings:
    """Sizes of one check run (full on a GPU, tiny on a CPU)."""

    tiny: bool
    device: str
    inference_size: tuple[int, int]  # (H, W) of the inference input
    inference_rounds: int
    inference_warmup: int
    training_size: tuple[int, int]
    training_batch: int
    training_steps: int
    slide_side: int  # level-0 pixels per side of the synthetic slide
    slide_outputs: tuple[int | None, ...]  # deformed-image sides to time (None: the checkpoint's)
    fundus_max_iterations: int

    @classmethod
    def for_run(cls, tiny: bool, device: str) -> Settings:
        if tiny:
            return cls(True, device, (32, 48), 2, 1, (32, 48), 2, 2, 4096, (None,), 2)
        return cls(False, device, (960, 1440), 20, 3, (960, 1440), 4, 8, 65536, (None, 512), 900)


# ----------------------------------------------------------------------------------------------
# helpers


def _now() -> float:
    return time.time()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_memory_bytes(device: str) -> tuple[int, str]:
    """Peak memory so far: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak RSS elsewhere."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss (CPU run)"


def _autocast_dtype(device: str):
    import torch

    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def device_info() -> dict[str, Any]:
    """Device name, torch/CUDA/cuDNN versions, Python, CPU count."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            device_name=torch.cuda.get_device_name(0),
            device_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        info["device_name"] = f"CPU ({platform.processor() or platform.machine()})"
    return info


# ----------------------------------------------------------------------------------------------
# stage a: CUDA tests


def stage_cuda_tests(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """``pytest -m cuda tests/test_cuda.py`` in isolation; counts from its JUnit XML."""
    import xml.etree.ElementTree as ET

    junit = scratch / "cuda_tests.xml"
    command = [
        sys.executable, "-m", "pytest", "-c", str(REPO / "scripts" / "gpu_pytest.ini"), "--rootdir", str(REPO),
        "-p", "no:cacheprovider", "-m", "cuda", "-q", f"--junitxml={junit}", str(REPO / "tests" / "test_cuda.py"),
    ]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    began = time.perf_counter()
    timeout = max(5.0, deadline - _now())
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - began
    for line in (completed.stdout + completed.stderr).splitlines():
        LOG.info("pytest | %s", line)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    cases: dict[str, str] = {}
    if junit.is_file():
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        for key in counts:
            counts[key] = int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                if case.find(tag) is not None:
                    outcome = tag
            cases[case.get("name", "?")] = outcome
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    if completed.returncode not in (0, 5) or counts["failures"] or counts["errors"]:
        raise RuntimeError(f"pytest exit code {completed.returncode}: {counts}")
    return {
        "figures": {"tests_collected": counts["tests"], "pytest_seconds": round(seconds, 2)},
        "results": {**counts, "passed": passed, "cases": cases, "exit_code": completed.returncode,
                    "command": " ".join(command)},
    }


# ----------------------------------------------------------------------------------------------
# stage b: W48 inference throughput


def stage_inference(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Images/s per model and precision (batch 1, median of timed forwards), ratio to vanilla."""
    import torch

    from napari_m2mrf.models import build_model

    device = settings.device
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    catalogue = TINY_MODELS if settings.tiny else W48_MODELS
    memory_format = torch.channels_last if device.startswith("cuda") else torch.contiguous_format
    models = {
        label: build_model(name, num_classes=4, **cfg).eval().to(device=device, memory_format=memory_format)
        for label, (name, cfg) in catalogue.items()
    }
    height, width = settings.inference_size
    x = torch.randn(1, 3, height, width, device=device).contiguous(memory_format=memory_format)
    precisions = {"fp32": None, "autocast": _autocast_dtype(device)}
    figures: dict[str, float] = {}
    results: dict[str, Any] = {
        "input": [1, 3, height, width], "models": {k: v[0] + (f" {v[1]['variant']}" if v[1] else "")
                                                   for k, v in catalogue.items()},
        "autocast_dtype": str(precisions["autocast"]).replace("torch.", ""), "channels_last": device.startswith("cuda"),
        "cudnn_benchmark": True, "per_precision": {},
    }
    # Each precision gets an equal share of the time left; rounds stop early at that share.
    for index, (precision, dtype) in enumerate(precisions.items()):
        share_end = _now() + (deadline - _now()) / (len(precisions) - index)
        times: dict[str, list[float]] = {label: [] for label in models}
        with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype or torch.float32,
                                                     enabled=dtype is not None):
            for label, model in models.items():
                for _ in range(settings.inference_warmup):
                    model(x)
            _synchronize(device)
            for _ in range(settings.inference_rounds):
                for label, model in models.items():
                    _synchronize(device)
                    start = time.perf_counter()
                    model(x)
                    _synchronize(device)
                    times[label].append(time.perf_counter() - start)
                if _now() > share_end and len(times["vanilla"]) >= 3:
                    break
        medians = {label: statistics.median(values) for label, values in times.items()}
        table = {}
        for label, median in medians.items():
            ratio = median / medians["vanilla"]
            table[label] = {"images_per_s": 1.0 / median, "median_s": median, "time_ratio_to_vanilla": ratio,
                            "within_10_percent": ratio <= 1.10, "rounds": len(times[label])}
            figures[f"{precision}.{label}.images_per_s"] = round(1.0 / median, 3)
            if label != "vanilla":
                figures[f"{precision}.{label}.time_ratio_to_vanilla"] = round(ratio, 4)
            LOG.info("inference %-8s %-7s %8.2f images/s  time vs vanilla %.3f", precision, label, 1 / median, ratio)
        results["per_precision"][precision] = table
    return {"figures": figures, "results": results}


# ----------------------------------------------------------------------------------------------
# stage c: W48-A training step


def stage_training(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Iterations/s and peak memory of M2MRF-HRNetV2-W48-A training steps under bf16 autocast."""
    import torch

    from napari_m2mrf.models import build_model
    from training.config import LossConfig, OptimConfig
    from training.losses import SegmentationLoss
    from training.networks import forward_losses
    from training.schedules import build_optimizer

    device = settings.device
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    name = "m2mrf_hrnetv2_w18s" if settings.tiny else "m2mrf_hrnetv2_w48"
    model = build_model(name, num_classes=4, variant="A").to(device).train()
    optimizer = build_optimizer(model.parameters(), OptimConfig())
    loss_fn = SegmentationLoss(LossConfig(name="dice"))
    batch = settings.training_batch
    height, width = settings.training_size
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, height, width, generator=generator).to(device)
    targets = (torch.rand(batch, 4, height, width, generator=generator) > 0.99).to(torch.uint8).to(device)
    # bf16 autocast on CUDA (fp16 + GradScaler where bf16 is missing); a CPU (tiny) run trains in float32,
    # as bf16 on most CPUs is emulated and many times slower (the inference stage still runs CPU bf16).
    dtype = _autocast_dtype(device) if device.startswith("cuda") else None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        _synchronize(device)
        began = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
            losses = forward_losses(model, model, images, targets, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            losses["loss"].backward()
            optimizer.step()
        else:
            scaler.scale(losses["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
        _synchronize(device)
        if not torch.isfinite(losses["loss"].detach()):
            raise RuntimeError("training loss is not finite")
        return time.perf_counter() - began

    warmup = [step() for _ in range(2)]
    times: list[float] = []
    for _ in range(settings.training_steps):
        times.append(step())
        if _now() > deadline - 2 * max(times) and len(times) >= 3:
            break
    median = statistics.median(times)
    peak, source = _peak_memory_bytes(device)
    LOG.info("training %s batch %d %dx%d: %.3f it/s, peak %.2f GiB (%s)", name, batch, height, width, 1 / median,
             peak / 2**30, source)
    return {
        "figures": {"iterations_per_s": round(1 / median, 4), "seconds_per_iteration": round(median, 4),
                    "peak_memory_gib": round(peak / 2**30, 3)},
        "results": {"model": f"{name} variant A", "input": [batch, 3, height, width],
                    "autocast_dtype": str(dtype).replace("torch.", "") if dtype else "none (float32)",
                    "grad_scaler": scaler is not None,
                    "optimizer": "SGD momentum 0.9 (training.schedules defaults)", "loss": "binary Dice",
                    "warmup_s": [round(t, 4) for t in warmup], "step_s": [round(t, 4) for t in times],
                    "peak_memory_source": source, "peak_memory_bytes": peak},
    }


# ----------------------------------------------------------------------------------------------
# stage d: the slide model on a synthetic 64k² slide


class SyntheticSlideLevel:
    """One level ``(3, Y, X)`` uint8 of a procedural H&E-like slide, rendered chunk by chunk on read.

    Pixel ``(r, c)`` of a level with downsample ``f`` is the slide's colour at level-0 position
    ``((r + 0.5)·f − 0.5, (c + 0.5)·f − 0.5)``: a smooth tissue field (a 48×48 random grid,
    bilinear), a few dozen round "tumour" regions, and a fine nuclear texture whose contrast fades
    at coarse levels as area averaging would. ``chunks`` tells the pyramid sampler the 512² grid.
    """

    CHUNK = 512

    def __init__(self, side: int, downsample: int, seed: int = 0) -> None:
        import numpy as np

        self.side, self.downsample = side, downsample
        length = -(-side // downsample)
        self.shape = (3, length, length)
        self.dtype = np.dtype(np.uint8)
        self.chunks = (3, self.CHUNK, self.CHUNK)
        self.ndim = 3
        rng = np.random.default_rng(seed)
        self._field = rng.random((48, 48)).astype(np.float32)
        count = 40
        self._regions = np.column_stack(
            [rng.uniform(0.1, 0.9, count) * side, rng.uniform(0.1, 0.9, count) * side,
             rng.uniform(0.005, 0.03, count) * side]
        )

    def _weights(self, positions):
        """Bilinear weights ``(n, 48)`` of the coarse field's grid at level-0 positions ``(n,)``."""
        import numpy as np

        grid = positions / self.side * 47.0
        low = np.clip(np.floor(grid).astype(np.int64), 0, 46)
        frac = (grid - low).astype(np.float32)
        weights = np.zeros((len(positions), 48), np.float32)
        rows = np.arange(len(positions))
        weights[rows, low] = 1 - frac
        weights[rows, low + 1] = frac
        return weights

    def render(self, rows: slice, cols: slice):
        """``(3, h, w)`` uint8 of the given level pixel rows and columns (steps of 1)."""
        import numpy as np

        f = self.downsample
        y = (np.arange(rows.start, rows.stop) + 0.5) * f - 0.5
        x = (np.arange(cols.start, cols.stop) + 0.5) * f - 0.5
        tissue = self._weights(y) @ self._field @ self._weights(x).T
        tissue = np.clip((tissue - 0.35) * 4.0, 0.0, 1.0)
        detail = max(0.0, 1.0 - f / 16.0)  # nuclei (period ~12 px) average out at coarse levels
        texture = detail * (np.sin(y * 0.53)[:, None] * np.sin(x * 0.47)[None, :]) ** 2
        tumour = np.zeros_like(tissue)
        for cy, cx, radius in self._regions:
            if cy + radius < y[0] or cy - radius > y[-1] or cx + radius < x[0] or cx - radius > x[-1]:
                continue
            inside = ((y[:, None] - cy) ** 2 + (x[None, :] - cx) ** 2) < radius**2
            tumour = np.maximum(tumour, inside.astype(np.float32))
        haem = tissue * (0.15 + 0.5 * texture + 0.45 * tumour)
        eosin = tissue * (0.5 - 0.2 * tumour)
        red = 245 - 80 * haem - 30 * eosin
        green = 245 - 170 * haem - 120 * eosin
        blue = 245 - 40 * haem - 60 * eosin
        return np.clip(np.stack([red, green, blue]), 0, 255).astype(np.uint8)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (3 - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        channel, rows, cols = key
        if not all(isinstance(k, slice) for k in (rows, cols)):
            raise TypeError("SyntheticSlideLevel reads slices of rows and columns only")
        rows = slice(*rows.indices(self.shape[1]))
        cols = slice(*cols.indices(self.shape[2]))
        if rows.step != 1 or cols.step != 1:
            raise TypeError("SyntheticSlideLevel reads contiguous slices only")
        return self.render(rows, cols)[channel]

    def __array__(self, dtype=None, copy=None):
        full = self[:]
        return full.astype(dtype) if dtype is not None else full


def synthetic_pyramid(side: int, source: Path, coarsest: int = 512):
    """A :class:`napari_m2mrf.io.pyramid.Pyramid` of :class:`SyntheticSlideLevel` down to ``coarsest`` px."""
    from napari_m2mrf.io.pyramid import Pyramid

    levels, downsamples, factor = [], [], 1
    while True:
        levels.append(SyntheticSlideLevel(side, factor))
        downsamples.append(float(factor))
        if side // factor <= coarsest:
            break
        factor *= 2
    return Pyramid(levels=levels, downsamples=downsamples, pixel_size_um=0.25, name="synthetic", source=source)


SLIDE_STEPS = {
    "loading": "load model",
    "deformation map": "density + grid",
    "sampling the slide": "pyramid sampling",
    "segmenting": "segmentation",
    "probability maps: block": "probability maps (finest level)",
    "reverse mapping": "reverse fill of level 0",
    "building coarser levels": "coarser label levels",
    "probability maps: coarser": "probability coarser levels",
    "done": "end",
}


def stage_slide(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Seconds of ``run_slide_segmentation`` (bundled slide model) on the synthetic slide, per output size."""
    import napari_m2mrf.io.slides as slides
    from napari_m2mrf.inference.slide import SlideRequest, run_slide_segmentation

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
            if index and _now() > deadline - 1.5 * runs[next(iter(runs))]["wall_s"]:
                LOG.info("slide: skipping output %s (deadline)", output)
                break
            marks: list[tuple[str, float]] = []

            def progress(done: int, total: int, message: str) -> None:
                step = next((name for prefix, name in SLIDE_STEPS.items() if message.startswith(prefix)), None)
                if step and (not marks or marks[-1][0] != step):
                    marks.append((step, time.perf_counter()))

            request = SlideRequest(SLIDE_MODEL, device=device, output_size=(output, output) if output else None,
                                   workspace=scratch / f"slide{index}.m2mrf.zarr", workers=workers)
            cpu, start = time.process_time(), time.perf_counter()
            result = run_slide_segmentation(source, request, progress=progress)
            wall = time.perf_counter() - start
            marks.append(("end", time.perf_counter()))
            steps = {name: round(marks[i + 1][1] - t, 3) for i, (name, t) in enumerate(marks[:-1]) if name != "end"}
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


# ----------------------------------------------------------------------------------------------
# stage e: the fundus recipe for the time left


def _find_idrid(explicit: str | None) -> Path | None:
    candidates = [Path(explicit)] if explicit else [
        REPO.parent / "shared" / "data" / "idrid_subset",
        REPO / "shared" / "data" / "idrid_subset",
        REPO / ".cache" / "gpu-wheelhouse" / "data" / "idrid_subset",
    ]
    return next((path for path in candidates if (path / "1. Original Images").is_dir()), None)


def _assemble_idrid(out: Path, idrid: Path, generated: int) -> None:
    """The bundled recipe's data set (real IDRiD 09/10 held out + ``generated`` semi-synthetic images)."""
    try:
        from training.recipes.fundus_training_set import assemble
    except ImportError:  # before the recipes moved
        from sample_data.fundus_training_set import assemble  # type: ignore[no-redef]
    assemble(out, idrid, ["09", "10"], generated)


def _step_seconds(config, device: str, steps: int = 5) -> float:
    """Median seconds of one training step of ``config``'s network at its crop and batch (fp16 + GradScaler)."""
    import torch

    from napari_m2mrf.models import build_model
    from training.losses import SegmentationLoss
    from training.networks import forward_losses
    from training.schedules import build_optimizer

    model = build_model(config.model.name, num_classes=len(config.data.classes), **config.model.options)
    model = model.to(device).train()
    optimizer = build_optimizer(model.parameters(), config.optim)
    loss_fn = SegmentationLoss(config.loss)
    images = torch.randn(config.run.batch_size, 3, *config.augment.crop, device=device)
    targets = (torch.rand(config.run.batch_size, len(config.data.classes), *config.augment.crop, device=device) > 0.99)
    targets = targets.to(torch.uint8)
    amp = device.startswith("cuda") and config.run.amp
    scaler = torch.amp.GradScaler("cuda") if amp else None
    times = []
    for _ in range(2 + steps):
        _synchronize(device)
        began = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=torch.float16, enabled=amp):
            loss = forward_losses(model, model, images, targets, loss_fn)["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        _synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times[2:])


def stage_fundus(settings: Settings, out: Path, scratch: Path, deadline: float, idrid: str | None = None) -> dict[str, Any]:
    """Train the bundled fundus recipe with ``python -m training`` until the deadline; keep checkpoint + config."""
    from training.config import load_config, save_config

    recipe = REPO / "sample_data" / "checkpoints" / "fundus_m2mrf_w18s.yaml"
    config = load_config(recipe)
    values = config.to_dict()
    real = _find_idrid(idrid) if (idrid or not settings.tiny) else None
    began = time.perf_counter()
    if real is not None:
        data_dir = scratch / "fundus_data"
        generated = 2 if settings.tiny else 48
        _assemble_idrid(data_dir, real, generated)
        values["data"]["root"] = str(data_dir)
        data = {"source": "IDRiD subset + semi-synthetic", "idrid": str(real), "held_out": ["IDRiD_09", "IDRiD_10"],
                "generated_train": generated, "recipe": "training.recipes.fundus_training_set.assemble"}
    else:
        count, val = (1, 1) if settings.tiny else (48, 2)
        values["data"] = {**values["data"], "kind": "generated", "root": str(scratch / "generated"),
                          "train_split": "train", "val_split": "", "generated_train": count, "generated_val": val,
                          "generated_seed": 0}
        data = {"source": "generated (sample_data.fundus semi-synthetic)", "generated_train": count,
                "generated_val": val, "why": "no IDRiD subset found" if not settings.tiny else "tiny mode"}
    if settings.tiny:
        values["augment"].update(resize=[96, 144], crop=[64, 64])
        values["run"]["batch_size"] = 2
    values["run"].update(device=settings.device, output_dir=str(scratch / "fundus_run"), threads=0,
                         eval_every=0, checkpoint_every=0, tensorboard=False)
    values["data"]["num_workers"] = 0 if settings.tiny else min(8, max(0, (os.cpu_count() or 1) - 2))
    from training.config import TrainingConfig

    config = TrainingConfig.from_dict(values, "gpu_check fundus config")
    data_seconds = time.perf_counter() - began

    if settings.tiny:
        step_s, iterations = 0.0, settings.fundus_max_iterations
    else:
        step_s = _step_seconds(config, settings.device)
        # data loading and the end-of-run evaluation come on top of the network step: factor 2, 45 s
        left = deadline - _now() - 45.0
        iterations = int(max(20, min(settings.fundus_max_iterations, left / (2.0 * step_s))))
    config = config.with_overrides([f"run.iterations={iterations}",
                                    f"run.checkpoint_every={max(1, iterations // 5)}"], "gpu_check")
    config_path = save_config(config, out / "fundus" / "config.yaml")
    command = [sys.executable, "-m", "training", str(config_path)]
    LOG.info("fundus: %s iterations (network step %.3f s), data %s", iterations, step_s, data["source"])
    events, stopped_by_deadline = _run_trainer(command, Path(config.run.output_dir), deadline)

    run_dir = Path(config.run.output_dir)
    chosen = next((run_dir / name for name in ("best.safetensors", "last.safetensors") if (run_dir / name).is_file()),
                  None)
    if chosen is None:
        raise RuntimeError("the trainer saved no checkpoint")
    model_path = out / "fundus" / "model.safetensors"
    shutil.copyfile(chosen, model_path)
    iterations_done = [e for e in events if e.get("event") == "iteration"]
    evaluations = [e for e in events if e.get("event") == "evaluation"]
    seconds = [e["seconds"] for e in iterations_done if "seconds" in e]
    losses = [e.get("losses", {}).get("loss") for e in iterations_done]
    finished = next((e for e in events if e.get("event") == "finished"), {})
    figures = {
        "iterations_done": len(iterations_done),
        "train_wall_s": round(sum(seconds), 2) if seconds else 0.0,
        "median_s_per_iteration": round(statistics.median(seconds), 4) if seconds else 0.0,
        "checkpoint_MiB": round(model_path.stat().st_size / 2**20, 3),
    }
    return {
        "figures": {k: v for k, v in figures.items() if v},
        "results": {
            "command": " ".join(command), "config": str(config_path.relative_to(out)),
            "checkpoint": str(model_path.relative_to(out)), "checkpoint_from": chosen.name,
            "recipe": str(recipe.relative_to(REPO)), "data": data, "data_preparation_s": round(data_seconds, 2),
            "iterations_planned": iterations, "network_step_s_estimate": round(step_s, 4) if step_s else None,
            "stopped_by_deadline": stopped_by_deadline, "finished": finished,
            "loss_first_last": [losses[0], losses[-1]] if losses else None,
            "loss_every_10": losses[::10],
            "evaluations": evaluations,
            "cross_validation_hook": "load fundus/model.safetensors with napari_m2mrf.models.load_checkpoint; "
                                     "fundus/config.yaml is the effective trainer config (data paths point at the "
                                     "deleted scratch folder; 'data' above says how to rebuild the set)",
        },
    }


def _run_trainer(command: list[str], run_dir: Path, deadline: float) -> tuple[list[dict], bool]:
    """Run the trainer, collecting its JSON events; at the deadline ask it to stop (``STOP`` file, then SIGTERM)."""
    events: list[dict] = []
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stopped = False

    def watchdog() -> None:
        nonlocal stopped
        while process.poll() is None:
            if _now() > deadline - 15 and not stopped:
                stopped = True
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "STOP").touch()
                LOG.info("fundus: deadline near, asking the trainer to stop")
            if _now() > deadline + 5:
                process.send_signal(signal.SIGTERM)
            if _now() > deadline + GRACE_S / 2:
                process.kill()
            time.sleep(0.5)

    import threading

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        if line.startswith("{"):
            try:
                event = json.loads(line)
                events.append(event)
                if event.get("event") != "iteration" or event.get("iteration", 0) % 25 == 0:
                    LOG.info("trainer | %s", line[:300])
                continue
            except json.JSONDecodeError:
                pass
        LOG.info("trainer | %s", line)
    code = process.wait()
    guard.join(timeout=2)
    if code not in (0, -signal.SIGTERM):
        raise RuntimeError(f"trainer exit code {code}")
    return events, stopped


# ----------------------------------------------------------------------------------------------
# orchestration

STAGE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "cuda_tests": stage_cuda_tests,
    "inference": stage_inference,
    "training": stage_training,
    "slide": stage_slide,
    "fundus": stage_fundus,
}


def run_stage_child(args: argparse.Namespace) -> int:
    """Child process: run one stage, write ``OUT/<stage>.json``."""
    out, scratch = Path(args.out_dir), Path(args.out_dir) / "scratch"
    settings = Settings.for_run(args.tiny, args.device)
    began = time.perf_counter()
    record: dict[str, Any] = {"stage": args.stage, "ok": False, "tiny": args.tiny, "device": args.device}
    try:
        extra = {"idrid": args.idrid} if args.stage == "fundus" else {}
        record.update(STAGE_FUNCTIONS[args.stage](settings, out, scratch, args.deadline, **extra))
        record["ok"] = True
    except Exception as exc:  # recorded; the parent goes on with the next stage
        LOG.exception("stage %s failed", args.stage)
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["wall_s"] = round(time.perf_counter() - began, 2)
    _write_json(out / f"{args.stage}.json", record)
    return 0 if record["ok"] else 1


def _stream(process: subprocess.Popen, log_file) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sys.stderr.write(line)
        log_file.write(line)
        log_file.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="total seconds (default 480)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", default=None, help="tiny sizes (default without CUDA)")
    size.add_argument("--full", dest="tiny", action="store_false", help="full sizes even without CUDA")
    parser.add_argument("--stages", nargs="+", choices=list(STAGE_FUNCTIONS), default=list(STAGE_FUNCTIONS))
    parser.add_argument("--idrid", help="IDRiD 'A. Segmentation' subset for the fundus stage")
    parser.add_argument("--keep-scratch", action="store_true")
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)  # epoch seconds the budget counts from
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    if args.stage:
        return run_stage_child(args)

    started = args.started or _now()
    end = started + args.budget_s
    out: Path = args.out_dir.resolve()
    scratch = out / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    info = device_info()
    tiny = (not info["cuda_available"]) if args.tiny is None else args.tiny
    device = "cuda" if info["cuda_available"] else "cpu"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "NAPARI_M2MRF_CACHE": str(scratch / "cache"), "TMPDIR": str(scratch / "tmp"),
           "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX", str(scratch / "pycache")),
           "MPLCONFIGDIR": str(scratch / "mpl"), "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"),
           "PYTHONUNBUFFERED": "1"}
    (scratch / "tmp").mkdir(exist_ok=True)
    summary: dict[str, Any] = {
        "check": "napari-m2mrf GPU check", "mode": "tiny" if tiny else "full", "device": info,
        "budget_s": args.budget_s, "setup_s": round(_now() - started, 2), "stages": {}, "figures": {},
    }
    chosen = [stage for stage in STAGES if stage[0] in args.stages]
    scale = 1.0 if not tiny else 0.25
    with open(out / "gpu_check.log", "a", encoding="utf-8") as log_file:
        log_file.write(f"gpu check {time.strftime('%Y-%m-%d %H:%M:%S')} mode {summary['mode']} device {info}\n")
        for index, (name, allotted, _) in enumerate(chosen):
            reserve = sum(least for _, _, least in chosen[index + 1 :]) * scale
            deadline = min(_now() + allotted * args.budget_s / DEFAULT_BUDGET_S, end - reserve)
            if name == "fundus":
                deadline = end - 5
            record: dict[str, Any]
            if deadline - _now() < 5:
                record = {"stage": name, "ok": False, "error": "skipped: no time left in the budget", "wall_s": 0.0}
                summary["stages"][name] = record
                continue
            began = time.perf_counter()
            command = [sys.executable, str(Path(__file__).resolve()), str(out), "--stage", name, "--deadline",
                       str(deadline), "--device", device] + (["--tiny"] if tiny else ["--full"])
            command += ["--idrid", args.idrid] if args.idrid else []
            LOG.info("stage %s: %.0f s until its deadline", name, deadline - _now())
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
            import threading

            reader = threading.Thread(target=_stream, args=(process, log_file), daemon=True)
            reader.start()
            try:
                process.wait(timeout=max(1.0, deadline - _now() + GRACE_S))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            reader.join(timeout=5)
            path = out / f"{name}.json"
            if path.is_file():
                record = json.loads(path.read_text(encoding="utf-8"))
            else:
                record = {"stage": name, "ok": False, "error": f"no result (exit code {process.returncode}; "
                          f"killed past its deadline)" if process.returncode and process.returncode < 0 else
                          f"no result (exit code {process.returncode})"}
                _write_json(path, record)
            record["wall_s_with_startup"] = round(time.perf_counter() - began, 2)
            summary["stages"][name] = {k: v for k, v in record.items() if k != "results"}
            for key, value in (record.get("figures") or {}).items():
                summary["figures"][f"{name}.{key}"] = value
            LOG.info("stage %s: %s in %.1f s", name, "ok" if record.get("ok") else record.get("error"),
                     record["wall_s_with_startup"])
        summary["total_s"] = round(_now() - started, 2)
        summary["errors"] = {name: r["error"] for name, r in summary["stages"].items() if r.get("error")}
        _write_json(out / "gpu_check.json", summary)
        log_file.write(f"gpu check done in {summary['total_s']} s; errors: {summary['errors'] or 'none'}\n")
    if not args.keep_scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    LOG.info("summary: %s", out / "gpu_check.json")
    return 0 if not summary["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
