"""The training runs the Train widget offers, as trainer configs (no Qt, no napari).

:func:`training_config` turns the widget's few choices (model, schedule, device, data) into a full
:class:`training.config.TrainingConfig` dict; :func:`folder_data` and :func:`pairs_data` build its
``data`` section for a dataset folder or for the image/labels pairs exported from layers;
:func:`trainer_command` is how the widget starts the trainer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

LAYOUTS = ("idrid", "ddr", "folder")  # dataset folder layouts (napari_m2mrf.io.datasets)
OFFICIAL_INPUT_SIZE = (960, 1440)  # IDRiD, as the official M2MRF code (height, width)
DEFAULT_ARCHITECTURE = "m2mrf_hrnetv2_w18s"
BACKBONE_WIDTHS = ("w18", "w32", "w48")


def architectures() -> list[str]:
    """The registry's HRNet segmentation networks (imports torch)."""
    from napari_m2mrf.models import list_models

    return [name for name in list_models() if any(width in name for width in BACKBONE_WIDTHS)]


def trainer_command(config_path: str | Path) -> list[str]:
    """The command that runs the trainer on a config in a process of its own: this Python with ``-P``
    (Python >= 3.11), so a ``training`` folder in the current directory cannot shadow the installed
    trainer."""
    return [sys.executable, "-P", "-m", "training", str(config_path)]


def folder_data(layout: str, root: str | Path) -> dict[str, Any]:
    """The ``data`` section for a dataset folder: IDRiD and DDR train on ``train`` and validate on
    ``test``; a plain ``folder`` layout has no splits."""
    splits = layout != "folder"
    return {"kind": layout, "root": str(root), "train_split": "train" if splits else "",
            "val_split": "test" if splits else ""}


def pairs_data(pairs: list[dict[str, str]]) -> dict[str, Any]:
    """The ``data`` section for exported image/labels pairs; they also serve as validation data."""
    return {"kind": "pairs", "pairs": pairs, "val_pairs": pairs}


def training_config(
    data: dict[str, Any],
    *,
    model: str,
    variant: str,
    init_checkpoint: str,
    iterations: int,
    batch_size: int,
    lr: float,
    crop: int,
    device: str,
    output_dir: Path,
) -> dict[str, Any]:
    """A trainer config (as nested dicts) for the widget's choices: Adam with poly decay, Dice loss,
    the M2MRF augmentations, evaluation four times per run when there is validation data. Images are
    fitted into the input size the Segment widget will use: the official 1440×960 from scratch, the
    starting checkpoint's when fine-tuning (whose architecture and options then win over ``model``
    and ``variant``)."""
    options = {"variant": variant} if model.startswith("m2mrf_") else {}
    input_size = list(OFFICIAL_INPUT_SIZE)
    if init_checkpoint:
        from napari_m2mrf.models import read_checkpoint_metadata

        meta = read_checkpoint_metadata(init_checkpoint)
        model, options = meta["arch"], {k: v for k, v in meta["model"].items() if k != "num_classes"}
        input_size = list(meta["input_size"])  # fine-tune at the scale the model segments at
    return {
        "data": data,
        "augment": {"resize": input_size, "crop": [crop, crop], "scale_range": [0.75, 1.5], "rotate90": True,
                    "hflip": 0.5, "vflip": 0.5, "photometric": True},
        "model": {"name": model, "options": options, "init_checkpoint": init_checkpoint, "sync_batchnorm": False},
        "loss": {"name": "dice"},
        "optim": {"name": "adam", "lr": lr, "weight_decay": 1e-4, "schedule": "poly", "min_lr": lr / 100},
        "run": {"iterations": iterations, "batch_size": batch_size, "device": device, "amp": True,
                "threads": max(1, (os.cpu_count() or 2) - 1),  # leave a core to the viewer
                "eval_every": max(1, iterations // 4), "checkpoint_every": max(1, iterations // 4),
                "output_dir": str(output_dir)},
    }
