"""Steering the sampler by hand (issue 17): tumour IoU of learned, uniform and user-steered density maps.

The bundled slide model (``slide_deformed_w18s``, 128×128 samples per slide) on the held-out generated
slides of its report (seeds 301–303, :mod:`training.recipes.training_slides`, generated when missing),
scored as ``training.recipes.slide_model_report.score`` does: at the training view (1024², the level the
trainer reads), the low-resolution argmax labels put back by the reverse sampler (nearest sample) and
compared with the ground truth, intersections and unions pooled over the slides. Every row spends the
same budget (128×128 samples) through the same sampler ``G_d`` and the same segmentation network; only
the density differs:

* ``uniform``: the uniform grid; ``learned``: the deformation module's map;
* ``steered, ground-truth regions ×f``: the learned map times ``f`` over the tumour mask dilated by
  ``MARGIN`` px (what a perfect annotator's brush would paint);
* ``steered, rectangles ×f``: the learned map times ``f`` inside each tumour focus's bounding box grown by
  ``MARGIN`` px (what a pathologist drawing Shapes rectangles around the foci gives).

The steered maps go through the product's path: ``sampling.density.region_factors`` → ``steer_density``
→ ``inference.steering.model_density`` → the model's sampler. Columns: tumour IoU, mIoU over the three
classes, foci found (tumour components of the truth with at least half their pixels predicted tumour),
tumour samples over tumour pixel share (Jin et al. A.4), and the seconds per slide.

Then, on the 32768² sample slide (File ▸ Open Sample; generated into the cache when missing), the time a
user waits for a new result: the product's run (``segment_slide``, model loaded, until the lazy labels a
viewer shows at once) with the learned map and with a steered one (×8 over the ground truth's tumour
foci), three times each, the median; the save that follows runs in the background as for any run.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_steered_density.py [--data DIR] [--no-sample]``
(prints Markdown tables and a JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

MARGIN = 16  # px of the 1024² view around each focus
FACTORS = (4.0, 8.0)
SEEDS = (301, 302, 303)
TUMOUR = 1


def focus_masks(truth: np.ndarray, kind: str) -> np.ndarray:
    """Bool mask of the regions a user would raise: the dilated tumour mask, or the foci's grown bounding boxes."""
    tumour = truth == TUMOUR
    if kind == "ground-truth regions":
        return ndimage.binary_dilation(tumour, iterations=MARGIN)
    boxes = np.zeros_like(tumour)
    components, _ = ndimage.label(tumour)
    for rows, cols in ndimage.find_objects(components):
        boxes[max(0, rows.start - MARGIN):rows.stop + MARGIN, max(0, cols.start - MARGIN):cols.stop + MARGIN] = True
    return boxes


def foci_found(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(foci with ≥ half their pixels predicted tumour, foci) of the truth's tumour components."""
    components, count = ndimage.label(truth == TUMOUR)
    if not count:
        return 0, 0
    hits = ndimage.mean(predicted == TUMOUR, components, index=np.arange(1, count + 1))
    return int(np.count_nonzero(np.asarray(hits) >= 0.5)), int(count)


def main() -> int:
    import torch

    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.inference.steering import model_density
    from napari_m2mrf.models.deform import UniformSampler, grid_to_pixels, sample_image, sample_labels
    from napari_m2mrf.sampling.density import region_factors, steer_density
    from napari_m2mrf.sampling.reverse import ReverseSampler
    from training.config import load_config
    from training.datasets import to_tensors
    from training.recipes.slide_model_report import DEFAULT_CONFIG, IoUCounts
    from training.recipes.training_slides import training_slide_path, write_training_slide
    from training.slide_samples import SlideRecord, load_slide_sample, slide_classes
    from training.transforms import ResizeToFit

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("runs/slide_model/data"), help="folder of the test slides")
    parser.add_argument("--no-sample", action="store_true", help="skip the timing on the 32768² sample slide")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    config = load_config(DEFAULT_CONFIG)
    model = resolve("slide_deformed_w18s").load().eval()
    rows = {"uniform": None, "learned": None}
    for kind in ("ground-truth regions", "rectangles"):
        for factor in FACTORS:
            rows[f"steered, {kind} ×{factor:g}"] = (kind, factor)
    counts = {name: IoUCounts(3) for name in rows}
    found = {name: [0, 0] for name in rows}
    invested = {name: [0, 0] for name in rows}
    seconds = {name: 0.0 for name in rows}
    per_slide = {name: [] for name in rows}
    paths = []
    for seed in SEEDS:
        path = training_slide_path(args.data, seed)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_training_slide(path, seed)
        paths.append(path)
    data = config.data
    records = [SlideRecord(path, data.slide_labels, data.slide_level_size) for path in paths]
    classes = slide_classes(records[0], data.classes)
    fit = ResizeToFit(config.augment.resize)
    with torch.inference_mode():
        for record in records:
            sample = fit(load_slide_sample(record, classes), np.random.default_rng(0))
            image, target = to_tensors(sample, data.mean, data.std)
            truth = target[0].numpy().astype(np.uint8)
            size = tuple(image.shape[-2:])
            learned = model.density(image[None])
            for name, steer in rows.items():
                start = time.perf_counter()
                if name == "uniform":
                    grid = UniformSampler()(learned, model.output_size)
                elif steer is None:
                    grid = model.sampler(learned, model.output_size)
                else:
                    kind, factor = steer
                    factors = region_factors(size, [(focus_masks(truth, kind), factor)])
                    density = model_density(steer_density(learned[0, 0].numpy(), factors), model.density_size)
                    grid = model.sampler(density, model.output_size)
                predicted_lr = model.seg_net(sample_image(image[None], grid))[0].argmax(0).numpy().astype(np.uint8)
                points = grid_to_pixels(grid[0], size).numpy()
                predicted = ReverseSampler(points, predicted_lr).fill(slice(0, size[0]), slice(0, size[1]))
                seconds[name] += time.perf_counter() - start
                counts[name].update(predicted, truth)
                one = IoUCounts(3)
                one.update(predicted, truth)
                per_slide[name].append(one.iou()[TUMOUR])
                hit, total = foci_found(predicted, truth)
                found[name][0] += hit
                found[name][1] += total
                sampled = sample_labels(target[None, 0].long(), grid)[0].numpy()
                invested[name][0] += int(np.count_nonzero(sampled == TUMOUR))
                invested[name][1] += int(np.count_nonzero(truth == TUMOUR))
    samples = model.output_size[0] * model.output_size[1]
    pixels = size[0] * size[1]
    report = {}
    lines = ["| density map | tumour IoU | per slide | mIoU (3 classes) | foci found | tumour samples / tumour pixel share "
             "| s per slide |", "|---|---|---|---|---|---|---|"]
    for name in rows:
        iou = counts[name].iou()
        share = (invested[name][0] / (samples * len(records))) / max(invested[name][1] / (pixels * len(records)), 1e-12)
        report[name] = {"tumour_iou": iou[TUMOUR], "miou": float(np.nanmean(iou[1:])), "foci_found": found[name],
                        "tumour_sample_share_over_pixel_share": share, "seconds_per_slide": seconds[name] / len(records),
                        "tumour_iou_per_slide": per_slide[name]}
        slides = " / ".join(f"{v:.3f}" for v in per_slide[name])
        lines.append(f"| {name} | {iou[TUMOUR]:.3f} | {slides} | {np.nanmean(iou[1:]):.3f} | {found[name][0]}/{found[name][1]} "
                     f"| {share:.2f} | {seconds[name] / len(records):.2f} |")
    print("\n".join(lines))
    timing = {} if args.no_sample else time_to_result(model)
    machine = f"{platform.node()} {os.cpu_count()} cores, load {load_before:.1f} → {os.getloadavg()[0]:.1f}"
    print(json.dumps({"budget": list(model.output_size), "slides": [p.name for p in paths], "margin_px": MARGIN,
                      "machine": machine, "rows": report, "sample_slide_seconds_to_labels": timing}))
    return 0


def time_to_result(model, rounds: int = 3) -> dict[str, float]:
    """Median seconds of ``segment_slide`` (the lazy result) on the 32768² sample slide: learned and steered."""
    import tempfile

    from napari_m2mrf.catalog import resolve
    from napari_m2mrf.inference.slide import SlideRequest, segment_slide
    from napari_m2mrf.io.slides import open_label_pyramids
    from napari_m2mrf.sampling.density import region_factors, steer_density
    from sample_data.slide_sample import sample_slide

    slide = sample_slide()
    truth = next(p for p in open_label_pyramids(slide.ome_zarr) if p.name == "ground_truth")
    coarse = np.asarray(truth.levels[-1][:])  # the coarsest ground-truth level
    ref = resolve("slide_deformed_w18s")
    times: dict[str, list[float]] = {"learned": [], "steered ×8 over the tumour foci": []}
    with tempfile.TemporaryDirectory() as folder:
        learned = segment_slide(slide.ome_zarr, SlideRequest(ref, device="cpu", workspace=Path(folder) / "w.zarr"))
        steered = steer_density(learned.density, region_factors(coarse.shape, [(focus_masks(coarse, "rectangles"), 8.0)]))
        for _ in range(rounds):
            for name, density in (("learned", None), ("steered ×8 over the tumour foci", steered)):
                start = time.perf_counter()
                segment_slide(slide.ome_zarr, SlideRequest(ref, device="cpu", workspace=Path(folder) / "w.zarr",
                                                           density=density))
                times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    print("\n| 32768² sample slide, 128×128 samples | s to labels on screen (median of 3) |\n|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} |")
    return medians


if __name__ == "__main__":
    raise SystemExit(main())
