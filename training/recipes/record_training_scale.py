"""Record the training scale in an already bundled slide checkpoint, its weights untouched.

``python -m training.recipes.record_training_scale [CHECKPOINT] [--config YAML]`` (defaults: the
bundled slide model and the config it ships with) computes the µm per sample the model was trained
at (:func:`training.slide_scale.training_scale`) over the config's training slides — from each
slide's header where the file is there, else, for a generated slide (``generated-vN-seedS.ome.zarr``),
from the generator's geometry (:func:`training.recipes.training_slides.training_slide_geometry`: the
same for every seed), so the slides need not be generated again — and writes it into the checkpoint's
metadata (``napari_m2mrf.models.checkpoints.update_checkpoint_metadata``: tensors and
``weights_sha256`` unchanged), noting in the provenance how it was recorded. Slide models bundled by
``training.recipes.slide_model_report`` since carry it from training.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from napari_m2mrf.errors import UserError
from training.recipes import CHECKPOINTS
from training.recipes.slide_model_report import DEFAULT_CONFIG, SLIDE_NAME
from training.slide_scale import SlideGeometry, slide_geometry

DEFAULT_CHECKPOINT = CHECKPOINTS / "slide_deformed_w18s.safetensors"


def recorded_geometry(path: Path) -> SlideGeometry:
    """The geometry of the training slide ``path``: its header, or the generator's for a generated slide
    that is not on disk; ``UserError`` for any other missing slide."""
    from training.recipes.training_slides import training_slide_geometry

    if path.exists():
        return slide_geometry(path)
    if SLIDE_NAME.search(path.name):
        return training_slide_geometry()
    raise UserError(f"{path}: no such training slide, and not a generated one whose geometry is known")


def record(checkpoint: Path, config_path: Path) -> dict:
    """Write the training scale of ``config_path``'s run into ``checkpoint``; returns the entry."""
    from napari_m2mrf.models.checkpoints import read_checkpoint_metadata, update_checkpoint_metadata
    from napari_m2mrf.models.training_scale import METADATA_KEY
    from training.config import load_config
    from training.slide_scale import training_scale

    scale = training_scale(load_config(config_path), recorded_geometry)
    if scale is None:
        raise UserError(f"{config_path}: not a deformed run on slides with a known pixel size")
    provenance = dict(read_checkpoint_metadata(checkpoint)["provenance"])
    provenance["training_scale_recorded"] = (
        f"after training, by training.recipes.record_training_scale from {config_path.name}'s training slides "
        "(generated slides: the generator's geometry)")
    update_checkpoint_metadata(checkpoint, {METADATA_KEY: scale.to_json(), "provenance": provenance})
    return scale.to_json()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.record_training_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, nargs="?", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(record(args.checkpoint, args.config)))
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
