"""Density → sampling positions, shared by a slide run and its preview (Jin et al., eq. 3).

A slide run (:mod:`napari_m2mrf.inference.slide`) and the Steer sampling widget's preview turn a density
map into the level-0 sampling positions with the same two functions, so the dots a user sees before a
run are exactly the samples the run reads:

* :func:`model_density`: a map of any size (the learned one, an edited one, a file's) → the model's
  ``h_d×w_d`` grid as a ``1×1×h_d×w_d`` float32 tensor (area means, checked, floored, sum 1:
  :func:`napari_m2mrf.sampling.density.resample_density`);
* :func:`grid_points`: the model's sampler on that density → ``h×w×2`` level-0 ``(y, x)`` positions;
* :func:`preview`: both, plus the relative sample density the dots are coloured by.

The budget (``h×w`` samples) is the run's output size: steering only moves samples, never adds any.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from napari_m2mrf.models.deform import grid_to_pixels
from napari_m2mrf.sampling.density import resample_density


def model_density(values: np.ndarray, density_size: tuple[int, int], where: str = "density map") -> torch.Tensor:
    """``1×1×h_d×w_d`` float32 density (sum 1) from a 2-D map of any size (``UserError`` for a bad map)."""
    resampled = resample_density(values, tuple(int(s) for s in density_size), where)
    return torch.from_numpy(resampled.astype(np.float32))[None, None]


def grid_points(sampler: nn.Module, density: torch.Tensor, output_size: tuple[int, int],
                image_shape: tuple[int, int]) -> np.ndarray:
    """``h×w×2`` float64 sampling positions, level-0 pixels ``(y, x)`` of an ``image_shape`` slide, from the
    sampler ``G_d`` on ``density`` ``1×1×h_d×w_d`` (any device) at ``output_size`` ``(h, w)``."""
    with torch.inference_mode():
        grid = sampler(density, tuple(output_size)).float().cpu()
    return grid_to_pixels(grid[0], tuple(image_shape)).double().numpy()


def relative_sample_density(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Local density ``h×w`` of a sampling grid ``h×w×2`` (level-0 ``(y, x)``) over the uniform density.

    The area one sample stands for is the absolute Jacobian determinant of grid index → position
    (central differences); a uniform ``h×w`` grid over an ``H×W`` image gives 1 everywhere.
    """
    points = np.asarray(points, np.float64)
    h, w = points.shape[:2]
    d_row = np.gradient(points, axis=0) if h > 1 else np.zeros_like(points)
    d_col = np.gradient(points, axis=1) if w > 1 else np.zeros_like(points)
    area = np.abs(d_row[..., 0] * d_col[..., 1] - d_row[..., 1] * d_col[..., 0])
    uniform_area = image_size[0] * image_size[1] / (h * w)
    return (uniform_area / np.maximum(area, 1e-6 * uniform_area)).astype(np.float32)


def preview(sampler: nn.Module, density: np.ndarray, density_size: tuple[int, int], output_size: tuple[int, int],
            image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Where a run with ``density`` (any size) would sample: ``(points h×w×2 float32, relative density h×w)``,
    the same positions the run reads (:func:`model_density` then :func:`grid_points`, on the CPU)."""
    points = grid_points(sampler, model_density(density, density_size), output_size, image_shape)
    return points.astype(np.float32), relative_sample_density(points, image_shape)


def sampler_for(meta: dict) -> nn.Module:
    """The sampler ``G_d`` a deformed checkpoint's metadata describes (no weights needed: it has none), for
    previews of a workspace reopened without its run in memory."""
    from napari_m2mrf.models.checkpoints import build_deformed

    return build_deformed(nn.Identity(), meta["deformed"]).sampler
