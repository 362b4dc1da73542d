"""Stage ``fundus``: the bundled fundus recipe trained with ``python -m training`` for the time left.

The recipe (``sample_data/checkpoints/fundus_m2mrf_w18s.yaml``) trains on real IDRiD images
(``--idrid``, else a subset found by :func:`.fundus_data.find_idrid`) plus semi-synthetic ones, or
on generated images only. The iteration count comes from a short timing of the same network step;
a ``STOP`` file ends the run cooperatively at the deadline. The trainer runs in ``OUT_DIR``, so
the paths in the effective config are relative to ``OUT_DIR``. Kept for the later
cross-validation: the checkpoint ``fundus/model.safetensors``, that config ``fundus/config.yaml``,
``fundus/README.txt`` (how to rebuild the data and rerun or cross-validate) and ``fundus.json``
(what ran, losses, metrics, the data recipe).
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import fundus_data
from .settings import REPO, Settings
from .train_step import TimedTrainingStep
from .trainer_process import run_trainer

LOG = logging.getLogger("gpu_check")
RUN_DIR = "scratch/fundus_run"  # the trainer's output folder, relative to OUT_DIR
EVALUATION_S = 45.0  # seconds kept from the iteration budget for the trainer's start and end-of-run evaluation
DATA_OVERHEAD = 2.0  # an iteration takes about this many network steps (data loading comes on top)


def stage_fundus(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Train the recipe until ``deadline`` (epoch seconds); keep checkpoint, config and README."""
    from training.config import TrainingConfig, load_config, save_config
    from training.recipes import CHECKPOINTS

    recipe = CHECKPOINTS / "fundus_m2mrf_w18s.yaml"
    values = load_config(recipe).to_dict()
    real = fundus_data.find_idrid(settings.idrid) if (settings.idrid or not settings.tiny) else None
    began = time.perf_counter()
    if real is not None:
        generated = 2 if settings.tiny else 48
        fundus_data.assemble_idrid(out, real, generated)
        values["data"] = fundus_data.idrid_section(values["data"])
        data = fundus_data.describe_idrid(real, generated)
    else:
        count, val = (1, 1) if settings.tiny else (48, 2)
        values["data"] = fundus_data.generated_section(values["data"], count, val)
        data = fundus_data.describe_generated(count, val, "no IDRiD subset found" if not settings.tiny else "tiny mode")
    if settings.tiny:
        values["augment"].update(resize=[96, 144], crop=[64, 64])
        values["run"]["batch_size"] = 2
    values["run"].update(device=settings.device, output_dir=RUN_DIR, threads=0,
                         eval_every=0, checkpoint_every=0, tensorboard=False)
    values["data"]["num_workers"] = 0 if settings.tiny else min(8, max(0, (os.cpu_count() or 1) - 2))
    config = TrainingConfig.from_dict(values, "gpu_check fundus config")
    data_seconds = time.perf_counter() - began

    if settings.tiny:
        step_s, iterations = 0.0, settings.fundus_max_iterations
    else:
        step_s = _step_seconds(config, settings.device)
        left = deadline - time.time() - EVALUATION_S
        iterations = int(max(20, min(settings.fundus_max_iterations, left / (DATA_OVERHEAD * step_s))))
    config = config.with_overrides([f"run.iterations={iterations}",
                                    f"run.checkpoint_every={max(1, iterations // 5)}"], "gpu_check")
    config_path = save_config(config, out / "fundus" / "config.yaml")
    command = [sys.executable, "-m", "training", str(config_path.relative_to(out))]
    LOG.info("fundus: %s iterations (network step %.3f s), data %s", iterations, step_s, data["source"])
    events, stopped_by_deadline = run_trainer(command, out, out / RUN_DIR, deadline)

    run_dir = out / RUN_DIR
    chosen = next((run_dir / name for name in ("best.safetensors", "last.safetensors") if (run_dir / name).is_file()),
                  None)
    if chosen is None:
        raise RuntimeError("the trainer saved no checkpoint")
    model_path = out / "fundus" / "model.safetensors"
    shutil.copyfile(chosen, model_path)
    readme = _write_readme(out / "fundus" / "README.txt", data, iterations)
    iterations_done = [e for e in events if e.get("event") == "iteration"]
    seconds = [e["seconds"] for e in iterations_done if "seconds" in e]
    losses = [e.get("losses", {}).get("loss") for e in iterations_done]
    figures = {
        "iterations_done": len(iterations_done),
        "train_wall_s": round(sum(seconds), 2) if seconds else 0.0,
        "median_s_per_iteration": round(statistics.median(seconds), 4) if seconds else 0.0,
        "checkpoint_MiB": round(model_path.stat().st_size / 2**20, 3),
    }
    return {
        "figures": {k: v for k, v in figures.items() if v},
        "results": {
            "command": " ".join(command), "cwd": "OUT_DIR", "config": str(config_path.relative_to(out)),
            "checkpoint": str(model_path.relative_to(out)), "checkpoint_from": chosen.name,
            "recipe": str(recipe.relative_to(REPO)), "data": data,
            "data_preparation_s": round(data_seconds, 2),
            "iterations_planned": iterations, "network_step_s_estimate": round(step_s, 4) if step_s else None,
            "stopped_by_deadline": stopped_by_deadline,
            "finished": next((e for e in events if e.get("event") == "finished"), {}),
            "loss_first_last": [losses[0], losses[-1]] if losses else None,
            "loss_every_10": losses[::10],
            "evaluations": [e for e in events if e.get("event") == "evaluation"],
            "readme": str(readme.relative_to(out)),
            "cross_validation_hook": "load fundus/model.safetensors with napari_m2mrf.models.load_checkpoint; "
                                     "fundus/config.yaml is the effective trainer config, its paths relative to "
                                     "OUT_DIR; fundus/README.txt (and 'data' above) says how to rebuild its data "
                                     "and rerun or cross-validate it",
        },
    }


def _step_seconds(config: Any, device: str, steps: int = 5) -> float:
    """Median seconds of one training step of ``config``'s network at its crop and batch (float16
    autocast + GradScaler on CUDA when ``run.amp``), after two warm-up steps."""
    from napari_m2mrf.models import build_model
    from training.losses import SegmentationLoss
    from training.schedules import build_optimizer

    classes = len(config.data.classes)
    model = build_model(config.model.name, num_classes=classes, **config.model.options).to(device).train()
    images = torch.randn(config.run.batch_size, 3, *config.augment.crop, device=device)
    targets = (torch.rand(config.run.batch_size, classes, *config.augment.crop, device=device) > 0.99).to(torch.uint8)
    amp = device.startswith("cuda") and config.run.amp
    step = TimedTrainingStep(model, build_optimizer(model.parameters(), config.optim), SegmentationLoss(config.loss),
                             images, targets, device, torch.float16 if amp else None)
    times = [step() for _ in range(2 + steps)]
    return statistics.median(times[2:])


def _write_readme(path: Path, data: dict[str, Any], iterations: int) -> Path:
    """``fundus/README.txt``: how the recorded config's data is rebuilt and the run repeated."""
    lines = [
        "The GPU check's fundus run (benchmarks/gpu_check/fundus.py).",
        "",
        "model.safetensors  the checkpoint (napari_m2mrf.models.load_checkpoint)",
        "config.yaml        the effective trainer config; its paths (data.root, run.output_dir) are relative",
        "                   to OUT_DIR, the folder holding this 'fundus' folder, and point into",
        "                   OUT_DIR/scratch, which the check deletes at its end (unless --keep-scratch)",
        "",
        f"Data: {data['source']}, {data['generated_train']} generated training images"
        + (f", IDRiD from {data['idrid']} (on the machine that ran the check), "
           f"{' and '.join(data['held_out'])} held out for validation" if "idrid" in data else "") + ".",
        "Rebuild it, from OUT_DIR with the repository on PYTHONPATH:",
        f"  {data['rebuild']}",
        "",
        f"Rerun the training ({iterations} iterations), from OUT_DIR:",
        "  python -m training fundus/config.yaml",
    ]
    if "idrid" in data:
        lines += [
            "Cross-validate this recipe over the real IDRiD images (the recipe replaces data.root and",
            "run.output_dir with its own folders):",
            "  python -m training.recipes.fundus_cross_validation CV_DIR --idrid IDRID_DIR --config fundus/config.yaml "
            f"--generated {data['generated_train']} --iterations {iterations}",
        ]
    else:
        lines += [
            "This run had generated data only (data.kind: generated); a cross-validation needs an IDRiD subset",
            "and the recipe's IDRiD data section, e.g.:",
            "  python -m training.recipes.fundus_cross_validation CV_DIR --idrid IDRID_DIR "
            "--config sample_data/checkpoints/fundus_m2mrf_w18s.yaml",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
