"""K-fold cross-validation of the fundus training recipe over the real IDRiD images.

Each fold holds out ``len(images) / folds`` real images, trains the recipe of a config (by default
the bundled model's first stage, ``fundus_m2mrf_w18s_stage1.yaml``) from scratch on the others plus the same
semi-synthetic ``fundus_lesions`` images, and predicts its held-out images whole (the official
protocol: keep-ratio resize to the model's input size, logits back to full size, sigmoid). The
held-out probabilities of all folds are pooled into one :class:`~napari_m2mrf.metrics.LesionMetrics`,
so the report's AUPR and IoU are dataset-level over every real image, each scored by a model that
never saw it. ``--extra`` adds the ``idrid_extra`` photographs (coarse masks, see
:mod:`training.recipes.idrid_extra`) to every fold's training split; they are never scored.

Nothing is chosen on the scored images: each fold trains a fixed number of iterations and keeps
the last weights (no epoch selection), AUPR needs no threshold, and the IoU reported at a
threshold is cross-fitted: fold ``f``'s pixels are cut at the per-class threshold of best F1 on
the other folds' held-out pixels. The report also gives each fold's scores and the thresholds of
best F1 on all held-out pixels (the ones to ship with a model trained on everything).

``python -m training.recipes.fundus_cross_validation OUT --idrid DIR [--folds 5] [--iterations N]
[--extra DIR] [--jobs J] [--flips] [--init-from EARLIER_OUT]`` writes ``OUT/report.json``; data, runs and fold folders stay under ``OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError
from training.recipes import CHECKPOINTS, IMAGES, MASKS, TRAIN, VALIDATION
from training.recipes.bundle_checkpoint import THRESHOLD_CHOICES

DEFAULT_CONFIG = CHECKPOINTS / "fundus_m2mrf_w18s_stage1.yaml"


def fold_ids(ids: Sequence[str], folds: int) -> list[list[str]]:
    """``ids`` cut into ``folds`` consecutive groups of (nearly) equal size, in order."""
    if not 2 <= folds <= len(ids):
        raise UserError(f"--folds must be between 2 and the number of real images ({len(ids)}), not {folds}")
    bounds = [round(i * len(ids) / folds) for i in range(folds + 1)]
    return [list(ids[bounds[i] : bounds[i + 1]]) for i in range(folds)]


def link_tree(source: Path, target: Path, keep: Callable[[str], bool]) -> None:
    """Symlink every file under ``source`` whose name ``keep`` accepts to the same place under ``target``."""
    for path in sorted(source.rglob("*")):
        if path.is_file() and keep(path.name):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if not destination.exists():
                os.symlink(path.resolve(), destination)


def build_fold(out: Path, idrid: Path, generated: Path, held_out: Sequence[str], extra: Path | None = None) -> Path:
    """An IDRiD-layout folder: real images of ``held_out`` stems in the testing split, the other real
    images, every generated image and every image of the assembled ``extra`` set in the training
    split (links only)."""
    for kind in (IMAGES, MASKS):
        for path in sorted((idrid / kind / TRAIN).rglob("*")):
            if not path.is_file():
                continue
            stem = path.name.split(".")[0].rsplit("_", 1)[0] if kind == MASKS else path.stem
            split = VALIDATION if stem in held_out else TRAIN
            destination = out / kind / split / path.relative_to(idrid / kind / TRAIN)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if not destination.exists():
                os.symlink(path.resolve(), destination)
    if generated.is_dir():
        link_tree(generated, out, keep=lambda name: not name.startswith("IDRiD_"))
    if extra is not None:
        link_tree(extra, out, keep=lambda name: True)
    return out


TrainFold = Callable[[Path, Path, Path, int, int], Path]
"""Trains one fold: ``(recipe config, fold data root, run folder, iterations, threads)`` → checkpoint."""


def fold_config(config_path: Path, data_root: Path, run_dir: Path, iterations: int, threads: int) -> Path:
    """The recipe of ``config_path`` pointed at ``data_root`` and ``run_dir`` (no evaluation during
    training: the last weights are scored), saved beside ``run_dir``; returns the file."""
    from training.config import load_config, save_config

    config = load_config(config_path)
    config = config.model_copy(update={
        "data": config.data.model_copy(update={"root": str(data_root)}),
        "run": config.run.model_copy(
            update={"iterations": iterations, "eval_every": 0, "output_dir": str(run_dir), "threads": threads}
        ),
    })
    run_dir.mkdir(parents=True, exist_ok=True)
    return save_config(config, run_dir.parent / f"{run_dir.name}.yaml")


def train_fold(config_path: Path, data_root: Path, run_dir: Path, iterations: int, threads: int) -> Path:
    """Train the recipe of ``config_path`` on ``data_root`` into ``run_dir`` in a trainer process
    (resuming an interrupted run, skipping a finished one); returns its last checkpoint."""
    last = run_dir / "last.safetensors"
    if _finished(run_dir, iterations):
        return last
    config = fold_config(config_path, data_root, run_dir, iterations, threads)
    resume = ["--resume", "auto"] if (run_dir / "last.pt").exists() else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads > 0 else dict(os.environ)
    with open(run_dir.parent / f"{run_dir.name}.log", "a") as log:
        subprocess.run([sys.executable, "-m", "training", str(config), *resume], check=True, stdout=log, stderr=log, env=env)
    return last


def _finished(run_dir: Path, iterations: int) -> bool:
    """Whether ``run_dir``'s event log reached iteration ``iterations``."""
    events = run_dir / "events.jsonl"
    if not events.is_file():
        return False
    records = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    return any(record.get("event") == "iteration" and record.get("iteration") == iterations for record in records)


def held_out_metrics(checkpoint: Path, data_root: Path, flips: bool = False):
    """Predict the testing split of ``data_root`` whole with ``checkpoint`` (with test-time
    ``flips``); returns this fold's ``LesionMetrics`` (pixel counts, so folds add up)."""
    from napari_m2mrf.inference.fundus import FundusPredictor, Preprocessing
    from napari_m2mrf.metrics import LesionMetrics
    from napari_m2mrf.models import load_checkpoint
    from training.datasets import load_sample
    from training.sources import layout_records

    model, meta = load_checkpoint(checkpoint)
    predictor = FundusPredictor(model.float(), Preprocessing.from_meta(meta), "cpu")
    fold = LesionMetrics(FUNDUS_CLASSES)
    for record in layout_records(data_root, VALIDATION, tuple(FUNDUS_CLASSES)):
        sample = load_sample(record, FUNDUS_CLASSES, multilabel=True)
        fold.update(predictor.predict_whole(sample.image, flips=flips), sample.target)
    return fold


def cross_fitted_iou(fold_metrics: Sequence) -> dict[str, dict[str, float]]:
    """Per class: the IoU pooled over all folds when each fold is cut at the thresholds of best F1
    on the other folds' held-out pixels, and those thresholds per fold."""
    from napari_m2mrf.metrics import LesionMetrics

    intersections: dict[str, float] = {}
    unions: dict[str, float] = {}
    thresholds: dict[str, list[float]] = {}
    for number, fold in enumerate(fold_metrics):
        others = LesionMetrics(FUNDUS_CLASSES)
        for other_number, other in enumerate(fold_metrics):
            if other_number != number:
                others.merge(other)
        chosen = others.best_f1_thresholds()
        for code, threshold in chosen.items():
            intersection, union = fold.overlap_at(code, threshold)
            intersections[code] = intersections.get(code, 0.0) + intersection
            unions[code] = unions.get(code, 0.0) + union
            thresholds.setdefault(code, []).append(threshold)
    return {
        code: {"iou": intersections[code] / unions[code] if unions[code] else 0.0, "thresholds": thresholds[code]}
        for code in intersections
    }


def fine_tune_recipe(config_path: Path, init_from: Path, number: int, held_out: Sequence[str], out: Path) -> Path:
    """The recipe of ``config_path`` starting from fold ``number``'s last weights in the earlier
    cross-validation ``init_from``, saved as ``out/foldN_recipe.yaml``. ``UserError`` unless that
    fold held out exactly ``held_out`` (other weights would have trained on images this fold scores)."""
    from training.config import load_config, save_config

    weights = init_from / f"fold{number}" / "last.safetensors"
    earlier = init_from / f"fold{number}_data" / IMAGES / VALIDATION
    earlier_held_out = sorted(path.stem for path in earlier.glob("*")) if earlier.is_dir() else []
    if earlier_held_out != sorted(held_out):
        raise UserError(f"{init_from}: fold {number} held out {', '.join(earlier_held_out) or 'nothing'}, not "
                        f"{', '.join(held_out)}; its weights saw images this fold scores")
    if not weights.is_file():
        raise UserError(f"{weights}: no such checkpoint (has that cross-validation finished?)")
    config = load_config(config_path)
    config = config.model_copy(update={"model": config.model.model_copy(update={"init_checkpoint": str(weights.resolve())})})
    out.mkdir(parents=True, exist_ok=True)
    return save_config(config, out / f"fold{number}_recipe.yaml")


def _refuse_fixed_initial_weights(config_path: Path) -> None:
    """``UserError`` when the recipe fine-tunes fixed weights (``model.init_checkpoint``): weights
    trained on real images would reach folds that score those images; a second stage takes each
    fold's own weights through ``--init-from``."""
    from training.config import load_config

    weights = load_config(config_path).model.init_checkpoint
    if weights:
        raise UserError(f"{config_path} fine-tunes {weights}: one set of weights for every fold would have seen "
                        "images some fold scores; give --init-from an earlier cross-validation of the same folds "
                        "(each fold then starts from its own weights), or a recipe that trains from scratch")


def cross_validate(
    out: Path,
    idrid: Path,
    folds: int,
    iterations: int,
    config: Path,
    generated: int,
    threads: int,
    extra: Path | None = None,
    jobs: int = 1,
    flips: bool = False,
    train: TrainFold = train_fold,
    init_from: Path | None = None,
) -> dict:
    """Run every fold (``jobs`` trainings at once, resuming finished or interrupted ones) and write
    ``out/report.json``: under ``plain`` the official protocol's scores, and with ``flips`` also
    under ``flips`` those with test-time flips. ``train`` trains one fold (another machine's
    harness passes its own, e.g. one that stops at a deadline). ``init_from``: an earlier
    cross-validation of the same folds; each fold fine-tunes that one's weights (a second stage)."""
    from napari_m2mrf.metrics import LesionMetrics
    from sample_data.fundus_samples import write_fundus_dataset
    from training.recipes.idrid_extra import assemble_extra

    if init_from is None:
        _refuse_fixed_initial_weights(config)
    images = sorted((idrid / IMAGES / TRAIN).glob("*.jpg"))
    if not images:
        raise UserError(f"{idrid}: no IDRiD images under '{IMAGES}/{TRAIN}'")
    generated_root = out / "generated"
    if generated and not (generated_root / IMAGES).is_dir():
        write_fundus_dataset(generated_root, generated, seed=100, split=TRAIN)
    extra_root = None
    if extra is not None and (extra / IMAGES).is_dir():
        extra_root = extra  # assembled already (e.g. fitted copies carried to another machine)
    elif extra is not None:
        extra_root = out / "extra"
        assemble_extra(extra_root, extra)
    splits = fold_ids([image.stem for image in images], folds)
    roots = [
        build_fold(out / f"fold{number}_data", idrid, generated_root, held_out, extra_root)
        for number, held_out in enumerate(splits, start=1)
    ]
    recipes = [config] * folds
    if init_from is not None:
        recipes = [fine_tune_recipe(config, init_from, number, held_out, out) for number, held_out in enumerate(splits, start=1)]
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        checkpoints = list(pool.map(
            lambda number: train(recipes[number - 1], roots[number - 1], out / f"fold{number}", iterations, threads),
            range(1, folds + 1),
        ))
    report = {
        "recipe": str(config),
        "iterations_per_fold": iterations,
        "folds": folds,
        "real_images": [image.stem for image in images],
        "generated_images": generated,
        "extra_images": sorted(path.stem for path in (extra_root / IMAGES / TRAIN).glob("*.jpg")) if extra_root else [],
    }
    for name, with_flips in (("plain", False), ("flips", True))[: 2 if flips else 1]:
        fold_metrics = [held_out_metrics(checkpoint, root, with_flips) for root, checkpoint in zip(roots, checkpoints)]
        pooled = LesionMetrics(FUNDUS_CLASSES)
        for fold in fold_metrics:
            pooled.merge(fold)
        report[name] = {
            "pooled": pooled.compute(),
            "cross_fitted_iou": cross_fitted_iou(fold_metrics),
            "best_f1_thresholds": pooled.best_f1_thresholds(),
            "shipping_thresholds": pooled.best_f1_thresholds(THRESHOLD_CHOICES),
            "per_fold": [{"held_out": held_out, "metrics": fold.compute()} for held_out, fold in zip(splits, fold_metrics)],
        }
        for number, entry in enumerate(report[name]["per_fold"], start=1):
            mean = entry["metrics"]["mean"]["aupr_official_11pt"]
            print(f"{name}: fold {number}/{folds} {','.join(entry['held_out'])}: mAUPR {mean:.3f}", flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.fundus_cross_validation", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--idrid", type=Path, required=True, help="IDRiD 'A. Segmentation' folder")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=900, help="training iterations per fold")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the training recipe (YAML)")
    parser.add_argument("--generated", type=int, default=16, help="semi-synthetic images added to each fold")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--extra", type=Path, help="the idrid_extra folder (or its assembly by training.recipes.idrid_extra): "
                                                   "its photographs join every fold's training split")
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at once")
    parser.add_argument("--flips", action="store_true", help="also score with test-time flips (four passes per image)")
    parser.add_argument("--init-from", type=Path, help="an earlier cross-validation of the same folds: each fold "
                                                       "fine-tunes its last weights (a second stage)")
    args = parser.parse_args(argv)
    try:
        report = cross_validate(
            args.out, args.idrid, args.folds, args.iterations, args.config, args.generated, args.threads, args.extra, args.jobs, args.flips,
            init_from=args.init_from,
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for code, scores in report["plain"]["pooled"]["per_class"].items():
        print(f"{code}: AUPR {scores['aupr_official_11pt']:.3f} (dense {scores['aupr_dense']:.3f}) IoU {scores['iou']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
