"""Pyramid-aware sampling: level choice, area-averaged reads, only the chunks under the samples decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from counting_store import CountingStore
from zarr.storage import LocalStore

from napari_m2mrf.models.deform import grid_to_pixels, uniform_grid
from napari_m2mrf.sampling.pyramid import (
    choose_levels,
    level_bytes,
    local_spacing,
    sample_pyramid,
)

CHUNK = 128


def area_mean(image: np.ndarray) -> np.ndarray:
    """2×2 mean of a ``(C, Y, X)`` level (float)."""
    c, h, w = image.shape
    return image[:, : h // 2 * 2, : w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 5-level (C, Y, X) uint8 pyramid in a zarr store (chunks 128²): smooth colours + fine noise."""
    path = tmp_path_factory.mktemp("pyramid") / "slide.zarr"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1024, 0:1536].astype(np.float32)
    smooth = np.stack((100 + 80 * np.sin(yy / 150), 120 + 60 * np.cos(xx / 200), 90 + 0.05 * (yy + xx) / 2))
    level0 = np.clip(smooth + rng.uniform(-60, 60, size=smooth.shape), 0, 255).astype(np.uint8)
    root = zarr.open_group(str(path), mode="w")
    image = level0.astype(np.float64)
    for k in range(5):
        root.create_array(str(k), data=np.rint(image).astype(np.uint8), chunks=(3, CHUNK, CHUNK))
        image = area_mean(image)
    return path, level0


def open_levels(path: Path, fetched: list | None = None) -> list:
    store = LocalStore(str(path), read_only=True)
    root = zarr.open_group(CountingStore(store, fetched) if fetched is not None else store, mode="r")
    return [root[str(k)] for k in range(5)]


FACTORS = [1, 2, 4, 8, 16]


def radial_warp(image_size, grid_size, gamma: float = 2.0) -> np.ndarray:
    """``h×w×2`` (y, x) grid squeezed towards (0.4, 0.6) of the image: spacing from < 1 to ~25 pixels."""
    (h, w), (height, width) = grid_size, image_size
    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    dy, dx = v - 0.4, u - 0.6
    r = np.hypot(dy, dx)
    scale = (r / r.max()) ** (gamma - 1)
    return np.stack(((0.4 + dy * scale) * height - 0.5, (0.6 + dx * scale) * width - 0.5), axis=-1)


def test_spacing_and_level_choice():
    points = grid_to_pixels(uniform_grid(1, (16, 24)), (256, 384))[0].double().numpy()
    assert np.allclose(local_spacing(points), 16.0)
    assert choose_levels(np.array([0.5, 1.0, 3.9, 4.0, 15.9, 16.0, 1000.0]), FACTORS).tolist() == [0, 0, 1, 2, 3, 4, 4]
    with pytest.raises(ValueError, match="increase"):
        choose_levels(np.ones(3), [1, 4, 2])


def test_uniform_grid_at_a_level_spacing_reads_that_level_exactly(pyramid):
    path, _ = pyramid
    levels = open_levels(path)
    points = grid_to_pixels(uniform_grid(1, (64, 96), dtype=torch.float64), (1024, 1536))[0].numpy()
    result = sample_pyramid(levels, FACTORS, points)
    assert result.values.shape == (64, 96, 3) and result.values.dtype == np.float32
    assert np.all(result.level == 4)
    assert np.allclose(result.values, np.asarray(levels[4]).transpose(1, 2, 0), atol=1e-3)


def test_deformed_grid_is_close_to_a_low_pass_filtered_level_0_and_alias_free(pyramid):
    path, level0 = pyramid
    levels = open_levels(path)
    points = radial_warp((1024, 1536), (64, 96))
    result = sample_pyramid(levels, FACTORS, points)
    assert set(np.unique(result.level)) == {0, 1, 2, 3, 4}  # dense and sparse parts: different levels
    spacing = local_spacing(points)
    # reference: each sample's box average over its own spacing, from level 0 (summed-area table)
    rows = np.clip(np.rint(points[..., 0]), 0, 1023).astype(int)
    cols = np.clip(np.rint(points[..., 1]), 0, 1535).astype(int)
    half = np.clip(np.rint(spacing), 1, None).astype(int) // 2
    top, bottom = np.clip(rows - half, 0, 1024), np.clip(rows + half + 1, 0, 1024)
    left, right = np.clip(cols - half, 0, 1536), np.clip(cols + half + 1, 0, 1536)
    table = np.zeros((3, 1025, 1537))
    table[:, 1:, 1:] = level0.astype(np.float64).cumsum(axis=1).cumsum(axis=2)
    sums = table[:, bottom, right] - table[:, top, right] - table[:, bottom, left] + table[:, top, left]
    reference = (sums / ((bottom - top) * (right - left))).transpose(1, 2, 0)
    naive = level0.transpose(1, 2, 0)[rows, cols].astype(np.float32)  # level 0, no low-pass filter
    error = np.abs(result.values - reference).mean()
    aliased = np.abs(naive - reference).mean()
    assert error < 5.0  # grey levels (0-255): the stated tolerance on this test pyramid
    assert aliased > 10 * error


def test_only_the_chunks_under_the_samples_are_decoded(pyramid):
    path, _ = pyramid
    fetched: list = []
    levels = open_levels(path, fetched)
    # a small dense grid in one corner of the slide: level 0 or 1 chunks there, nothing elsewhere
    grid = uniform_grid(1, (40, 40)) * 0.1 - 0.85
    points = grid_to_pixels(grid, (1024, 1536))[0].double().numpy()
    fetched.clear()
    result = sample_pyramid(levels, FACTORS, points)
    chunk_keys = [key for key, _ in fetched if "/c/" in key]
    assert len(chunk_keys) == result.stats.chunks == len(set(chunk_keys))
    touched_levels = {key.split("/")[0] for key in chunk_keys}
    assert touched_levels == {str(k) for k in result.stats.chunks_per_level}
    assert result.stats.bytes_decoded == result.stats.chunks * 3 * CHUNK * CHUNK
    assert result.stats.bytes_decoded <= 0.05 * level_bytes(levels[0])
    rows, cols = points[..., 0], points[..., 1]
    level = int(result.level.max())
    f = FACTORS[level]
    expected_chunks = {
        (int(r // f // CHUNK), int(c // f // CHUNK))
        for r in (rows.min(), rows.max())
        for c in (cols.min(), cols.max())
    }
    assert len(chunk_keys) <= len(expected_chunks) + 2


def test_channel_last_numpy_levels_give_the_same_values(pyramid):
    path, _ = pyramid
    levels = open_levels(path)
    channel_last = [np.asarray(level).transpose(1, 2, 0) for level in levels]
    points = radial_warp((1024, 1536), (48, 72))
    first = sample_pyramid(levels, FACTORS, points)
    second = sample_pyramid(channel_last, FACTORS, points, channel_axis=-1, workers=2)
    assert np.array_equal(first.values, second.values)
    grey = sample_pyramid([lvl[..., 1] for lvl in channel_last], FACTORS, points, channel_axis=None)
    assert np.array_equal(grey.values[..., 0], first.values[..., 1])


def test_bad_input_is_refused(pyramid):
    levels = open_levels(pyramid[0])
    points = np.zeros((4, 4, 2))
    with pytest.raises(ValueError, match="one downsample factor per level"):
        sample_pyramid(levels, FACTORS[:3], points)
    with pytest.raises(ValueError, match="finite"):
        sample_pyramid(levels, FACTORS, np.full((4, 4, 2), np.nan))
