"""The fundus stage's data: the real IDRiD images it cross-validates over, and the extra real
photographs every fold trains on; generated images stand in for the real ones in tiny mode.

Everything written goes under ``OUT_DIR/scratch`` (deleted after the check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .settings import REPO

TINY_REAL = "scratch/tiny_real"  # relative to OUT_DIR: generated images standing in for real ones
WHEELHOUSE_DATA = REPO / ".cache" / "gpu-wheelhouse" / "data"


def find_idrid(explicit: str | None) -> Path | None:
    """``explicit``, else the first IDRiD 'A. Segmentation' subset found next to the repository or in
    the GPU wheelhouse; None when there is none (a folder counts when it has ``1. Original Images``)."""
    candidates = [Path(explicit)] if explicit else [
        REPO.parent / "shared" / "data" / "idrid_subset",
        REPO / "shared" / "data" / "idrid_subset",
        WHEELHOUSE_DATA / "idrid_subset",
    ]
    return next((path for path in candidates if (path / "1. Original Images").is_dir()), None)


def find_extra() -> Path | None:
    """The idrid_extra photographs: the folder next to the repository (coarse masks and frame map),
    else the fitted assembly the GPU wheelhouse carries (``scripts/gpu_wheelhouse.sh``); None when
    neither is there."""
    shared = REPO.parent / "shared" / "data" / "idrid_extra"
    if (shared / "frame_map.json").is_file():
        return shared
    fitted = WHEELHOUSE_DATA / "idrid_extra_fitted"
    return fitted if (fitted / "1. Original Images").is_dir() else None


def tiny_real_set(out: Path, count: int, scale: float) -> Path:
    """``count`` semi-synthetic images (``scale`` × the sample's size) in IDRiD's layout under
    ``out/TINY_REAL``: the stand-in for real images (in tiny mode, so the same cross-validation
    runs on a CPU in seconds)."""
    from sample_data.fundus_samples import write_fundus_dataset
    from training.recipes import TRAIN

    return write_fundus_dataset(out / TINY_REAL, count, seed=7, split=TRAIN, scale=scale)


def describe(real: Path, real_is_generated: bool, extra: Path | None, generated: int) -> dict[str, Any]:
    """What the cross-validation trained and scored on (``fundus.json``'s ``data``)."""
    return {
        "scored": f"generated stand-ins ({real})" if real_is_generated else f"real IDRiD images ({real})",
        "extra": str(extra) if extra else None,
        "generated_train": generated,
    }
