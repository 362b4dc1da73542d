"""The real normal fundus photograph and its variants, with the landmarks lesions are placed by.

The base is ``skimage.data.retina()`` (CC0, 1411×1411 RGB, a left eye: optic disc on the left).
A ``FundusVariant`` turns it into another plausible photograph: a flip, a rotation about the
centre and a scale (one resampling), a colour cast and gamma (IDRiD's photographs are more
orange than this one), vignetting, optical blur and sensor noise. The landmarks (field-of-view
circle, optic disc, fovea) move with the geometry, the vessel map is resampled with the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

# Landmarks of skimage.data.retina(), measured on the photograph, in (row, column) pixels.
RETINA_FIELD_OF_VIEW_CENTRE = (702.0, 705.0)
RETINA_FIELD_OF_VIEW_RADIUS = 698.0
RETINA_FOVEA = (705.0, 702.0)
RETINA_OPTIC_DISC = (650.0, 225.0)
# Radius around the optic disc kept free of lesions: the disc (radius ≈ 90 px) and the pigmented
# peripapillary crescent on its temporal side.
RETINA_OPTIC_DISC_KEEP_OUT = 160.0
# Vessels: pixels whose green channel is darker than its surroundings (σ 6 px) by this many levels.
_VESSEL_CONTRAST = 4.0


@dataclass(frozen=True)
class FundusGeometry:
    """Where things are in one fundus image; coordinates are (row, column) pixels, lengths pixels."""

    field_of_view_centre: tuple[float, float]
    field_of_view_radius: float
    fovea: tuple[float, float]
    optic_disc: tuple[float, float]
    optic_disc_keep_out: float
    vessels: np.ndarray  # (H, W) bool, True on retinal vessels


@dataclass(frozen=True)
class Fundus:
    """A lesion-free fundus photograph ready for lesions to be drawn on it.

    ``image`` is (H, W, 3) uint8 RGB; ``blur_sigma`` (pixels) is the optical blur of the photograph,
    which rendered lesions share so that they are no sharper than the vessels around them.
    """

    image: np.ndarray
    geometry: FundusGeometry
    blur_sigma: float


@dataclass(frozen=True)
class FundusVariant:
    """How one variant differs from the base photograph.

    Geometry: ``flip_lr``/``flip_ud`` mirror, ``rotation_deg`` turns counter-clockwise about the
    centre, ``scale`` resizes (output side = round(1411 × scale)). Colour: each channel in [0, 1]
    is raised to ``gamma`` then multiplied by ``channel_gains`` (R, G, B); ``vignetting`` darkens
    the rim of the field of view by that fraction (quadratic fall-off). ``blur_sigma`` (pixels) is a
    Gaussian optical blur, ``noise_sigma`` (grey levels) additive sensor noise inside the field.
    """

    flip_lr: bool = False
    flip_ud: bool = False
    rotation_deg: float = 0.0
    scale: float = 1.0
    channel_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    vignetting: float = 0.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0

    def scaled(self, factor: float) -> FundusVariant:
        """The same variant at ``factor`` times the size (blur grows with it, in pixels)."""
        return replace(self, scale=self.scale * factor, blur_sigma=self.blur_sigma * factor)


def random_variant(rng: np.random.Generator) -> FundusVariant:
    """A random plausible variant: mirrored eye, small tilt, 0.8–1.15× size, camera colour cast."""
    return FundusVariant(
        flip_lr=bool(rng.random() < 0.5),
        flip_ud=bool(rng.random() < 0.15),
        rotation_deg=float(rng.uniform(-25.0, 25.0)),
        scale=float(rng.uniform(0.8, 1.15)),
        channel_gains=(float(rng.uniform(0.82, 1.05)), float(rng.uniform(0.9, 1.3)), float(rng.uniform(0.35, 1.1))),
        gamma=float(rng.uniform(0.8, 1.25)),
        vignetting=float(rng.uniform(0.0, 0.4)),
        blur_sigma=float(rng.uniform(0.3, 1.5)) if rng.random() < 0.5 else 0.0,
        noise_sigma=float(rng.uniform(0.5, 2.5)),
    )


@lru_cache(maxsize=1)
def base_fundus() -> Fundus:
    """The unmodified photograph with its measured landmarks and vessel map (computed once)."""
    from scipy import ndimage as ndi

    from sample_data.skimage_samples import retina

    image = retina()
    image.setflags(write=False)
    green = image[..., 1].astype(np.float32)
    darker_than_surroundings = ndi.gaussian_filter(green, 6.0) - ndi.gaussian_filter(green, 1.0)
    vessels = darker_than_surroundings > _VESSEL_CONTRAST
    vessels.setflags(write=False)
    geometry = FundusGeometry(
        field_of_view_centre=RETINA_FIELD_OF_VIEW_CENTRE,
        field_of_view_radius=RETINA_FIELD_OF_VIEW_RADIUS,
        fovea=RETINA_FOVEA,
        optic_disc=RETINA_OPTIC_DISC,
        optic_disc_keep_out=RETINA_OPTIC_DISC_KEEP_OUT,
        vessels=vessels,
    )
    return Fundus(image=image, geometry=geometry, blur_sigma=0.0)


def apply_variant(fundus: Fundus, variant: FundusVariant, rng: np.random.Generator) -> Fundus:
    """``fundus`` changed by ``variant``; ``rng`` draws the sensor noise."""
    image, geometry = _transform_geometry(fundus, variant)
    image = _transform_colour(image, geometry, variant, rng)
    return Fundus(image=image, geometry=geometry, blur_sigma=math.hypot(fundus.blur_sigma, variant.blur_sigma))


def _transform_geometry(fundus: Fundus, variant: FundusVariant) -> tuple[np.ndarray, FundusGeometry]:
    """Flip, rotate and scale image and vessel map in one resampling; move the landmarks along."""
    from PIL import Image

    height, width = fundus.image.shape[:2]
    out_shape = (max(1, round(height * variant.scale)), max(1, round(width * variant.scale)))
    if not (variant.flip_lr or variant.flip_ud or variant.rotation_deg or out_shape != (height, width)):
        return fundus.image, fundus.geometry

    theta = math.radians(variant.rotation_deg)
    # Forward map (row, col) -> (row, col) about the centres: flip, then rotate counter-clockwise
    # on screen (rows grow downwards), then scale.
    flip = np.diag([-1.0 if variant.flip_ud else 1.0, -1.0 if variant.flip_lr else 1.0])
    rotate = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    forward = variant.scale * rotate @ flip
    inverse = np.linalg.inv(forward)
    centre_in = np.array([(height - 1) / 2, (width - 1) / 2])
    centre_out = np.array([(out_shape[0] - 1) / 2, (out_shape[1] - 1) / 2])

    def move(point: tuple[float, float]) -> tuple[float, float]:
        moved = centre_out + forward @ (np.asarray(point) - centre_in)
        return float(moved[0]), float(moved[1])

    # Pillow maps output (x, y) to input (x, y) with pixel centres at +0.5: the same centres shifted.
    offset = (centre_in + 0.5) - inverse @ (centre_out + 0.5)
    coefficients = (inverse[1, 1], inverse[1, 0], offset[1], inverse[0, 1], inverse[0, 0], offset[0])
    size = (out_shape[1], out_shape[0])

    def resample(array: np.ndarray, method: Image.Resampling) -> np.ndarray:
        moved = Image.fromarray(array).transform(size, Image.Transform.AFFINE, coefficients, resample=method)
        return np.asarray(moved)

    image = resample(np.asarray(fundus.image), Image.Resampling.BILINEAR)
    vessels = resample(fundus.geometry.vessels.view(np.uint8), Image.Resampling.NEAREST)
    old = fundus.geometry
    geometry = FundusGeometry(
        field_of_view_centre=move(old.field_of_view_centre),
        field_of_view_radius=old.field_of_view_radius * variant.scale,
        fovea=move(old.fovea),
        optic_disc=move(old.optic_disc),
        optic_disc_keep_out=old.optic_disc_keep_out * variant.scale,
        vessels=vessels.astype(bool),
    )
    return image, geometry


def _transform_colour(
    image: np.ndarray, geometry: FundusGeometry, variant: FundusVariant, rng: np.random.Generator
) -> np.ndarray:
    """Gamma, colour cast, vignetting, blur and noise on (H, W, 3) uint8; returns uint8."""
    from scipy import ndimage as ndi

    is_plain = (
        variant.gamma == 1.0
        and variant.channel_gains == (1.0, 1.0, 1.0)
        and variant.vignetting == 0.0
        and variant.blur_sigma == 0.0
        and variant.noise_sigma == 0.0
    )
    if is_plain:
        return image
    # Gamma and colour cast as one 256-entry look-up table per channel, in grey levels.
    levels = (np.arange(256, dtype=np.float32) / 255.0) ** variant.gamma * 255.0
    tables = [levels * np.float32(gain) for gain in variant.channel_gains]
    values = np.stack([tables[c][image[..., c]] for c in range(3)], axis=-1)
    rows, cols = np.ogrid[: image.shape[0], : image.shape[1]]
    centre_row, centre_col = geometry.field_of_view_centre
    radius2 = ((rows - centre_row) ** 2 + (cols - centre_col) ** 2) / geometry.field_of_view_radius**2
    if variant.vignetting:
        values *= (1.0 - variant.vignetting * np.minimum(radius2, 1.0)).astype(np.float32)[..., None]
    if variant.blur_sigma:
        values = ndi.gaussian_filter(values, (variant.blur_sigma, variant.blur_sigma, 0.0))
    if variant.noise_sigma:
        noise = rng.standard_normal(values.shape, dtype=np.float32) * np.float32(variant.noise_sigma)
        noise[radius2 >= 1.0] = 0.0
        values += noise
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
