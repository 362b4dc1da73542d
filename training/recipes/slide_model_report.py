"""The bundled slide model and its report: learned deformed sampler vs uniform sampler, same budget.

``python -m training.recipes.slide_model_report`` (add ``--no-bundle`` to leave the bundled checkpoint alone):

1. generates the slides the config lists (training, validation) and the held-out test slides
   that are missing (:mod:`training.recipes.training_slides`: the sample slide's generator, other seeds);
2. trains the config (``deform.sampler: deformed``) and the same config with ``deform.sampler:
   uniform`` — same output size (sampling budget), iterations, seed — into ``<output_dir>`` and
   ``<output_dir>_uniform``, unless a run has finished (an interrupted run is resumed);
3. scores each run's best checkpoint on the held-out test slides at the training view (the
   slide's level read by the trainer, 1024² for 32768² slides): the low-resolution argmax labels
   are put back by the reverse sampler (nearest sample, Jin et al.'s Π∘G⁻¹) and compared with the
   ground truth at that resolution. IoU per class with intersections and unions pooled over the
   slides; mIoU over the lesion classes and over all classes (background included); the intrinsic
   upsampling IoU(Π(G⁻¹(G(Y))), Y) of each sampler and the share of samples each class receives
   over its share of the pixels (the paper's A.4) alongside;
4. prints the table, writes ``<output_dir>/report.json`` and bundles the deformed run's best model
   with int8 weights as ``sample_data/checkpoints/<config stem>.safetensors``, with the µm per
   sample it was trained at (:mod:`training.slide_scale`), its provenance carrying the config, the validation scores, the report (with the shipped weights' own test
   scores) and the model's output on a fixed input.

Trains nothing when both runs are finished: then it only scores and bundles (a few minutes on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.errors import UserError
from training.recipes import CHECKPOINTS

DEFAULT_CONFIG = CHECKPOINTS / "slide_deformed_w18s.yaml"
TEST_SEEDS = (301, 302, 303)
SLIDE_NAME = re.compile(r"generated-v\d+-seed(\d+)\.ome\.zarr$")
REFERENCE_INPUT_SIZE = (256, 256)
REFERENCE_SEED = 0


def ensure_slides(paths: Sequence[str]) -> list[Path]:
    """The listed slides, generating each missing one whose name gives its seed (``generated-v1-seedN.ome.zarr``)."""
    from training.recipes.training_slides import write_training_slide

    found = []
    for text in paths:
        path = Path(text).expanduser()
        if not path.exists():
            match = SLIDE_NAME.search(path.name)
            if match is None:
                raise UserError(f"{path}: no such slide, and its name gives no seed to generate it from")
            print(f"generating {path} (seed {match.group(1)})", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_training_slide(path, int(match.group(1)))
        found.append(path)
    return found


def test_slide_paths(config) -> list[str]:
    """Held-out test slides: seeds :data:`TEST_SEEDS`, beside the config's validation slides."""
    from training.recipes.training_slides import training_slide_path

    folder = Path(config.data.val_slides[0]).parent if config.data.val_slides else Path("runs/slide_model/data")
    return [str(training_slide_path(folder, seed)) for seed in TEST_SEEDS]


def run_configs(config) -> dict[str, Any]:
    """``{"deformed": config, "uniform": the same config with the uniform sampler}``, each with its own output folder."""
    out = config.run.output_dir.rstrip("/")
    return {
        "deformed": config.with_overrides(["deform.sampler=deformed", f"run.output_dir={out}"]),
        "uniform": config.with_overrides(["deform.sampler=uniform", f"run.output_dir={out}_uniform"]),
    }


def events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's ``events.jsonl`` records (empty when the run has not started)."""
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def finished(run_dir: Path, iterations: int) -> bool:
    """Whether the run in ``run_dir`` trained all ``iterations`` and wrote its checkpoints."""
    done = [e for e in events(run_dir) if e.get("event") == "finished" and not e.get("stopped")]
    return any(e["iteration"] == iterations for e in done) and (run_dir / "best.safetensors").is_file()


def train(config) -> None:
    """Run ``config`` to the end (resuming from its ``last.pt``), printing progress every 50 iterations."""
    from training.events import Evaluated, IterationDone
    from training.loop import Trainer

    run_dir = Path(config.run.output_dir)
    resume = run_dir / "last.pt"
    for event in Trainer(config, resume=resume if resume.is_file() else None).run():
        if isinstance(event, IterationDone) and event.iteration % 50 == 0:
            losses = " ".join(f"{k} {v:.4f}" for k, v in sorted(event.losses.items()))
            print(f"{run_dir.name} {event.iteration}: {losses} ({event.seconds:.2f} s)", flush=True)
        elif isinstance(event, Evaluated):
            print(f"{run_dir.name} {event.iteration}: validation {event.score:.4f}", flush=True)


class IoUCounts:
    """Pooled intersections and unions per class value ``0 … K``."""

    def __init__(self, classes: int) -> None:
        self.intersection = np.zeros(classes + 1, np.int64)
        self.union = np.zeros(classes + 1, np.int64)

    def update(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Add one slide: class-index maps ``(H, W)``."""
        for value in range(len(self.union)):
            p, t = predicted == value, truth == value
            self.intersection[value] += int(np.count_nonzero(p & t))
            self.union[value] += int(np.count_nonzero(p | t))

    def iou(self) -> list[float]:
        """IoU per class value (NaN where a class is absent from both)."""
        return [float(i / u) if u else math.nan for i, u in zip(self.intersection, self.union)]


def score(model, config, paths: Sequence[Path]) -> dict[str, Any]:
    """IoU per class of ``model`` (a deformed segmenter, eval mode) on ``paths`` at the training view,
    and the intrinsic upsampling IoU of its sampler; see the module docstring."""
    import torch

    from napari_m2mrf.models.deform import grid_to_pixels, sample_labels
    from napari_m2mrf.sampling.reverse import ReverseSampler
    from training.datasets import to_tensors
    from training.slide_samples import SlideRecord, load_slide_sample, slide_classes
    from training.transforms import ResizeToFit

    data = config.data
    records = [SlideRecord(path, data.slide_labels, data.slide_level_size) for path in paths]
    classes = slide_classes(records[0], data.classes)
    segmentation, intrinsic = IoUCounts(len(classes)), IoUCounts(len(classes))
    sampled, present = np.zeros(len(classes) + 1, np.int64), np.zeros(len(classes) + 1, np.int64)
    fit = ResizeToFit(config.augment.resize) if config.augment.resize else None
    with torch.no_grad():
        for record in records:
            sample = load_slide_sample(record, classes)
            if fit is not None:
                sample = fit(sample, np.random.default_rng(0))
            image, target = to_tensors(sample, data.mean, data.std)
            size = tuple(image.shape[-2:])
            output = model(image[None])
            points = grid_to_pixels(output.grid[0], size).numpy()
            rows, cols = slice(0, size[0]), slice(0, size[1])
            predicted = output.logits[0].argmax(dim=0).numpy().astype(np.uint8)
            truth = target[0].numpy()
            segmentation.update(ReverseSampler(points, predicted).fill(rows, cols), truth)
            sampled_truth = sample_labels(target[None, 0].long(), output.grid)[0].numpy().astype(np.uint8)
            intrinsic.update(ReverseSampler(points, sampled_truth).fill(rows, cols), truth)
            sampled += np.bincount(sampled_truth.reshape(-1), minlength=len(sampled))
            present += np.bincount(truth.reshape(-1), minlength=len(present))
    names = ["background", *data.classes]

    def table(counts: IoUCounts) -> dict[str, Any]:
        iou = counts.iou()
        return {
            "iou": dict(zip(names, iou)),
            "miou_lesions": float(np.nanmean(iou[1:])),
            "miou_all": float(np.nanmean(iou)),
        }

    # Jin et al. A.4: the share of samples that land on each class, over its share of the pixels
    investment = (sampled / sampled.sum()) / np.maximum(present / present.sum(), 1e-12)
    return {
        "segmentation": table(segmentation),
        "intrinsic": table(intrinsic),
        "sampled_over_pixel_fraction": dict(zip(names, investment.tolist())),
    }


def reference_input() -> Any:
    """The fixed input the bundled model's reference output is recorded for: ``1×3×256×256`` float32."""
    import torch

    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    return torch.rand(1, 3, *REFERENCE_INPUT_SIZE, generator=generator) * 4 - 2


def reference_output(model) -> dict[str, Any]:
    """Summary of ``model``'s output on :func:`reference_input` (per-channel mean logit, grid mean, label counts)."""
    import torch

    with torch.no_grad():
        output = model(reference_input())
    labels = output.logits[0].argmax(dim=0)
    return {
        "input": f"torch.rand(1, 3, {REFERENCE_INPUT_SIZE[0]}, {REFERENCE_INPUT_SIZE[1]}, "
                 f"generator=torch.Generator().manual_seed({REFERENCE_SEED})) * 4 - 2",
        "logits_mean": [float(v) for v in output.logits[0].mean(dim=(1, 2))],
        "grid_mean": [float(v) for v in output.grid[0].mean(dim=(0, 1))],
        "label_counts": [int(v) for v in torch.bincount(labels.reshape(-1), minlength=output.logits.shape[1])],
    }


def bundle(run_dir: Path, name: str, report: dict[str, Any], config, test_paths: Sequence[Path]) -> Path:
    """Write ``sample_data/checkpoints/<name>.safetensors``: the run's best model with int8 weights
    (per-channel scales; a quarter of float32), its training scale (µm per sample) and provenance. The shipped weights are scored on the
    test slides again (``report["bundled_int8"]``) and give the recorded reference output."""
    import torch

    from napari_m2mrf.models.checkpoints import load_checkpoint, save_deformed_checkpoint
    from napari_m2mrf.models.training_scale import METADATA_KEY as SCALE_KEY
    from training.slide_scale import training_scale

    model, meta = load_checkpoint(run_dir / "best.safetensors")
    evaluations = [e for e in events(run_dir) if e.get("event") == "evaluation"]
    steps = [e["iteration"] for e in events(run_dir) if e.get("event") == "iteration"]
    provenance = {
        **meta.get("provenance", {}),
        "trained_iterations": max(steps) if steps else 0,
        "selected_checkpoint": "best.safetensors",
        "validation": max(evaluations, key=lambda e: e["score"]) if evaluations else None,
    }
    kept = {k: v for k, v in meta.items() if k in ("classes", "normalization", "input_size", "output", SCALE_KEY)}
    scale = training_scale(config) if SCALE_KEY not in kept else None  # a run from before the trainer recorded it
    if scale is not None:
        kept[SCALE_KEY] = scale.to_json()
    target = CHECKPOINTS / f"{name}.safetensors"
    save_deformed_checkpoint(target, model, {**kept, "provenance": provenance}, dtype=torch.int8)
    shipped, _ = load_checkpoint(target)
    provenance["report"] = {**report, "bundled_int8": score(shipped, config, test_paths)["segmentation"]}
    provenance["reference_output"] = reference_output(shipped)
    save_deformed_checkpoint(target, model, {**kept, "provenance": provenance}, dtype=torch.int8)
    return target


def markdown(report: dict[str, Any]) -> list[str]:
    """The comparison as Markdown table rows."""
    classes = list(report["runs"]["deformed"]["segmentation"]["iou"])
    header = ["sampler", *(f"IoU {c}" for c in classes), "mIoU lesions", "mIoU all", "intrinsic mIoU lesions",
              *(f"samples/pixels {c}" for c in classes[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for sampler, result in report["runs"].items():
        seg, intr = result["segmentation"], result["intrinsic"]
        cells = [sampler, *(f"{seg['iou'][c]:.3f}" for c in classes), f"{seg['miou_lesions']:.3f}",
                 f"{seg['miou_all']:.3f}", f"{intr['miou_lesions']:.3f}",
                 *(f"{result['sampled_over_pixel_fraction'][c]:.2f}" for c in classes[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from napari_m2mrf.models.checkpoints import load_checkpoint
    from training.config import load_config

    parser = argparse.ArgumentParser(prog="python -m training.recipes.slide_model_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--no-bundle", action="store_true", help="score only; leave the bundled checkpoint alone")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if not config.deform.enabled:
            raise UserError(f"{args.config}: not a deformed-downsampling config")
        ensure_slides(config.data.slides + config.data.val_slides)
        test_paths = ensure_slides(test_slide_paths(config))
        runs = run_configs(config)
        results = {}
        for sampler, run_config in runs.items():
            run_dir = Path(run_config.run.output_dir)
            if not finished(run_dir, run_config.run.iterations):
                train(run_config)
            model, _ = load_checkpoint(run_dir / "best.safetensors")
            results[sampler] = score(model, run_config, test_paths)
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    size = config.deform.output_size
    report = {
        "budget": f"{size[0]}×{size[1]} samples per slide",
        "resolution": f"training view: slide level with long side >= {config.data.slide_level_size} px, "
                      f"fitted into {config.augment.resize}",
        "test_slides": [p.name for p in test_paths],
        "iterations": config.run.iterations,
        "runs": results,
        "deformed_beats_uniform": results["deformed"]["segmentation"]["miou_lesions"]
        > results["uniform"]["segmentation"]["miou_lesions"],
    }
    report_path = Path(config.run.output_dir) / "report.json"
    report_path.write_text(json.dumps(report, indent=2))
    print("\n".join(markdown(report)))
    print(f"report: {report_path}")
    if not args.no_bundle:
        deformed = runs["deformed"]
        print(f"bundled: {bundle(Path(deformed.run.output_dir), args.config.stem, report, deformed, test_paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
