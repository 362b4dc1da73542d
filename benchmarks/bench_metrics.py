"""Speed, memory and accuracy of ``LesionMetrics`` on one IDRiD-sized image (4 x 2848 x 4288).

Baselines, run in the same process on the same pixels:

* the official protocol as its code computes it: for each of the 11 thresholds and each class,
  compare the whole map and count TP, P and FN (``official_loop`` below);
* scikit-learn's ``average_precision_score`` (the exact dense AP), which sorts every pixel.

Prints CPU seconds of the process (all three are single-threaded, so on a shared machine this is
the wall time on an idle core), peak traced memory (numpy allocations, ``tracemalloc``) and the
ratios, and the dense AUPR's distance from scikit-learn next to its reported bound.

Run: ``.venv/bin/python benchmarks/bench_metrics.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from napari_m2mrf.metrics import OFFICIAL_THRESHOLDS, LesionMetrics

SHAPE = (2848, 4288)
PREVALENCE = (0.0093, 0.0087, 0.0012, 0.0008)  # EX, HE, SE, MA pixel shares, close to IDRiD's


def synthetic_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (4, H, W) float32, masks (4, H, W) bool): sigmoid scores of a fair model."""
    rng = np.random.default_rng(seed)
    masks = np.stack([rng.random(SHAPE, dtype=np.float32) < share for share in PREVALENCE])
    probabilities = np.empty(masks.shape, dtype=np.float32)
    for k in range(len(PREVALENCE)):
        logits = rng.normal(-9.0, 3.0, SHAPE).astype(np.float32)
        logits += masks[k] * np.float32(8.0)
        probabilities[k] = 1.0 / (1.0 + np.exp(-logits))
    return probabilities, masks


def official_loop(probabilities: np.ndarray, masks: np.ndarray) -> list[tuple[int, int, int]]:
    """Per class and threshold (TP, P, FN), one full comparison per threshold, as the official code."""
    counts = []
    for k in range(probabilities.shape[0]):
        for t in OFFICIAL_THRESHOLDS:
            predicted = probabilities[k] > t
            true_positive, false_negative = np.sum(predicted & masks[k]), np.sum(~predicted & masks[k])
            counts.append((int(true_positive), int(np.sum(predicted)), int(false_negative)))
    return counts


def sklearn_average_precision(probabilities: np.ndarray, masks: np.ndarray) -> list[float]:
    from sklearn.metrics import average_precision_score

    return [average_precision_score(masks[k].ravel(), probabilities[k].ravel()) for k in range(masks.shape[0])]


def streamed(probabilities: np.ndarray, masks: np.ndarray) -> dict:
    metrics = LesionMetrics()
    metrics.update(probabilities, masks)
    return metrics.compute()


def best_seconds(functions: dict[str, Callable], args: tuple, repeats: int) -> dict[str, float]:
    """Best CPU time of each function over ``repeats`` rounds, the functions interleaved in each
    round so that load from other processes hits them alike."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.process_time()
            function(*args)
            best[name] = min(best[name], time.process_time() - start)
    return best


def traced_run(function: Callable, args: tuple) -> tuple[float, float, object]:
    """(CPU seconds, peak memory traced while ``function`` runs in MiB, its result) of one run."""
    tracemalloc.start()
    start = time.process_time()
    result = function(*args)
    seconds = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    probabilities, masks = synthetic_image()
    print(f"image: 4 classes x {SHAPE[0]} x {SHAPE[1]} float32 ({probabilities.nbytes / 2**20:.0f} MiB)")

    image = (probabilities, masks)
    seconds = best_seconds({"ours": streamed, "loop": official_loop}, image, args.repeats)
    ours_s, loop_s = seconds["ours"], seconds["loop"]
    _, ours_mib, result = traced_run(streamed, image)
    _, loop_mib, _ = traced_run(official_loop, image)
    sk_s, sk_mib, exact = traced_run(sklearn_average_precision, image)  # slow: one traced run
    state_mib = LesionMetrics()._counts.nbytes / 2**20

    print(f"LesionMetrics.update+compute (both AUPRs, IoU): {ours_s:6.2f} s  peak {ours_mib:6.0f} MiB")
    print(f"official 11-threshold loop (official AUPR only): {loop_s:6.2f} s  peak {loop_mib:6.0f} MiB"
          f"  -> ours {loop_s / ours_s:.2f}x faster")
    print(f"sklearn average_precision_score (dense only):  {sk_s:6.2f} s  peak {sk_mib:6.0f} MiB"
          f"  -> ours {sk_s / ours_s:.2f}x faster, {sk_mib / ours_mib:.1f}x less memory")
    print(f"accumulator state: {state_mib:.1f} MiB whatever the number of images "
          f"(an exact AP keeps every score: {probabilities.nbytes * 5 / 4 / 2**20:.0f} MiB per image)")
    for k, code in enumerate(result["classes"]):
        values = result["per_class"][code]
        print(f"{code}: dense {values['aupr_dense']:.6f}  sklearn {exact[k]:.6f}  "
              f"|diff| {abs(values['aupr_dense'] - exact[k]):.2e}  bound {values['aupr_dense_error_bound']:.2e}  "
              f"official 11-pt {values['aupr_official_11pt']:.6f}")


if __name__ == "__main__":
    main()
