"""The training set of the bundled fundus model, assembled in IDRiD's layout.

Real IDRiD images (linked, never copied) go to the training split except those held out for
validation, which go to ``b. Testing Set``; semi-synthetic ``fundus_lesions`` images are added to
the training split. Run as ``python -m training.recipes.fundus_training_set OUT --idrid DIR``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from napari_m2mrf.classes import IDRID_FOLDERS
from napari_m2mrf.errors import UserError

TRAIN, VALIDATION = "a. Training Set", "b. Testing Set"


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(source.resolve(), target)


def assemble(out: Path, idrid: Path, validation_ids: Sequence[str], generated: int, seed: int = 100) -> Path:
    """Link the real images and masks of ``idrid`` (its ``a. Training Set``) and write ``generated``
    semi-synthetic images into ``out``; images whose number is in ``validation_ids`` are held out."""
    from sample_data.fundus_samples import write_fundus_dataset

    images = sorted((idrid / "1. Original Images" / TRAIN).glob("*.jpg"))
    if not images:
        raise UserError(f"{idrid}: no IDRiD images under '1. Original Images/{TRAIN}'")
    masks = idrid / "2. All Segmentation Groundtruths" / TRAIN
    for image in images:
        split = VALIDATION if image.stem.rsplit("_", 1)[-1] in validation_ids else TRAIN
        _link(image, out / "1. Original Images" / split / image.name)
        for code, folder in IDRID_FOLDERS.items():
            mask = masks / folder / f"{image.stem}_{code}.tif"
            if mask.exists():
                _link(mask, out / "2. All Segmentation Groundtruths" / split / folder / mask.name)
    return write_fundus_dataset(out, generated, seed=seed, split=TRAIN)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.fundus_training_set", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--idrid", type=Path, required=True, help="IDRiD 'A. Segmentation' folder")
    parser.add_argument("--validation", default="09,10", help="image numbers held out (default 09,10)")
    parser.add_argument("--generated", type=int, default=48, help="semi-synthetic images added (default 48)")
    args = parser.parse_args(argv)
    assemble(args.out, args.idrid, args.validation.split(","), args.generated)
    print(f"training set in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
