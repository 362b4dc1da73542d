"""More real training photographs: the ``idrid_extra`` set (IDRiD_21–54) in IDRiD's layout.

That set holds full-resolution photographs (about 3409 × 2848, side borders cropped) but lesion
masks only on a 512 × 512 grid, with a per-image ``frame_map.json`` linking the two frames: grid
pixel (r, c) covers full-resolution pixel (x, y) where ``c = floor((x − x0 + 0.5) · 512 / s)`` and
``r = floor((y + pad_y + 0.5) · 512 / s)``. This module writes each mask nearest-upsampled into
the photograph's frame (blocky, about 7 × 7 full-resolution pixels per grid pixel, lesions
slightly too large: fit for training, not for scoring) as a 1-bit PNG, and links the photographs,
so :mod:`training.sources` reads the set like any IDRiD folder.

``python -m training.recipes.idrid_extra OUT --extra DIR [--fit H W]`` (files already written are kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from napari_m2mrf.classes import IDRID_FOLDERS
from napari_m2mrf.errors import UserError
from training.recipes import IMAGES, MASKS, TRAIN
from training.transforms import fit_size

log = logging.getLogger(__name__)
LESION_CODES = ("MA", "HE", "EX", "SE")
GRID = 512


def upsample_mask(grid_mask: np.ndarray, frame: Mapping[str, float], shape: tuple[int, int] | None = None) -> np.ndarray:
    """(512, 512) bool → (fullres_h, fullres_w) bool, nearest along ``frame`` (a frame_map entry);
    with ``shape`` (h, w), on the photograph resized to that size (each output pixel's centre
    mapped into the full-resolution frame)."""
    if grid_mask.shape != (GRID, GRID):
        raise UserError(f"expected a {GRID}×{GRID} mask, found {grid_mask.shape}")
    full_h, full_w = int(frame["fullres_h"]), int(frame["fullres_w"])
    height, width = shape or (full_h, full_w)
    ys = (np.arange(height) + 0.5) * (full_h / height) - 0.5  # full-resolution coordinates of the centres
    xs = (np.arange(width) + 0.5) * (full_w / width) - 0.5
    scale = GRID / float(frame["s"])
    rows = np.floor((ys + float(frame["pad_y"]) + 0.5) * scale).astype(int)
    cols = np.floor((xs - float(frame["x0"]) + 0.5) * scale).astype(int)
    return grid_mask[np.clip(rows, 0, GRID - 1)[:, None], np.clip(cols, 0, GRID - 1)[None, :]]


def assemble_extra(
    out: Path, extra: Path, split: str = TRAIN, codes: Sequence[str] = LESION_CODES, fit: Sequence[int] = ()
) -> list[str]:
    """Link ``extra``'s full-resolution photographs into ``out/1. Original Images/split`` and write
    their upsampled masks under ``out/2. All Segmentation Groundtruths/split``; returns the stems.

    ``fit`` ([h, w]): write the photographs fitted into that box instead (keep ratio, the training
    recipe's own fit, JPEG quality 95) with their masks at that size: a copy small enough to carry
    (about 10 MB instead of 33 MB at 960 × 1440) that trains the same as the full-resolution set."""
    frames_path = extra / "frame_map.json"
    if not frames_path.is_file():
        raise UserError(f"{extra}: no frame_map.json (is this the idrid_extra folder?)")
    frames = json.loads(frames_path.read_text())
    stems = []
    for photograph in sorted((extra / "fullres_images").glob("IDRiD_*.jpg")):
        stem = photograph.stem
        if stem not in frames:
            log.warning("%s: no frame in frame_map.json; skipped", photograph.name)
            continue
        link = out / IMAGES / split / photograph.name
        link.parent.mkdir(parents=True, exist_ok=True)
        shape = None
        if fit:
            shape = fit_size(int(frames[stem]["fullres_h"]), int(frames[stem]["fullres_w"]), fit)
            if not link.exists():
                with Image.open(photograph) as picture:
                    fitted = picture.convert("RGB").resize(shape[::-1], Image.Resampling.BILINEAR)
                fitted.save(link.with_name(f".{link.name}.partial"), format="JPEG", quality=95)
                os.replace(link.with_name(f".{link.name}.partial"), link)
        elif not link.exists():
            os.symlink(photograph.resolve(), link)
        for code in codes:
            grid_path = extra / "masks" / code / f"{stem}.png"
            target = out / MASKS / split / IDRID_FOLDERS[code] / f"{stem}_{code}.png"
            if not grid_path.is_file() or target.exists():
                continue
            with Image.open(grid_path) as picture:
                grid_mask = np.asarray(picture.convert("L")) > 0
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            Image.fromarray(upsample_mask(grid_mask, frames[stem], shape)).save(partial, format="PNG")
            os.replace(partial, target)
        stems.append(stem)
    log.info("idrid_extra: %d photographs in %s", len(stems), out)
    return stems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.idrid_extra", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--extra", type=Path, required=True, help="the idrid_extra folder")
    parser.add_argument("--fit", type=int, nargs=2, default=(), metavar=("H", "W"),
                        help="write photographs and masks fitted into H × W (keep ratio) instead of linking")
    args = parser.parse_args(argv)
    try:
        stems = assemble_extra(args.out, args.extra, fit=args.fit)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(stems)} photographs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
