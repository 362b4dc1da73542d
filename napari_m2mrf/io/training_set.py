"""A training set made from napari layers: image/label pairs exported to files the trainer reads.

Each pair is ``<name>.png`` (RGB, lossless) and ``<name>_labels.tif`` ((H, W) uint8 class labels)
in one folder, listed in ``pairs.json`` as ``[{"image": …, "labels": …}]`` — the trainer's
``data.kind: pairs``. Files and the list are written atomically; adding a pair of an existing
name replaces it (a re-corrected image is not counted twice).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from napari_m2mrf.errors import UserError
from napari_m2mrf.io.atomic import atomic_path

PAIRS_FILE = "pairs.json"


def read_pairs(folder: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The pairs listed in ``folder`` (empty when there is no list yet)."""
    path = Path(folder) / PAIRS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def add_pair(folder: str | os.PathLike[str], name: str, image: np.ndarray, labels: np.ndarray) -> list[dict[str, str]]:
    """Export ``image`` (H, W, 3) uint8 and ``labels`` (H, W) integer to ``folder``; returns all pairs."""
    import tifffile
    from PIL import Image

    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 3 or image.shape[-1] < 3:
        raise UserError(f"{name}: the training image must be RGB (H, W, 3); got shape {image.shape}")
    if labels.shape != image.shape[:2]:
        raise UserError(f"{name}: labels {labels.shape} and image {image.shape[:2]} differ in size")
    if labels.min() < 0 or labels.max() > 255:
        raise UserError(f"{name}: label values must be 0..255")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"
    image_path, labels_path = folder / f"{safe}.png", folder / f"{safe}_labels.tif"
    with atomic_path(image_path) as temporary:
        Image.fromarray(np.ascontiguousarray(image[..., :3].astype(np.uint8))).save(temporary, format="PNG")
    with atomic_path(labels_path) as temporary:
        tifffile.imwrite(temporary, labels.astype(np.uint8), compression="zlib")
    pairs = [p for p in read_pairs(folder) if p["image"] != str(image_path)]
    pairs.append({"image": str(image_path), "labels": str(labels_path)})
    with atomic_path(folder / PAIRS_FILE) as temporary:
        temporary.write_text(json.dumps(pairs, indent=2))
    return pairs
