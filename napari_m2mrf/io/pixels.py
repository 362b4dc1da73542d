"""Image pixels to 8-bit RGB: one channel rule, one value scale and one rounding rule for every path.

A photograph read from a file (:mod:`napari_m2mrf.io.photographs`), an image layer handed to the
Segment or Train widget and a slide sampled for the deformed-downsampling model all go through
this module, so the same 16-bit image gives the same pixels whichever way it arrives.

* **Channels** (:func:`rgb_channels`): grey is repeated into R, G, B; an alpha channel is dropped
  (grey + alpha → grey; RGBA → RGB); anything else is a ``UserError``.
* **Scale** (:func:`value_scale`): the factor to the 0–255 scale of the models' normalisation —
  uint8 1, uint16 255/65535, bool 255. Floating-point images hold 0…1 or 0…255 (by their maximum)
  and must be finite.
* **Rounding** (:func:`round_rgb8`): to the nearest integer, halves up, clipped to 0…255. For
  uint16 this is computed exactly in integers, ``(x·255 + 32767) // 65535`` (no uint16 value lies
  on a half).
"""

from __future__ import annotations

import numpy as np

from napari_m2mrf.errors import UserError

UINT16_TO_255 = 255.0 / 65535.0


def _where(name: str) -> str:
    return f"{name}: " if name else ""


def rgb_channels(values: np.ndarray, name: str = "", notices: list[str] | None = None, short: str = "") -> np.ndarray:
    """``(…, C)`` → ``(…, 3)`` view or copy: grey (C = 1) repeated, alpha (C = 2 or 4) dropped.

    ``name`` starts error messages, ``short`` (default ``name``) the ``notices`` appended."""
    channels = values.shape[-1]
    if channels in (2, 4):
        if notices is not None:
            notices.append(f"{short or name or 'the image'}: the alpha channel was dropped")
        values = values[..., : channels - 1]
        channels -= 1
    if channels == 1:
        return np.repeat(values, 3, axis=-1)
    if channels == 3:
        return values
    raise UserError(f"{_where(name)}expected a grey, RGB or RGBA image, found {channels} channels")


def value_scale(dtype: np.dtype, name: str = "") -> float:
    """Factor taking integer pixels of ``dtype`` to the 0–255 scale; ``UserError`` for other types."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 1.0
    if dtype == np.uint16:
        return UINT16_TO_255
    if dtype == np.bool_:
        return 255.0
    kind = "signed" if dtype.kind == "i" else dtype.kind
    raise UserError(
        f"{_where(name)}unsupported pixel type {dtype} ({dtype.itemsize * 8}-bit {kind}); "
        "supported: 8- or 16-bit unsigned, float in 0..1 or 0..255"
    )


def round_rgb8(values: np.ndarray) -> np.ndarray:
    """Values on the 0–255 scale → uint8: nearest integer, halves up, clipped to 0…255."""
    return np.clip(np.floor(np.asarray(values, np.float64) + 0.5), 0, 255).astype(np.uint8)


def to_rgb8(pixels: np.ndarray, name: str = "", notices: list[str] | None = None, short: str = "") -> np.ndarray:
    """Any supported image — ``(Y, X)`` grey or ``(Y, X, C)`` grey/RGB(A) of uint8, uint16, bool or
    float (0…1 or 0…255, finite) — as contiguous ``(Y, X, 3)`` uint8 RGB by the module's rules.

    ``notices`` (when given) collects what was changed: alpha dropped, bit depth reduced; ``name``
    starts error messages, ``short`` (default ``name``) the notices.
    """
    short = short or name or "the image"
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    if pixels.ndim != 3:
        raise UserError(f"{_where(name)}expected a 2-D grey or RGB(A) image, got an array of shape {pixels.shape}")
    pixels = rgb_channels(pixels, name, notices, short)
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    if pixels.dtype == np.uint16:
        if notices is not None:
            notices.append(f"{short}: 16-bit pixels were scaled to 8 bits")
        return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if pixels.dtype.kind == "f":
        if not np.all(np.isfinite(pixels)):
            raise UserError(f"{_where(name)}the image holds NaN or infinite values")
        low, high = float(pixels.min(initial=0.0)), float(pixels.max(initial=0.0))
        if low < 0 or high > 255:
            raise UserError(f"{_where(name)}float pixel values span {low:g}..{high:g}; expected 0..1 or 0..255")
        if notices is not None:
            notices.append(f"{short}: float pixels were converted to 8 bits")
        return round_rgb8(pixels * (255.0 if high <= 1.0 else 1.0))
    return round_rgb8(pixels * value_scale(pixels.dtype, name))
