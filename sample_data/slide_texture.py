"""Procedural H&E-like tissue: any 512×512 tile of a synthetic slide from its coordinates and a seed.

The slide is a pure function of (tile position, seed), so it can be made tile by tile in any
order without holding a level in memory:

* coarse fields (tissue outline, staining variation) on a grid of one cell per 64 pixels,
  interpolated bilinearly onto each tile;
* periodic fine textures (stromal nuclei, tumour nuclei, collagen fibres, debris), made once by
  filtering noise in the Fourier domain so that they tile seamlessly, read at ``(y, x) mod period``;
* target regions of three classes placed in the tissue — tumour nests, vessels, necrosis — small
  relative to the slide (tens to hundreds of pixels on a 32768² level 0);
* colours by the Beer–Lambert law with haematoxylin and eosin optical-density vectors.

Label values: 0 background/normal tissue, 1 tumour, 2 vessel, 3 necrosis.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

TILE = 512
CELL = 64
_TEXTURE_PERIOD = 1024
_FIBRE_PERIOD = 1280
# Optical density per unit stain (R, G, B): haematoxylin (blue-purple) and eosin (pink).
_OD_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29], dtype=np.float32) * 1.6
_OD_EOSIN = np.array([0.05, 0.75, 0.33], dtype=np.float32) * 0.9
_OD_GLASS = np.array([0.02, 0.025, 0.02], dtype=np.float32)
_LUT_STEPS = 64
_LUT_MAX = 2.0


@dataclass(frozen=True)
class Region:
    """One target region: class ``label``, centre (y, x), radius ``radius`` (level-0 pixels), shape terms."""

    label: int
    cy: float
    cx: float
    radius: float
    aspect: float
    angle: float
    harmonics: tuple[tuple[int, float, float], ...]
    wall: float

    @property
    def reach(self) -> float:
        """Half-size of the bounding box."""
        bulge = 1 + sum(abs(a) for _, a, _ in self.harmonics)
        return self.radius * max(self.aspect, 1.0) * bulge + 2


class TissueSynth:
    """Renders tiles of a ``size × size`` synthetic H&E slide (``size`` a multiple of 512)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        if size % TILE:
            raise ValueError(f"size must be a multiple of {TILE}, got {size}")
        self.size = size
        self.seed = seed
        rng = np.random.default_rng(seed)
        cells = size // CELL
        self.tissue = _tissue_field(cells, rng)
        self.stain = _smooth_periodic(rng.standard_normal((cells, cells)), cells / 24).astype(np.float32)
        self._padded_tissue = np.pad(self.tissue, 1, mode="edge")
        self._padded_stain = np.pad(self.stain, 1, mode="edge")
        # the random numbers first, in their fixed order; the FFT work (seconds; numpy releases the GIL) in threads
        stromal, tumour, debris = (_nuclei_draws(rng, _TEXTURE_PERIOD, count) for count in (900, 5200, 2600))
        fibre_noise = rng.standard_normal((_FIBRE_PERIOD,) * 2)
        grain_noise = rng.standard_normal((_TEXTURE_PERIOD,) * 2)
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            textures = [
                pool.submit(_nuclei_texture, tumour, _TEXTURE_PERIOD, radius=8.0, stretch=1.2),
                pool.submit(_nuclei_texture, debris, _TEXTURE_PERIOD, radius=2.5, stretch=1.0),
                pool.submit(_nuclei_texture, stromal, _TEXTURE_PERIOD, radius=5.0, stretch=2.2),
                pool.submit(_fibre_texture, fibre_noise),
                pool.submit(_smooth_periodic, grain_noise, 1.0),
            ]
            self.tumour_nuclei, self.debris, self.stromal_nuclei, self.fibres, grain = (t.result() for t in textures)
        self.grain = grain.astype(np.float32)
        self.regions = _place_regions(self.tissue, size, rng)
        self._centres = np.array([[r.cy, r.cx, r.reach] for r in self.regions], dtype=np.float64).reshape(-1, 3)
        self._lut = _stain_lut()
        rgba = np.concatenate([self._lut, np.zeros((_LUT_STEPS, _LUT_STEPS, 1), np.uint8)], axis=2)
        self._packed_lut = np.ascontiguousarray(rgba).view(np.uint32).reshape(-1)

    def tile(self, ty: int, tx: int) -> tuple[np.ndarray, np.ndarray]:
        """Tile (row ``ty``, column ``tx``): RGB ``(512, 512, 3)`` uint8 and labels ``(512, 512)`` uint8.

        A tile with next to no tissue and no region is plain glass as a whole."""
        ys = np.arange(ty * TILE, (ty + 1) * TILE)
        xs = np.arange(tx * TILE, (tx + 1) * TILE)
        tissue = self._coarse(self._padded_tissue, ys, xs)
        labels = self.labels_at(ys, xs)
        if tissue.max() < 0.02 and not labels.any():
            rgb = np.empty((TILE, TILE, 3), np.uint8)
            rgb[:] = self._lut[0, 0]
            return rgb, labels
        return self._render(ys, xs, tissue, labels), labels

    def render(self, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The level-0 pixels at rows ``ys`` × columns ``xs`` (ascending integer vectors, any spacing):
        RGB ``(len(ys), len(xs), 3)`` uint8 and labels. Pixels with next to no tissue and no region
        are glass one by one (coarser levels are made of such strided grids)."""
        tissue = self._coarse(self._padded_tissue, ys, xs)
        labels = self.labels_at(ys, xs)
        rgb = self._render(ys, xs, tissue, labels)
        glass = (tissue < 0.02) & (labels == 0)
        rgb[glass] = self._lut[0, 0]
        return rgb, labels

    def _render(self, ys: np.ndarray, xs: np.ndarray, tissue: np.ndarray, labels: np.ndarray) -> np.ndarray:
        stain = self._coarse(self._padded_stain, ys, xs)
        stromal = _periodic_window(self.stromal_nuclei, ys, xs)
        fibres = _periodic_window(self.fibres, ys, xs)
        grain = _periodic_window(self.grain, ys, xs)
        haem = tissue * (0.12 + 1.1 * stromal + 0.04 * grain)
        eosin = tissue * (0.42 + 0.12 * fibres + 0.08 * stain + 0.04 * grain)
        if labels.any():
            haem, eosin = self._paint_regions(labels, haem, eosin, ys, xs, grain)
        return self._colour(haem, eosin)

    def tile_labels(self, ty: int, tx: int) -> np.ndarray:
        """Labels ``(512, 512)`` uint8 of tile (``ty``, ``tx``); later regions are drawn over earlier ones."""
        return self.labels_at(np.arange(ty * TILE, (ty + 1) * TILE), np.arange(tx * TILE, (tx + 1) * TILE))

    def labels_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Labels ``(len(ys), len(xs))`` uint8 at level-0 rows ``ys`` × columns ``xs`` (ascending)."""
        labels = np.zeros((len(ys), len(xs)), np.uint8)
        for region, rows, cols in self._regions_over(ys, xs, self.regions):
            inside = _region_mask(region, ys[rows], xs[cols])
            labels[rows, cols][inside] = region.label
        return labels

    def _regions_over(self, ys: np.ndarray, xs: np.ndarray, regions) -> list[tuple[Region, slice, slice]]:
        """The regions whose bounding box meets the grid, each with the rows and columns of the grid it covers."""
        found = []
        for region in regions:
            ya, yb = np.searchsorted(ys, [int(region.cy - region.reach), int(region.cy + region.reach) + 1])
            xa, xb = np.searchsorted(xs, [int(region.cx - region.reach), int(region.cx + region.reach) + 1])
            if ya < yb and xa < xb:
                found.append((region, slice(int(ya), int(yb)), slice(int(xa), int(xb))))
        return found

    def _paint_regions(
        self, labels: np.ndarray, haem: np.ndarray, eosin: np.ndarray, ys: np.ndarray, xs: np.ndarray,
        grain: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        tumour, vessel, necrosis = labels == 1, labels == 2, labels == 3
        if tumour.any():
            nuclei = _periodic_window(self.tumour_nuclei, ys, xs)
            haem = np.where(tumour, 0.3 + 1.25 * nuclei + 0.05 * grain, haem)
            eosin = np.where(tumour, 0.3 + 0.05 * grain, eosin)
        if necrosis.any():
            debris = _periodic_window(self.debris, ys, xs)
            haem = np.where(necrosis, 0.04 + 0.7 * debris, haem)
            eosin = np.where(necrosis, 0.3 + 0.06 * grain, eosin)
        if vessel.any():
            lumen = vessel & (self._vessel_depth(ys, xs) > 0)
            haem = np.where(vessel, np.where(lumen, 0.02, 0.25), haem)
            eosin = np.where(vessel, np.where(lumen, 1.35 + 0.15 * grain, 0.85), eosin)
        return haem, eosin

    def _vessel_depth(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Positive inside vessel lumens (inner part of each vessel ring), at rows ``ys`` × columns ``xs``."""
        depth = np.zeros((len(ys), len(xs)), np.float32)
        vessels = [region for region in self.regions if region.label == 2]
        for region, rows, cols in self._regions_over(ys, xs, vessels):
            inner = Region(2, region.cy, region.cx, max(region.radius - region.wall, 1.0), region.aspect,
                           region.angle, region.harmonics, 0.0)
            depth[rows, cols][_region_mask(inner, ys[rows], xs[cols])] = 1.0
        return depth

    @staticmethod
    def _coarse(padded: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Bilinear interpolation of a coarse field (one value per 64-pixel cell, edge-padded by one) at the
        level-0 pixels ``ys`` × ``xs`` (cell centres at 32 + 64k)."""
        top, fy = _cell_weights(ys)
        left, fx = _cell_weights(xs)
        rows = padded[top] * (1 - fy)[:, None] + padded[top + 1] * fy[:, None]
        return rows[:, left] * (1 - fx)[None, :] + rows[:, left + 1] * fx[None, :]

    def _colour(self, haem: np.ndarray, eosin: np.ndarray) -> np.ndarray:
        scale = (_LUT_STEPS - 1) / _LUT_MAX
        hi = np.clip(haem * scale + 0.5, 0, _LUT_STEPS - 1).astype(np.int32)
        ei = np.clip(eosin * scale + 0.5, 0, _LUT_STEPS - 1).astype(np.int32)
        packed = self._packed_lut.take(hi * _LUT_STEPS + ei)
        return np.ascontiguousarray(packed.view(np.uint8).reshape(*haem.shape, 4)[..., :3])


def _cell_weights(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per level-0 pixel: the padded cell on its left/top and its weight towards the next one."""
    cells = (positions % TILE + 0.5) / CELL - 0.5 + 1  # within the pixel's 512 tile, as tiles were always made
    left = np.floor(cells).astype(np.intp)
    return left + (positions // TILE) * (TILE // CELL), (cells - left).astype(np.float32)


def _stain_lut() -> np.ndarray:
    """(64, 64, 3) uint8: RGB of haematoxylin amount × eosin amount (0..2 each) on glass."""
    amounts = np.linspace(0, _LUT_MAX, _LUT_STEPS, dtype=np.float32)
    density = (
        _OD_GLASS
        + amounts[:, None, None] * _OD_HAEMATOXYLIN
        + amounts[None, :, None] * _OD_EOSIN
    )
    return np.clip(255 * np.exp(-density), 0, 255).astype(np.uint8)


def _smooth_periodic(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-filtered ``noise`` with periodic boundaries (through the FFT), scaled to unit std."""
    fy = np.fft.fftfreq(noise.shape[0])[:, None]
    fx = np.fft.rfftfreq(noise.shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    smooth = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=noise.shape)
    return smooth / (smooth.std() + 1e-12)


def _tissue_field(cells: int, rng: np.random.Generator) -> np.ndarray:
    """(cells, cells) float32 in 0..1: a few lobes of tissue with ragged edges, glass elsewhere."""
    y, x = (np.mgrid[0:cells, 0:cells] + 0.5) / cells
    field = np.zeros((cells, cells))
    for _ in range(3):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        ry, rx = rng.uniform(0.18, 0.3, 2)
        field = np.maximum(field, 1 - ((y - cy) / ry) ** 2 - ((x - cx) / rx) ** 2)
    ragged = _smooth_periodic(rng.standard_normal((cells, cells)), cells / 40)
    field = field + 0.25 * ragged
    return np.clip((field - 0.05) * 6, 0, 1).astype(np.float32)


_NUCLEI_ORIENTATIONS, _NUCLEI_SIZES = 4, (0.8, 1.15)


@dataclass(frozen=True)
class _NucleiDraws:
    """The random part of a nuclei texture: per group the impulse rows, columns and weights; chromatin noise."""

    groups: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]
    chromatin: np.ndarray


def _nuclei_draws(rng: np.random.Generator, period: int, count: int) -> _NucleiDraws:
    """Draw a nuclei texture's random numbers (``count`` nuclei), in the order the texture always drew them."""
    per_group = count // (_NUCLEI_ORIENTATIONS * len(_NUCLEI_SIZES))
    groups = []
    for _ in range(_NUCLEI_ORIENTATIONS * len(_NUCLEI_SIZES)):
        rows, cols = rng.integers(0, period, per_group), rng.integers(0, period, per_group)
        groups.append((rows, cols, rng.uniform(0.6, 1.0, per_group).astype(np.float32)))
    return _NucleiDraws(tuple(groups), rng.standard_normal((period, period)))


def _nuclei_texture(draws: _NucleiDraws, period: int, radius: float, stretch: float) -> np.ndarray:
    """(period, period) float32 in 0..1: elliptic nuclei of about ``radius`` px, periodic.

    Nuclei are grouped by orientation and size; each group is a field of impulses convolved (via
    the FFT, so the result wraps around seamlessly) with that group's elliptic blob.
    """
    spectrum = np.zeros((period, period // 2 + 1), np.complex64)
    offsets = np.fft.fftfreq(period, 1 / period).astype(np.float32)  # signed pixel offsets 0, 1, …, -1
    dy, dx = offsets[:, None], offsets[None, :]
    for group, (rows, cols, weights) in enumerate(draws.groups):
        angle = np.pi * (group % _NUCLEI_ORIENTATIONS) / _NUCLEI_ORIENTATIONS
        size = radius * _NUCLEI_SIZES[group // _NUCLEI_ORIENTATIONS]
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        blob = np.clip(1.6 - (u / (size * stretch)) ** 2 - (v / size) ** 2, 0, 1).astype(np.float32)
        impulses = np.zeros((period, period), np.float32)
        np.add.at(impulses, (rows, cols), weights)
        spectrum += np.fft.rfft2(impulses) * np.fft.rfft2(blob)
    canvas = np.fft.irfft2(spectrum, s=(period, period))
    chromatin = _smooth_periodic(draws.chromatin, 1.2)
    return np.clip(np.clip(canvas, 0, 1) * (0.85 + 0.15 * chromatin), 0, 1).astype(np.float32)


def _fibre_texture(noise: np.ndarray) -> np.ndarray:
    """(period, period) float32 around 0: wavy collagen streaks (``noise`` filtered anisotropically)."""
    period = noise.shape[0]
    fy = np.fft.fftfreq(period)[:, None]
    fx = np.fft.rfftfreq(period)[None, :]
    kernel = np.exp(-2 * np.pi**2 * ((12 * fy) ** 2 + (2 * fx) ** 2))
    streaks = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=noise.shape)
    return (streaks / (streaks.std() + 1e-12)).astype(np.float32)


def _periodic_window(texture: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A periodic texture at level-0 rows ``ys`` × columns ``xs`` (``(y, x) mod period``)."""
    period = texture.shape[0]
    if len(ys) > 1 and len(xs) > 1 and ys[-1] - ys[0] == len(ys) - 1 and xs[-1] - xs[0] == len(xs) - 1:
        y0, x0 = ys[0] % period, xs[0] % period
        if y0 + len(ys) <= period and x0 + len(xs) <= period:  # a contiguous window: a view
            return texture[y0 : y0 + len(ys), x0 : x0 + len(xs)]
    return texture[np.ix_(ys % period, xs % period)]


def _region_mask(region: Region, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bool mask over rows ``ys`` × columns ``xs`` (level-0 pixels): inside the region's irregular outline."""
    dy = (ys.astype(np.float32) + 0.5 - region.cy)[:, None]
    dx = (xs.astype(np.float32) + 0.5 - region.cx)[None, :]
    cos, sin = np.cos(region.angle), np.sin(region.angle)
    u = (dy * cos + dx * sin) / region.aspect
    v = -dy * sin + dx * cos
    distance = np.hypot(u, v)
    theta = np.arctan2(u, v)
    outline = np.full_like(distance, region.radius)
    for order, amplitude, phase in region.harmonics:
        outline += region.radius * amplitude * np.cos(order * theta + phase)
    return distance < outline


def _place_regions(tissue: np.ndarray, size: int, rng: np.random.Generator) -> list[Region]:
    """Target regions inside the tissue: necrosis first, then tumour nests, then vessels (drawn on top)."""
    area = (size / 32768) ** 2
    shrink = max(size / 32768, 0.25)  # small test slides get smaller regions, so they stay small
    plans = (  # label, count on a 32768² slide, radius range (level-0 pixels), aspect range, wall
        (3, 14, (120, 320), (1.0, 1.6), 0.0),
        (1, 45, (60, 260), (1.0, 1.8), 0.0),
        (2, 90, (18, 60), (1.0, 3.0), 9.0),
    )
    inside = np.argwhere(tissue > 0.9)
    regions = []
    for label, count, (r_min, r_max), (a_min, a_max), wall in plans:
        for _ in range(max(3, int(round(count * area)))):
            if inside.size == 0:
                break
            cell = inside[rng.integers(len(inside))]
            cy, cx = (cell + rng.uniform(0, 1, 2)) * CELL
            harmonics = tuple(
                (order, float(rng.uniform(0.0, 0.18 if label != 2 else 0.05)), float(rng.uniform(0, 2 * np.pi)))
                for order in (2, 3, 5)
            )
            regions.append(
                Region(
                    label=label,
                    cy=float(cy),
                    cx=float(cx),
                    radius=float(rng.uniform(r_min, r_max) * shrink),
                    aspect=float(rng.uniform(a_min, a_max)),
                    angle=float(rng.uniform(0, np.pi)),
                    harmonics=harmonics,
                    wall=wall * shrink,
                )
            )
    return regions
