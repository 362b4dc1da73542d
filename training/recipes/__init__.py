"""Development recipes: build the training sets, train, cross-validate, report on and bundle the default models in ``sample_data/checkpoints``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The bundled checkpoints and their training recipes (YAML); the recipes write here in a source checkout.
CHECKPOINTS = Path(str(resources.files("sample_data") / "checkpoints"))

#: IDRiD's layout, which the recipes assemble their data sets in: images and masks folders, splits.
IMAGES, MASKS = "1. Original Images", "2. All Segmentation Groundtruths"
TRAIN, VALIDATION = "a. Training Set", "b. Testing Set"
