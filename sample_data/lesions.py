"""Procedural diabetic-retinopathy lesions drawn onto a fundus photograph with exact masks.

Every lesion is an opacity patch ``alpha`` (h, w) in [0, 1] that is 0 off the lesion and at least
0.5 on it: its mask is exactly ``alpha >= 0.5`` and no pixel outside the mask is touched. It is
blended over the photograph as ``out = background + weight * (appearance - background)`` with
``appearance = (colour_matrix @ background + offsets) * texture`` (the lesion's colour follows
the local background, as it does in real photographs under varying illumination) and a blend weight that
grows with the opacity, from the lesion's ``rim_weight`` on its outline (alpha = 0.5) to 1 where
alpha = 1: rims are faint and cores solid, as in real (slightly blurred) photographs, while the
mask stays exactly the set of changed pixels.

Sizes are equivalent diameters (diameter of the disc of the same area) in pixels of a photograph
whose field of view is 1396 px across (``scale`` 1); they follow the IDRiD masks measured at that
scale: microaneurysms (MA) 3–12 px dark red dots, often clustered; haemorrhages (HE) 10–100 px dots,
blots and flames; hard exudates (EX) 2–40 px bright waxy yellow spots in clusters and rings; soft
exudates (SE) 20–80 px pale fluffy patches near the vessel arcades. Colours were calibrated
against the lesion/background ratios of the IDRiD photographs (somewhat stronger, so that they
are visible at this smaller scale). Lesions do not touch each other, stay inside the field of
view and off the optic disc; microaneurysms and exudates stay off the large vessels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from sample_data.fundus_variants import RETINA_FIELD_OF_VIEW_RADIUS, Fundus

# Equivalent diameter ranges (pixels at scale 1) of one lesion of each class.
LESION_DIAMETER_RANGES: dict[str, tuple[float, float]] = {
    "MA": (3.0, 12.0),
    "HE": (10.0, 100.0),
    "EX": (2.0, 40.0),
    "SE": (20.0, 80.0),
}
_SMALLEST_DIAMETER = 2.0  # px: nothing smaller is rendered at any scale
_GAP = 2  # px kept free around every lesion so that lesions never touch
_FIELD_OF_VIEW_MARGIN = 0.94  # lesions stay within this fraction of the field-of-view radius
_PLACEMENT_ATTEMPTS = 12
# Largest fraction of a lesion's mask that may lie on a vessel.
_MAX_VESSEL_FRACTION = {"MA": 0.0, "EX": 0.05, "HE": 0.25, "SE": 0.35}
# Colour matrices (acting on RGB) at full strength. Hard exudates: red up, green pulled towards
# about 0.65 × red (a waxy yellow whatever the camera's colour cast), blue kept. Soft exudates:
# green and blue lifted towards red (paler, less saturated).
_EXUDATE_YELLOW = np.array([[1.15, 0.0, 0.0], [0.5, 0.55, 0.0], [0.0, 0.0, 1.0]])
_SOFT_EXUDATE_PALE = np.array([[1.04, 0.0, 0.0], [0.2, 0.75, 0.0], [0.15, 0.0, 0.7]])


@dataclass(frozen=True)
class Lesion:
    """One rendered lesion, before placement.

    ``opacity``: (h, w) float32 in [0, 1], 0 off the lesion and ≥ 0.5 on it; its centre pixel
    ``(h // 2, w // 2)`` is the lesion's anchor. At full opacity the colour becomes
    ``(colour_matrix @ background + offsets) * texture`` per pixel: ``colour_matrix`` (3, 3) acts
    on RGB, ``offsets`` (3,) in grey levels, ``texture`` (h, w) a relative brightness modulation
    near 1. ``rim_weight`` in (0, 1] is the blend weight on the outline (low: a soft edge).
    """

    code: str
    opacity: np.ndarray
    colour_matrix: np.ndarray
    offsets: np.ndarray
    texture: np.ndarray
    rim_weight: float

    @property
    def mask(self) -> np.ndarray:
        """(h, w) bool: where the lesion is."""
        return self.opacity >= 0.5

    @property
    def blend_weight(self) -> np.ndarray:
        """(h, w) float32: 0 off the lesion, ``rim_weight`` on its outline rising to 1 at full opacity."""
        ramp = self.rim_weight + (1.0 - self.rim_weight) * np.clip(2.0 * self.opacity - 1.0, 0.0, 1.0)
        return np.where(self.mask, ramp, 0.0).astype(np.float32)

    @property
    def clear_of_patch_edges(self) -> bool:
        """True when the mask keeps the gap from the patch's edges (so it was not cut off there)."""
        mask = self.mask
        return not (mask[:_GAP].any() or mask[-_GAP:].any() or mask[:, :_GAP].any() or mask[:, -_GAP:].any())

    @property
    def equivalent_diameter(self) -> float:
        """Diameter (pixels) of the disc with the lesion's area."""
        return math.sqrt(4.0 * float(self.mask.sum()) / math.pi)


# ---------------------------------------------------------------------------------------------
# Shapes: a density field peaking in the middle, 0.5 on the nominal outline, then opacity.


def _grid(half: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets (2·half+1 square, float32) from a sub-pixel-jittered centre."""
    jitter = rng.uniform(-0.5, 0.5, 2)
    axis = np.arange(-half, half + 1, dtype=np.float32)
    return axis[:, None] - np.float32(jitter[0]), axis[None, :] - np.float32(jitter[1])


def _ellipse_density(
    rows: np.ndarray, cols: np.ndarray, radii: tuple[float, float], angle: float, peak: float
) -> np.ndarray:
    """``peak`` at the centre falling to exactly 0.5 on the ellipse with semi-axes ``radii``.

    ``angle`` (radians) is the direction of the first axis, measured from the column axis
    towards the row axis. Shape (h, w) float32.
    """
    along = cols * math.cos(angle) + rows * math.sin(angle)
    across = -cols * math.sin(angle) + rows * math.cos(angle)
    q = (along / radii[0]) ** 2 + (across / radii[1]) ** 2
    return (peak * np.exp(-math.log(2.0 * peak) * q)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-deviation Gaussian-smoothed noise of ``shape`` with correlation length ``sigma`` px."""
    noise = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), max(sigma, 0.5), mode="wrap")
    return noise / max(float(noise.std()), 1e-6)


def _opacity(density: np.ndarray, blur_sigma: float) -> np.ndarray:
    """Opacity from a density field: optical blur, then the largest connected part where ≥ 0.5."""
    if blur_sigma > 0:
        density = ndi.gaussian_filter(density, blur_sigma)
    inside, count = ndi.label(density >= 0.5)
    if count > 1:
        sizes = np.bincount(inside.ravel())
        sizes[0] = 0
        inside = inside == int(sizes.argmax())
    else:
        inside = inside > 0
    return np.where(inside, np.minimum(density, 1.0), 0.0).astype(np.float32)


def _lumpy_density(
    rng: np.random.Generator, diameter: float, lobes: int, peak: float, roughness: float, lump_size: float
) -> np.ndarray:
    """A blob of about ``diameter`` px: the sum of ``lobes`` overlapping ellipses, with a rough outline.

    Returns the density on a square patch (float32) with room around the blob.
    """
    half = int(math.ceil(diameter * 0.9)) + _GAP + 3
    rows, cols = _grid(half, rng)
    density = np.zeros(rows.shape[0:1] + cols.shape[1:], np.float32)
    lobe_radius = diameter / 2 if lobes == 1 else diameter / 2 * 0.62
    for _ in range(lobes):
        shift = rng.normal(0.0, 0.0 if lobes == 1 else diameter * 0.17, 2)
        radii = (lobe_radius * rng.uniform(0.8, 1.15), lobe_radius * rng.uniform(0.65, 1.0))
        density += _ellipse_density(rows - shift[0], cols - shift[1], radii, rng.uniform(0, math.pi), peak)
    if roughness:
        density *= 1.0 + roughness * _smooth_noise(rng, density.shape, lump_size)
    return density


def _texture(rng: np.random.Generator, shape: tuple[int, int], strength: float, grain: float) -> np.ndarray:
    return (1.0 + strength * _smooth_noise(rng, shape, grain)).astype(np.float32)


def _lesion(
    code: str,
    density: np.ndarray,
    blur_sigma: float,
    colour_matrix: np.ndarray,
    offsets: tuple[float, float, float],
    texture: np.ndarray,
    rim_weight: float,
) -> Lesion:
    return Lesion(
        code=code,
        opacity=_opacity(density, blur_sigma),
        colour_matrix=np.asarray(colour_matrix, np.float32),
        offsets=np.asarray(offsets, np.float32),
        texture=texture,
        rim_weight=rim_weight,
    )


def microaneurysm(rng: np.random.Generator, scale: float, blur_sigma: float) -> Lesion:
    """A round dark red dot, 3.4–11 px (mostly small), with a soft rim."""
    diameter = max(_SMALLEST_DIAMETER + 1.0, 3.4 * (11.0 / 3.4) ** (rng.random() ** 1.5) * scale)
    density = _lumpy_density(rng, diameter, 1, rng.uniform(1.3, 2.2), 0.05, 1.0)
    darken = np.diag([rng.uniform(0.87, 0.95), rng.uniform(0.64, 0.78), rng.uniform(0.68, 0.82)])
    return _lesion("MA", density, blur_sigma, darken, (0.0, 0.0, 0.0), np.ones_like(density), 0.3)


def haemorrhage(rng: np.random.Generator, scale: float, blur_sigma: float, fibre_angle: float) -> Lesion:
    """A dot (10–20 px), blot (16–85 px, irregular) or flame (streaky, along the nerve fibres)."""
    kind = rng.choice(["dot", "blot", "flame"], p=[0.3, 0.5, 0.2])
    if kind == "dot":
        diameter = rng.uniform(11.0, 20.0) * scale
        density = _lumpy_density(rng, diameter, 1, rng.uniform(1.5, 3.0), 0.12, diameter / 4)
        gains = (rng.uniform(0.82, 0.9), rng.uniform(0.6, 0.72), rng.uniform(0.65, 0.78))
        rim_weight = 0.3
    elif kind == "blot":
        diameter = 16.0 * (85.0 / 16.0) ** rng.random() * scale
        lobes = int(rng.integers(2, 6))
        density = _lumpy_density(rng, diameter, lobes, rng.uniform(1.3, 2.5), 0.3, diameter / 7)
        gains = (rng.uniform(0.82, 0.92), rng.uniform(0.62, 0.75), rng.uniform(0.66, 0.8))
        rim_weight = 0.25
    else:
        density = _flame_density(rng, scale, fibre_angle)
        gains = (rng.uniform(0.82, 0.92), rng.uniform(0.62, 0.75), rng.uniform(0.66, 0.8))
        rim_weight = 0.2
    texture = _texture(rng, density.shape, 0.04, max(1.0, density.shape[0] / 12))
    return _lesion("HE", density, blur_sigma, np.diag(gains), (0.0, 0.0, 0.0), texture, rim_weight)


def _flame_density(rng: np.random.Generator, scale: float, fibre_angle: float) -> np.ndarray:
    """A tapered, striated streak 30–100 px long and 7–18 px wide along ``fibre_angle``."""
    length = rng.uniform(30.0, 100.0) * scale
    width = rng.uniform(7.0, 18.0) * scale
    half = int(math.ceil(length / 2)) + _GAP + 4
    rows, cols = _grid(half, rng)
    along = cols * math.cos(fibre_angle) + rows * math.sin(fibre_angle)
    across = -cols * math.sin(fibre_angle) + rows * math.cos(fibre_angle)
    # Wider towards one end, pointed at the other (the flame's tail).
    local_half_width = width / 2 * np.clip(0.75 - 0.5 * along / (length / 2), 0.25, 1.2)
    peak = rng.uniform(1.5, 2.5)
    q = (along / (length / 2)) ** 2 + (across / local_half_width) ** 2
    density = peak * np.exp(-math.log(2.0 * peak) * q)
    wavelength = rng.uniform(2.5, 5.0) * scale
    striae = np.cos(2 * math.pi * across / wavelength + rng.uniform(0, 2 * math.pi))
    density *= 1.0 + 0.12 * striae + 0.15 * _smooth_noise(rng, density.shape, width / 3)
    return density.astype(np.float32)


def hard_exudate(rng: np.random.Generator, scale: float, blur_sigma: float, diameter: float) -> Lesion:
    """A bright waxy yellow spot of about ``diameter`` px with a crisp, irregular outline."""
    lobes = 1 if diameter < 6 * scale else int(rng.integers(2, 6))
    density = _lumpy_density(rng, diameter, lobes, rng.uniform(2.0, 4.0), 0.4, max(1.0, diameter / 4))
    strength = rng.uniform(0.65, 1.0)
    colour = np.eye(3) + strength * (_EXUDATE_YELLOW - np.eye(3))
    offsets = strength * np.array([18.0, 15.0, 2.0])
    texture = _texture(rng, density.shape, 0.04, max(1.0, diameter / 6))
    return _lesion("EX", density, blur_sigma, colour, offsets, texture, 0.3)


def soft_exudate(rng: np.random.Generator, scale: float, blur_sigma: float) -> Lesion:
    """A pale, fluffy, soft-edged patch of 24–70 px (a cotton-wool spot)."""
    diameter = rng.uniform(24.0, 70.0) * scale
    lobes = int(rng.integers(2, 5))
    density = _lumpy_density(rng, diameter, lobes, rng.uniform(1.05, 1.4), 0.35, diameter / 9)
    density = ndi.gaussian_filter(density, 2.5 * scale)
    strength = rng.uniform(0.75, 1.0)
    colour = np.eye(3) + strength * (_SOFT_EXUDATE_PALE - np.eye(3))
    offsets = strength * np.array([8.0, 10.0, 8.0])
    texture = _texture(rng, density.shape, 0.05, max(1.0, diameter / 10))
    return _lesion("SE", density, blur_sigma, colour, offsets, texture, 0.12)


# ---------------------------------------------------------------------------------------------
# Placement: a canvas that accepts a lesion only where it is allowed, then blends it in.


class LesionCanvas:
    """A fundus photograph receiving lesions: the blended image, per-class masks and free space."""

    def __init__(self, fundus: Fundus) -> None:
        self.fundus = fundus
        self.image = fundus.image.astype(np.float32)
        shape = fundus.image.shape[:2]
        self.masks = {code: np.zeros(shape, bool) for code in LESION_DIAMETER_RANGES}
        self._occupied = np.zeros(shape, bool)

    def place(self, lesion: Lesion, centre: tuple[float, float]) -> bool:
        """Blend ``lesion`` with its anchor at ``centre`` (row, col) if allowed there; True if placed."""
        height, width = self.image.shape[:2]
        h, w = lesion.opacity.shape
        top, left = int(round(centre[0])) - h // 2, int(round(centre[1])) - w // 2
        if top < 0 or left < 0 or top + h > height or left + w > width:
            return False
        window = (slice(top, top + h), slice(left, left + w))
        mask = lesion.mask
        if not mask.any() or not lesion.clear_of_patch_edges or (mask & self._occupied[window]).any():
            return False
        if not self._allowed(lesion, mask, top, left):
            return False
        background = self.image[window]
        weight = lesion.blend_weight[..., None]
        appearance = (background @ lesion.colour_matrix.T + lesion.offsets) * lesion.texture[..., None]
        np.clip(appearance, 0.0, 255.0, out=appearance)
        self.image[window] = np.where(weight > 0, background + weight * (appearance - background), background)
        self.masks[lesion.code][window] |= mask
        self._occupied[window] |= ndi.binary_dilation(mask, iterations=_GAP)
        return True

    def _may_hold(self, code: str, centre: tuple[float, float]) -> bool:
        """Cheap check before drawing a shape: is the centre itself a possible place for ``code``?"""
        geometry = self.fundus.geometry
        row, col = int(round(centre[0])), int(round(centre[1]))
        height, width = self._occupied.shape
        if not (0 <= row < height and 0 <= col < width) or self._occupied[row, col]:
            return False
        if _MAX_VESSEL_FRACTION[code] < 0.1 and geometry.vessels[row, col]:
            return False
        fov_distance = math.dist(centre, geometry.field_of_view_centre)
        disc_distance = math.dist(centre, geometry.optic_disc)
        return fov_distance < _FIELD_OF_VIEW_MARGIN * geometry.field_of_view_radius and (
            disc_distance > geometry.optic_disc_keep_out
        )

    def _allowed(self, lesion: Lesion, mask: np.ndarray, top: int, left: int) -> bool:
        """Inside the field of view, off the optic disc, and not too much on vessels."""
        geometry = self.fundus.geometry
        rows, cols = np.nonzero(mask)
        rows = rows + top
        cols = cols + left
        fov_row, fov_col = geometry.field_of_view_centre
        fov_limit = (_FIELD_OF_VIEW_MARGIN * geometry.field_of_view_radius) ** 2
        if np.max((rows - fov_row) ** 2 + (cols - fov_col) ** 2) > fov_limit:
            return False
        disc_row, disc_col = geometry.optic_disc
        if np.min((rows - disc_row) ** 2 + (cols - disc_col) ** 2) < geometry.optic_disc_keep_out**2:
            return False
        on_vessels = np.count_nonzero(geometry.vessels[rows, cols])
        return on_vessels <= _MAX_VESSEL_FRACTION[lesion.code] * rows.size

    def place_near(
        self,
        code: str,
        make_lesion: Callable[[tuple[float, float]], Lesion],
        choose_centre: Callable[[], tuple[float, float]],
        diameter_range: tuple[float, float],
    ) -> bool:
        """Try a few centres (and fresh shapes) until a ``code`` lesion within ``diameter_range`` fits."""
        for _ in range(_PLACEMENT_ATTEMPTS):
            centre = choose_centre()
            if not self._may_hold(code, centre):
                continue
            lesion = make_lesion(centre)
            if diameter_range[0] <= lesion.equivalent_diameter <= diameter_range[1] and self.place(lesion, centre):
                return True
        return False

    def rendered_image(self) -> np.ndarray:
        """The photograph with its lesions, (H, W, 3) uint8."""
        return np.clip(np.rint(self.image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Layout: how many lesions of each class, and where (mostly around the macula, as in DR).


@dataclass(frozen=True)
class LesionLoad:
    """How many lesions one image gets: clusters of MA, single HE, clusters (or rings) of EX, SE."""

    microaneurysm_clusters: int
    haemorrhages: int
    exudate_clusters: int
    soft_exudates: int

    @classmethod
    def random(cls, rng: np.random.Generator, with_soft_exudates: bool, severity: float | None = None) -> LesionLoad:
        """Counts for a retinopathy ``severity`` in [0.3, 1] (drawn when None), each jittered."""
        severity = rng.uniform(0.3, 1.0) if severity is None else severity
        return cls(
            microaneurysm_clusters=int(round(3 + 10 * severity * rng.uniform(0.6, 1.2))),
            haemorrhages=int(round(2 + 12 * severity * rng.uniform(0.5, 1.2))),
            exudate_clusters=int(round(1 + 6 * severity * rng.uniform(0.5, 1.2))),
            soft_exudates=int(rng.integers(1, 5)) if with_soft_exudates else 0,
        )


def draw_lesions(canvas: LesionCanvas, load: LesionLoad, rng: np.random.Generator, scale: float) -> None:
    """Draw ``load`` onto ``canvas``: exudates first, microaneurysms last (lower to higher priority)."""
    geometry = canvas.fundus.geometry
    blur = canvas.fundus.blur_sigma
    limits = {code: _diameter_limits(code, scale) for code in LESION_DIAMETER_RANGES}
    radius = geometry.field_of_view_radius

    def around(point: tuple[float, float], spread: float) -> Callable[[], tuple[float, float]]:
        return lambda: (point[0] + rng.normal(0, spread), point[1] + rng.normal(0, spread))

    for _ in range(load.exudate_clusters):
        centre = _posterior_pole_point(rng, canvas, 0.3)
        if rng.random() < 0.3:
            spots = _ring_positions(rng, centre, rng.uniform(35, 110) * scale, int(rng.integers(12, 36)))
        else:
            spread = rng.uniform(12, 60) * scale
            spots = [around(centre, spread) for _ in range(int(rng.integers(8, 50)))]
        for choose in spots:
            diameter = _exudate_diameter(rng) * scale
            canvas.place_near("EX", lambda _c, d=diameter: hard_exudate(rng, scale, blur, d), choose, limits["EX"])

    for _ in range(load.haemorrhages):
        choose = around(_posterior_pole_point(rng, canvas, 0.4), 0.04 * radius)
        make = lambda c: haemorrhage(rng, scale, blur, _fibre_angle(geometry.optic_disc, c))  # noqa: E731
        canvas.place_near("HE", make, choose, limits["HE"])

    beside_arcade_vessel = _near_arcade_vessel(rng, canvas)
    for _ in range(load.soft_exudates):
        canvas.place_near("SE", lambda _c: soft_exudate(rng, scale, blur), beside_arcade_vessel, limits["SE"])

    for _ in range(load.microaneurysm_clusters):
        choose = around(_posterior_pole_point(rng, canvas, 0.35), rng.uniform(6, 30) * scale)
        for _ in range(int(rng.integers(1, 6))):
            canvas.place_near("MA", lambda _c: microaneurysm(rng, scale, blur), choose, limits["MA"])


def _diameter_limits(code: str, scale: float) -> tuple[float, float]:
    low, high = LESION_DIAMETER_RANGES[code]
    return max(_SMALLEST_DIAMETER, low * scale), high * scale


def _exudate_diameter(rng: np.random.Generator) -> float:
    """Mostly small spots (2.5–10 px), some medium (10–22), a few plaques (22–36); pixels at scale 1."""
    kind = rng.random()
    if kind < 0.7:
        return 2.5 * 4.0 ** rng.random()
    if kind < 0.95:
        return rng.uniform(10.0, 22.0)
    return rng.uniform(22.0, 36.0)


def _ring_positions(
    rng: np.random.Generator, centre: tuple[float, float], ring_radius: float, count: int
) -> list[Callable[[], tuple[float, float]]]:
    """Spots along an arc of a circinate ring (60–100 % of the circle) around ``centre``."""
    start = rng.uniform(0, 2 * math.pi)
    extent = rng.uniform(0.6, 1.0) * 2 * math.pi
    positions = []
    for k in range(count):
        angle = start + extent * k / count
        def choose(angle: float = angle) -> tuple[float, float]:
            r = ring_radius * (1.0 + rng.normal(0, 0.08))
            return centre[0] + r * math.sin(angle), centre[1] + r * math.cos(angle)
        positions.append(choose)
    return positions


def _posterior_pole_point(rng: np.random.Generator, canvas: LesionCanvas, spread: float) -> tuple[float, float]:
    """A point scattered around the fovea (``spread`` × field-of-view radius), inside the field."""
    geometry = canvas.fundus.geometry
    radius = geometry.field_of_view_radius
    fov_row, fov_col = geometry.field_of_view_centre
    for _ in range(20):
        row = geometry.fovea[0] + rng.normal(0, spread * radius)
        col = geometry.fovea[1] + rng.normal(0, spread * radius)
        if (row - fov_row) ** 2 + (col - fov_col) ** 2 < (0.85 * radius) ** 2:
            return row, col
    return geometry.fovea


def _near_arcade_vessel(rng: np.random.Generator, canvas: LesionCanvas) -> Callable[[], tuple[float, float]]:
    """Centres beside a vessel 0.25–0.65 field-of-view radii from the fovea (where cotton-wool spots sit)."""
    geometry = canvas.fundus.geometry
    vessel_rows, vessel_cols = np.nonzero(geometry.vessels)
    distance = np.hypot(vessel_rows - geometry.fovea[0], vessel_cols - geometry.fovea[1])
    radius = geometry.field_of_view_radius
    candidates = np.flatnonzero((distance > 0.25 * radius) & (distance < 0.65 * radius))

    def choose() -> tuple[float, float]:
        if candidates.size == 0:
            return _posterior_pole_point(rng, canvas, 0.4)
        k = candidates[rng.integers(candidates.size)]
        step = rng.uniform(15, 35) * radius / RETINA_FIELD_OF_VIEW_RADIUS
        angle = rng.uniform(0, 2 * math.pi)
        return vessel_rows[k] + step * math.sin(angle), vessel_cols[k] + step * math.cos(angle)

    return choose


def _fibre_angle(optic_disc: tuple[float, float], point: tuple[float, float]) -> float:
    """Direction of the nerve fibres at ``point``: away from the optic disc (radians, col→row)."""
    return math.atan2(point[0] - optic_disc[0], point[1] - optic_disc[1])
