"""Real photographs that ship with scikit-image (no network needed).

* ``retina``: a normal-eye colour fundus photograph (``skimage.data.retina()``, CC0), the
  negative control: a lesion model should mark almost nothing on it.
* ``ihc``: an immunohistochemistry (IHC) staining tile (``skimage.data.immunohistochemistry()``).
"""

from __future__ import annotations

import numpy as np


def retina() -> np.ndarray:
    """The normal fundus photograph as (H, W, 3) uint8 RGB (1411×1411)."""
    from skimage import data

    return np.ascontiguousarray(data.retina())


def ihc() -> np.ndarray:
    """The immunohistochemistry tile as (H, W, 3) uint8 RGB (512×512)."""
    from skimage import data

    return np.ascontiguousarray(data.immunohistochemistry())
