"""Sampling-density maps a person (or a file) gives the deformed sampler, numpy only.

The sampler of Jin et al. (eq. 3) turns *any* positive density ``h_d×w_d`` into sampling positions;
the segmentation network never sees the density, so a map edited by hand steers where the fixed
budget of samples goes without retraining. This module holds what such a map needs before the
sampler (in ``models/deform.py``) gets it:

* :func:`resample_density`: a map of any size (a ``.npy``, an image, a memory-mapped huge array)
  → the model's ``h_d×w_d`` grid by exact area averaging (each output cell is the mean of the input
  over the area it covers), checked on the way (finite, not negative, not all zero), band by band
  so a memory-mapped map is never read whole, then floored at :data:`MIN_RELATIVE_DENSITY` of the
  mean (a zero region would leave the sampler's weighted mean undefined) and normalised to sum 1.
* :func:`steer_density`: a base map (the learned one) times a factor map (the user's brush strokes and
  regions, on a finer edit grid) → the steered density, same size as the base, sum 1.
* :data:`BRUSH_FACTORS`: the brush's label values and the factor each paints.

Units: densities are relative (only ratios matter); factors multiply the density where they are
painted (×4 = four times as many samples per area there, before the sampler's Gaussian smoothing
and the fixed budget take their share back from everywhere else).
"""

from __future__ import annotations

import numpy as np

from napari_m2mrf.errors import UserError

MIN_RELATIVE_DENSITY = 1e-3  # floor of any density pixel, relative to the map's mean
MIN_SIDE = 2  # a map needs at least 2×2 pixels to say where anything is
MAX_FACTOR = 64.0  # a factor map is clipped to [1/MAX_FACTOR, MAX_FACTOR]
BAND_BYTES = 64 << 20  # input rows read per step while resampling
BRUSH_FACTORS: dict[int, float] = {1: 2.0, 2: 4.0, 3: 8.0, 4: 16.0, 5: 0.5, 6: 0.25, 7: 0.125, 8: 1 / 16}
"""Label value → density factor of the brush layer (0: unchanged)."""


def factor_name(factor: float) -> str:
    """``×4``, ``×½``, ``×1/16`` …: how a factor reads in the widget."""
    if factor >= 1:
        return f"×{factor:g}"
    fractions = {0.5: "½", 0.25: "¼", 0.125: "⅛"}
    return "×" + fractions.get(factor, f"1/{1 / factor:g}")


def _area_weights(length_in: int, length_out: int) -> np.ndarray:
    """``(length_out, length_in)`` float64: share of output cell ``i`` covered by input cell ``j`` (rows sum 1)."""
    edges_in = np.arange(length_in + 1) / length_in
    edges_out = np.arange(length_out + 1) / length_out
    low = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    high = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(high - low, 0.0, None) * length_out


def check_density_shape(shape: tuple[int, ...], where: str) -> tuple[int, int]:
    """``(Y, X)`` of a density map of ``shape``; ``UserError`` for anything but a 2-D map of at least 2×2."""
    if len(shape) != 2:
        raise UserError(f"{where}: a density map must be 2-D (Y, X); got shape {tuple(shape)}")
    if min(shape) < MIN_SIDE:
        raise UserError(f"{where}: a density map of {shape[1]}×{shape[0]} pixels says nothing about where to "
                        f"sample; give at least {MIN_SIDE}×{MIN_SIDE}")
    return int(shape[0]), int(shape[1])


def resample_density(values: np.ndarray, size: tuple[int, int], where: str = "density map",
                     normalise: bool = True) -> np.ndarray:
    """``size`` ``(h_d, w_d)`` float64 area means of the 2-D map ``values`` (any numeric array, also a
    memory-mapped one), checked (finite, ≥ 0, not all zero; ``UserError`` naming ``where``).

    ``normalise``: floor at :data:`MIN_RELATIVE_DENSITY` of the mean and scale to sum 1 (a density);
    otherwise the plain means (a factor map).
    """
    height, width = check_density_shape(tuple(values.shape), where)
    if values.dtype.kind not in "biuf":
        raise UserError(f"{where}: a density map must hold numbers; got {values.dtype}")
    weights_y, weights_x = _area_weights(height, size[0]), _area_weights(width, size[1])
    out = np.zeros(size, np.float64)
    rows = max(1, BAND_BYTES // max(1, width * 8))
    for start in range(0, height, rows):
        band = np.asarray(values[start:start + rows], np.float64)
        if not np.isfinite(band).all():
            raise UserError(f"{where}: holds NaN or infinite values; a density must be a finite number everywhere")
        if (band < 0).any():
            raise UserError(f"{where}: holds negative values; a density cannot be negative")
        out += weights_y[:, start:start + rows] @ band @ weights_x.T
    if not out.max() > 0:
        raise UserError(f"{where}: is zero everywhere; a density must be positive somewhere")
    return normalised(out) if normalise else out


def normalised(density: np.ndarray) -> np.ndarray:
    """``density`` floored at :data:`MIN_RELATIVE_DENSITY` of its mean, scaled to sum 1 (float64)."""
    density = np.asarray(density, np.float64)
    density = np.maximum(density, MIN_RELATIVE_DENSITY * density.mean())
    return density / density.sum()


def brush_factors(labels: np.ndarray) -> np.ndarray:
    """Factor per pixel (float64) of a brush label map: :data:`BRUSH_FACTORS`, 1 where unpainted or unknown."""
    table = np.ones(max(BRUSH_FACTORS) + 1, np.float64)
    for value, factor in BRUSH_FACTORS.items():
        table[value] = factor
    labels = np.asarray(labels)
    return np.where(labels < len(table), table[np.clip(labels, 0, len(table) - 1)], 1.0)


def steer_density(base: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    """The steered density ``h_d×w_d`` (float64, sum 1): ``base`` times ``factors`` (any size; area-averaged
    onto the base's grid, clipped to ``[1/MAX_FACTOR, MAX_FACTOR]``); ``factors=None`` keeps the base."""
    base = np.asarray(base, np.float64)
    if factors is None:
        return normalised(base)
    mean_factor = resample_density(np.clip(factors, 1 / MAX_FACTOR, MAX_FACTOR), base.shape, "factor map",
                                   normalise=False)
    return normalised(base * mean_factor)


def region_factors(shape: tuple[int, int], regions: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Factor map ``shape`` (float64): 1, multiplied by each region's factor inside it. ``regions``:
    ``(bool mask of shape, factor)`` pairs (overlapping regions multiply)."""
    factors = np.ones(shape, np.float64)
    for mask, factor in regions:
        factors[np.asarray(mask, bool)] *= float(factor)
    return factors
