"""``napari-m2mrf evaluate PRED GT``: score a folder of lesion predictions against ground truth.

Ground truth (``GT``) is found by :func:`napari_m2mrf.io.datasets.find_ground_truth_set` in the
IDRiD, DDR or plain-folder layout (the dataset root, or a folder inside it); an image without a
mask for a class has no lesion of that class (as SE in IDRiD). Masks are read by
:func:`~napari_m2mrf.io.datasets.read_binary_mask`, as everywhere else.

Predictions (``PRED``): one file per image and class, ``<stem>_<CLS>.tif|tiff|png``, directly in
``PRED``, in ``PRED/<CLS>/`` or in ``PRED/<n>. <Class>/`` (IDRiD folder names). Each is a binary
mask (1-bit, or integers 0/1) or a probability map scaled by its type (8-bit / 255, 16-bit /
65535, float as is in [0, 1]). The metrics are those of :mod:`napari_m2mrf.metrics`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_m2mrf.classes import (
    FUNDUS_CLASSES,
    IDRID_FOLDERS,
    LesionClass,
    class_by_code,
)
from napari_m2mrf.errors import UserError
from napari_m2mrf.io.datasets import (
    LAYOUT_NAMES,
    GroundTruthImage,
    GroundTruthSet,
    find_ground_truth_set,
    read_binary_mask,
)

PREDICTION_EXTENSIONS = (".tif", ".tiff", ".png")
LESION_CODES = tuple(cls.code for cls in FUNDUS_CLASSES)
TABLE_COLUMNS = (
    ("AUPR official 11-pt", "aupr_official_11pt"),
    ("AUPR dense", "aupr_dense"),
    ("IoU@0.5", "iou"),
    ("F1@0.5", "f1"),
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score lesion predictions against IDRiD, DDR or folder ground truth (AUPR, IoU)",
        description="Score a folder of lesion predictions against ground truth: per class the AUPR of the "
        "official protocol (pixel counts pooled over all images, 11 thresholds, trapezoid rule), a dense "
        "AUPR (average precision over all thresholds), IoU and F1 at threshold 0.5; and their means. "
        "Predictions are <stem>_<CLS>.tif|png files in PRED, PRED/<CLS>/ or PRED/<n>. <Class>/: binary "
        "masks (integer maps holding only 0 and 1 count as masks) or probability maps (8-bit / 255, "
        "16-bit / 65535, float in [0, 1]).",
    )
    parser.add_argument("pred", type=Path, metavar="PRED", help="folder of predictions")
    parser.add_argument("gt", type=Path, metavar="GT", help="ground-truth dataset root (IDRiD, DDR or masks/<CLS>/)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    parser.add_argument(
        "--classes",
        default=",".join(LESION_CODES),
        metavar="EX,HE,SE,MA",
        help="comma-separated lesion classes to score (default: all four)",
    )
    parser.add_argument(
        "--split",
        metavar="NAME",
        help="which split when GT holds several (e.g. 'test' for 'b. Testing Set' or DDR's test/)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from napari_m2mrf.metrics import LesionMetrics

    classes = parse_classes(args.classes)
    check_predictions_present(args.pred)
    truth = find_ground_truth_set(args.gt, args.split)
    for cls in classes:
        if cls.code not in truth.class_folders:
            raise UserError(f"{args.gt}: no {cls.code} ground-truth folder; leave {cls.code} out with --classes")
    metrics = LesionMetrics(classes)
    show_progress = sys.stderr.isatty()
    for number, image in enumerate(truth.images, start=1):
        if show_progress:
            sys.stderr.write(f"\revaluating {number}/{len(truth.images)} {image.stem} ")
        probabilities, masks = load_image_pair(args.pred, image, classes)
        metrics.update(probabilities, masks)
    if show_progress:
        sys.stderr.write("\n")
    result = metrics.compute()
    if args.format == "json":
        report = {
            "ground_truth": str(args.gt),
            "layout": LAYOUT_NAMES[truth.layout],
            "split": truth.split,
            "predictions": str(args.pred),
            "image_stems": [image.stem for image in truth.images],
            "metrics": result,
        }
        print(json.dumps(_nan_to_none(report), indent=2))
    else:
        print(format_table(result, truth, args.gt, args.pred))
    return 0


def parse_classes(text: str) -> tuple[LesionClass, ...]:
    """The classes named in ``text`` ("EX,HE,SE,MA", any case), in that order."""
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise UserError("--classes: name at least one class (EX, HE, SE, MA)")
    try:
        classes = tuple(class_by_code(code) for code in codes)
    except KeyError as exc:
        raise UserError(f"--classes: {exc.args[0]}") from None
    if len({cls.code for cls in classes}) != len(classes):
        raise UserError(f"--classes: a class is named twice in {text!r}")
    return classes


def check_predictions_present(pred: Path) -> None:
    """Raise ``UserError`` unless ``pred`` is a folder holding at least one prediction file."""
    if not pred.is_dir():
        raise UserError(f"{pred}: no such prediction folder")
    folders = [pred, *(pred / code for code in LESION_CODES), *(pred / IDRID_FOLDERS[code] for code in LESION_CODES)]
    for folder in folders:
        if folder.is_dir() and any(
            path.suffix.lower() in PREDICTION_EXTENSIONS and any(path.stem.upper().endswith(f"_{c}") for c in LESION_CODES)
            for path in folder.iterdir()
        ):
            return
    raise UserError(f"{pred}: no predictions found (expected <stem>_<CLS>.tif|png files, e.g. IDRiD_01_EX.tif)")


def prediction_path(pred: Path, stem: str, code: str) -> Path:
    """The prediction file of image ``stem`` and class ``code``; ``UserError`` naming what was looked for."""
    name = f"{stem}_{code}"
    for folder in (pred, pred / code, pred / IDRID_FOLDERS[code]):
        for extension in PREDICTION_EXTENSIONS:
            if (folder / f"{name}{extension}").is_file():
                return folder / f"{name}{extension}"
    raise UserError(
        f"{pred / name}.tif: missing prediction for image {stem}, class {code} (also looked for .png, in {code}/)"
    )


def load_image_pair(
    pred: Path, image: GroundTruthImage, classes: tuple[LesionClass, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (K, H, W) float32 in [0, 1], masks (K, H, W) bool) of one image.

    A class without a ground-truth mask is all background; the image's size then comes from its
    other masks. Every prediction and mask must have that size.
    """
    from napari_m2mrf.io.input_gate import mask_header

    truth: dict[str, np.ndarray] = {}
    for cls in classes:  # every mask after the first is checked against the first's size from its header
        if cls.code in image.masks:
            if truth:
                first = next(iter(truth))
                _check_size(image.masks[cls.code], mask_header(image.masks[cls.code]), image.masks[first], truth[first].shape)
            truth[cls.code] = read_binary_mask(image.masks[cls.code])
    reference = next((image.masks[code] for code in truth), None) or next(iter(image.masks.values()))
    shape = truth[next(iter(truth))].shape if truth else read_binary_mask(reference).shape
    probabilities = np.empty((len(classes), *shape), dtype=np.float32)
    masks = np.zeros((len(classes), *shape), dtype=bool)
    for k, cls in enumerate(classes):
        if cls.code in truth:
            _check_size(image.masks[cls.code], truth[cls.code].shape, reference, shape)
            masks[k] = truth[cls.code]
        path = prediction_path(pred, image.stem, cls.code)
        _check_size(path, mask_header(path), reference, shape)  # before decoding
        probability = read_prediction(path, shape)
        _check_size(path, probability.shape, reference, shape)
        probabilities[k] = probability
    return probabilities, masks


def _check_size(path: Path, shape: tuple[int, ...], reference: Path, expected: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(expected):
        raise UserError(
            f"{path}: size {shape[1]}x{shape[0]} differs from the ground truth {reference.name} "
            f"({expected[1]}x{expected[0]})"
        )


def read_prediction(path: Path, expected_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A prediction file as float32 (H, W) probabilities in [0, 1] (integer 0/1 maps are masks).

    The header passes the read-side gate first: a regular file, within the limits, of
    ``expected_shape`` (H, W) when given; NaN or infinite values are refused.
    """
    from napari_m2mrf.io.input_gate import mask_header
    from napari_m2mrf.metrics import as_probability

    mask_header(path, tuple(expected_shape[:2]) if expected_shape is not None else None)
    if path.suffix.lower() == ".png":
        values = _read_png(path)
    else:
        values = _read_tiff(path)
    values = _single_channel(path, values)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise UserError(f"{path}: the prediction holds NaN or infinite values")
    if values.dtype.kind not in "uifb":
        raise UserError(f"{path}: unsupported pixel type {values.dtype} for a prediction")
    if values.dtype.kind in "ui" and values.size and values.max() <= 1:
        values = values.astype(bool)
    try:
        return as_probability(values)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        return tifffile.imread(path)
    except (tifffile.TiffFileError, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable TIFF ({exc})") from None


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from napari_m2mrf.io.input_gate import pil_pixel_limit
    from napari_m2mrf.io.limits import current_limits

    try:
        with pil_pixel_limit(current_limits().max_image_pixels), Image.open(path) as image:
            if image.mode in ("P", "PA"):  # a palette's indices are not intensities: judge its colours
                return np.asarray(image.convert("RGBA"))
            return np.asarray(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable PNG ({exc})") from None


def _single_channel(path: Path, values: np.ndarray) -> np.ndarray:
    """(H, W) from (H, W) or from (H, W, C) whose colour channels are equal (alpha ignored)."""
    if values.ndim == 3 and values.shape[2] in (3, 4):
        colour = values[..., :3]
        if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2]):
            return colour[..., 0]
    if values.ndim != 2:
        raise UserError(f"{path}: expected a single-channel mask or probability map, found shape {values.shape}")
    return values


def format_table(result: dict[str, Any], truth: GroundTruthSet, gt: Path, pred: Path) -> str:
    """The per-class metrics and their means as an aligned text table with a two-line header."""
    split = f", split {truth.split!r}" if truth.split else ""
    layout = LAYOUT_NAMES[truth.layout]
    lines = [
        f"ground truth: {gt} ({layout} layout{split}), {result['images']} images",
        f"predictions:  {pred}",
        "",
    ]
    widths = [max(len(title), 6) for title, _ in TABLE_COLUMNS]
    lines.append("  ".join(["class".ljust(5), *(title.rjust(w) for (title, _), w in zip(TABLE_COLUMNS, widths))]))
    rows = [(code, result["per_class"][code]) for code in result["classes"]] + [("mean", result["mean"])]
    for name, values in rows:
        cells = [_number(values[key]).rjust(w) for (_, key), w in zip(TABLE_COLUMNS, widths)]
        lines.append("  ".join([name.ljust(5), *cells]))
    return "\n".join(lines)


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _nan_to_none(value: Any) -> Any:
    """JSON has no NaN: undefined metrics become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value
