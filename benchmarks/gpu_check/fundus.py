"""Stage ``fundus``: the bundled fundus recipe cross-validated on the real images, for the time left.

The recipe (the bundled model's first stage,
``sample_data/checkpoints/fundus_m2mrf_w18s_stage1.yaml``, from scratch) goes through the project's
own cross-validation (:func:`training.recipes.fundus_cross_validation.cross_validate`): two folds
over the real IDRiD images (``--idrid``, else a subset found by :func:`.fundus_data.find_idrid`),
each training on the other half plus the idrid_extra photographs (when found) and semi-synthetic
images, then scoring its held-out half whole, with and without test-time flips. The iterations per
fold come from a short timing of the network step and the time left; each fold's trainer gets its
share of the deadline (a ``STOP`` file ends it cooperatively). In tiny mode generated images stand
in for the real ones. Kept: each fold's checkpoint ``fundus/foldN.safetensors``, the effective
recipe ``fundus/recipe.yaml``, the report ``fundus/cross_validation.json``, ``fundus/README.txt``
(how to rerun it) and ``fundus.json`` (what ran, losses, the cross-validated figures).
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
CV_DIR = "scratch/cross_validation"  # the cross-validation's folder, relative to OUT_DIR
FOLDS = 2
EVALUATION_S = 45.0  # seconds kept from the training budget for the trainers' start and the scoring
DATA_OVERHEAD = 2.0  # an iteration takes about this many network steps (data loading comes on top)


def stage_fundus(settings: Settings, out: Path, scratch: Path, deadline: float) -> dict[str, Any]:
    """Cross-validate the recipe until ``deadline`` (epoch seconds); keep checkpoints, recipe, report."""
    from training.config import TrainingConfig, load_config, save_config
    from training.recipes import CHECKPOINTS
    from training.recipes.fundus_cross_validation import cross_validate, fold_config

    began = time.perf_counter()
    recipe = CHECKPOINTS / "fundus_m2mrf_w18s_stage1.yaml"
    real = fundus_data.find_idrid(settings.idrid) if (settings.idrid or not settings.tiny) else None
    real_is_generated = real is None
    if real is None:
        real = fundus_data.tiny_real_set(out, 4, 0.5) if settings.tiny else fundus_data.tiny_real_set(out, 10, 1.0)
    extra = None if settings.tiny else fundus_data.find_extra()
    generated = 0 if settings.tiny else 16
    values = load_config(recipe).to_dict()
    if settings.tiny:
        values["augment"].update(resize=[96, 144], crop=[64, 64])
        values["run"]["batch_size"] = 2
    values["run"].update(device=settings.device, checkpoint_every=0, tensorboard=False)
    values["data"]["num_workers"] = 0 if settings.tiny else min(8, max(0, (os.cpu_count() or 1) - 2))
    config = TrainingConfig.from_dict(values, "gpu_check fundus recipe")
    recipe_path = save_config(config, out / "fundus" / "recipe.yaml")
    preparation_s = time.perf_counter() - began

    if settings.tiny:
        step_s, iterations = 0.0, settings.fundus_max_iterations
    else:
        step_s = _step_seconds(config, settings.device)
        share = (deadline - time.time() - EVALUATION_S) / FOLDS
        iterations = int(max(20, min(settings.fundus_max_iterations, share / (DATA_OVERHEAD * step_s))))
    LOG.info("fundus: %d folds × %d iterations (network step %.3f s), scored on %s", FOLDS, iterations, step_s,
             "generated stand-ins" if real_is_generated else real)

    train_end = deadline - EVALUATION_S / 3
    runs: dict[str, dict[str, Any]] = {}

    def train(config_path: Path, data_root: Path, run_dir: Path, fold_iterations: int, threads: int) -> Path:
        """One fold in a trainer process, stopped at its share of the time left."""
        fold_deadline = time.time() + (train_end - time.time()) / (FOLDS - len(runs))
        fold_yaml = fold_config(config_path, data_root, run_dir, fold_iterations, threads)
        events, stopped = run_trainer([sys.executable, "-m", "training", str(fold_yaml)], out, run_dir, fold_deadline)
        runs[run_dir.name] = {"events": events, "stopped_by_deadline": stopped}
        return run_dir / "last.safetensors"

    cv_dir = out / CV_DIR
    report = cross_validate(cv_dir, real, FOLDS, iterations, recipe_path, generated, threads=0, extra=extra,
                            jobs=1, flips=True, train=train)
    shutil.copyfile(cv_dir / "report.json", out / "fundus" / "cross_validation.json")
    checkpoints = []
    for number in range(1, FOLDS + 1):
        target = out / "fundus" / f"fold{number}.safetensors"
        shutil.copyfile(cv_dir / f"fold{number}" / "last.safetensors", target)
        checkpoints.append(str(target.relative_to(out)))
    readme = _write_readme(out / "fundus" / "README.txt", real, real_is_generated, extra, generated, iterations)
    return _record(report, runs, checkpoints, out, recipe, readme, real, real_is_generated, extra, generated,
                   iterations, step_s, preparation_s)


def _record(report: dict[str, Any], runs: dict[str, dict[str, Any]], checkpoints: list[str], out: Path, recipe: Path,
            readme: Path, real: Path, real_is_generated: bool, extra: Path | None, generated: int, iterations: int,
            step_s: float, preparation_s: float) -> dict[str, Any]:
    """``fundus.json``'s figures (positive numbers only) and results."""
    steps = [e for run in runs.values() for e in run["events"] if e.get("event") == "iteration"]
    seconds = [e["seconds"] for e in steps if "seconds" in e]
    plain, flips = report["plain"]["pooled"]["mean"], report["flips"]["pooled"]["mean"]
    figures = {
        "folds": FOLDS,
        "iterations_done": len(steps),
        "train_wall_s": round(sum(seconds), 2) if seconds else 0.0,
        "median_s_per_iteration": round(statistics.median(seconds), 4) if seconds else 0.0,
        "cv_mean_aupr_official": round(plain["aupr_official_11pt"], 4),
        "cv_mean_aupr_official_flips": round(flips["aupr_official_11pt"], 4),
        "checkpoint_MiB": round((out / checkpoints[0]).stat().st_size / 2**20, 3),
    }
    per_class = {
        variant: {code: round(scores["aupr_official_11pt"], 4) for code, scores in report[variant]["pooled"]["per_class"].items()}
        for variant in ("plain", "flips")
    }
    return {
        "figures": {k: v for k, v in figures.items() if v},
        "results": {
            "recipe": str(recipe.relative_to(REPO)), "effective_recipe": "fundus/recipe.yaml",
            "data": fundus_data.describe(real, real_is_generated, extra, generated),
            "checkpoints": checkpoints, "report": "fundus/cross_validation.json",
            "cv_aupr_official_per_class": per_class,
            "data_preparation_s": round(preparation_s, 2),
            "iterations_planned_per_fold": iterations, "network_step_s_estimate": round(step_s, 4) if step_s else None,
            "folds": {
                name: {"iterations_done": sum(1 for e in run["events"] if e.get("event") == "iteration"),
                       "stopped_by_deadline": run["stopped_by_deadline"],
                       "loss_every_10": [e.get("losses", {}).get("loss") for e in run["events"]
                                         if e.get("event") == "iteration"][::10]}
                for name, run in runs.items()
            },
            "readme": str(readme.relative_to(out)),
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


def _write_readme(path: Path, real: Path, real_is_generated: bool, extra: Path | None, generated: int,
                  iterations: int) -> Path:
    """``fundus/README.txt``: what the files are and the command that reruns the cross-validation."""
    extra_option = f" --extra '{extra}'" if extra else ""
    lines = [
        "The GPU check's fundus cross-validation (benchmarks/gpu_check/fundus.py).",
        "",
        "foldN.safetensors        fold N's last weights (napari_m2mrf.models.load_checkpoint); fold N never saw",
        "                         the real images it is scored on (cross_validation.json: per_fold[N-1].held_out)",
        "recipe.yaml              the recipe as run (the bundled one with this machine's device and workers)",
        "cross_validation.json    pooled and per-fold AUPR / IoU, plain and with test-time flips, cross-fitted IoU",
        "",
        f"Scored on: {'generated stand-ins (no IDRiD subset found, or tiny mode)' if real_is_generated else real}.",
        f"Every fold also trained on {generated} semi-synthetic images"
        + (f" and the idrid_extra photographs ({extra})." if extra else "."),
        "Rerun it, from the repository root:",
        f"  python -m training.recipes.fundus_cross_validation CV_DIR --idrid '{real}'{extra_option} --folds {FOLDS} "
        f"--iterations {iterations} --generated {generated} --flips --config OUT_DIR/fundus/recipe.yaml",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
