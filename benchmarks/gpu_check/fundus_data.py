"""The fundus stage's training data: real IDRiD images plus semi-synthetic ones, or generated only.

The data goes under ``OUT_DIR/scratch`` (deleted after the check); the trainer runs with ``OUT_DIR``
as its working folder, so the config's data paths are relative to ``OUT_DIR`` and
:func:`describe_idrid` records the command that rebuilds the same set there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .settings import REPO

IDRID_DATA = "scratch/fundus_data"  # relative to OUT_DIR: IDRiD layout, real images linked
GENERATED_DATA = "scratch/generated"  # relative to OUT_DIR: written by the trainer on first use
HELD_OUT = ("09", "10")  # IDRiD image numbers held out for validation, as the bundled recipe does


def find_idrid(explicit: str | None) -> Path | None:
    """``explicit``, else the first IDRiD 'A. Segmentation' subset found next to the repository or in
    the GPU wheelhouse; None when there is none (a folder counts when it has ``1. Original Images``)."""
    candidates = [Path(explicit)] if explicit else [
        REPO.parent / "shared" / "data" / "idrid_subset",
        REPO / "shared" / "data" / "idrid_subset",
        REPO / ".cache" / "gpu-wheelhouse" / "data" / "idrid_subset",
    ]
    return next((path for path in candidates if (path / "1. Original Images").is_dir()), None)


def assemble_idrid(out: Path, idrid: Path, generated: int) -> None:
    """The bundled recipe's data set in ``out/IDRID_DATA``: IDRiD images linked (``HELD_OUT`` to the
    validation split) plus ``generated`` semi-synthetic training images."""
    from training.recipes.fundus_training_set import assemble

    assemble(out / IDRID_DATA, idrid, list(HELD_OUT), generated)


def idrid_section(data: dict[str, Any]) -> dict[str, Any]:
    """The config's ``data`` section for the assembled set (recipe ``data`` with the root replaced)."""
    return {**data, "root": IDRID_DATA}


def generated_section(data: dict[str, Any], train: int, val: int) -> dict[str, Any]:
    """The config's ``data`` section for ``train`` + ``val`` generated semi-synthetic images (seed 0)."""
    return {**data, "kind": "generated", "root": GENERATED_DATA, "train_split": "train", "val_split": "",
            "generated_train": train, "generated_val": val, "generated_seed": 0}


def describe_idrid(idrid: Path, generated: int) -> dict[str, Any]:
    """What the assembled set is and the command that rebuilds it under ``OUT_DIR`` (``fundus.json``'s ``data``)."""
    return {"source": "IDRiD subset + semi-synthetic", "idrid": str(idrid),
            "held_out": [f"IDRiD_{number}" for number in HELD_OUT], "generated_train": generated,
            "recipe": "training.recipes.fundus_training_set.assemble", "root": IDRID_DATA,
            "rebuild": f"python -m training.recipes.fundus_training_set {IDRID_DATA} --idrid '{idrid}' "
                       f"--validation {','.join(HELD_OUT)} --generated {generated}"}


def describe_generated(train: int, val: int, why: str) -> dict[str, Any]:
    """What the generated set is (``fundus.json``'s ``data``); the trainer rebuilds it by itself."""
    return {"source": "generated (sample_data.fundus_samples semi-synthetic)", "generated_train": train,
            "generated_val": val, "why": why, "root": GENERATED_DATA,
            "rebuild": "none needed: the trainer writes the generated images into data.root on first use"}
