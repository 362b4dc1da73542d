"""The documented limits every input is checked against before anything is decoded.

:class:`Limits` holds the defaults; :func:`current_limits` returns them with any value the user
raised (or lowered) through an environment variable ``NAPARI_M2MRF_<FIELD NAME IN CAPITALS>``,
for example ``NAPARI_M2MRF_MAX_IMAGE_PIXELS=500000000`` or ``NAPARI_M2MRF_MAX_SLIDE_PIXELS=1e11``.
The variables are read on every check, so they work the same for the CLI, the napari reader and
the trainer. A malformed value is a ``UserError`` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from napari_m2mrf.errors import UserError

ENV_PREFIX = "NAPARI_M2MRF_"


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what an input may declare (checked from headers and metadata, before decoding).

    * ``max_image_pixels`` (2**28 ≈ 268 Mpx): a flat image that must be decoded whole (JPEG, PNG,
      BMP, a strip TIFF, a lesion mask or a prediction file); also Pillow's ``MAX_IMAGE_PIXELS``.
    * ``max_slide_pixels`` (4·10¹⁰, e.g. 200,000 × 200,000): level 0 of a tiled TIFF, a slide
      scanner file or a zarr store, read lazily.
    * ``max_compression_ratio`` (20,000): a tiled source whose declared pixels need more than
      1 GiB is refused when they are more than this many times the bytes stored in the file (a
      300 KB file declaring 100,000² RGB pixels: ratio 10⁵).
    * ``max_chunk_bytes`` (1 GiB): one strip, tile or zarr chunk, decoded.
    * ``max_levels`` (32), ``max_channels`` (4): pyramid levels and samples per pixel.
    * ``max_classes`` (255): label values (uint8 labels, 0 = background).
    * ``max_metadata_bytes`` (16 MiB): one zarr metadata file, an OME-XML description.
    * ``max_header_bytes`` (100 MiB): a safetensors JSON header.
    * ``max_yaml_bytes`` (1 MiB), ``max_yaml_nodes`` (100,000): a training config's size and its
      node count with every alias expanded (an alias bomb expands to billions).
    """

    max_image_pixels: int = 1 << 28
    max_slide_pixels: int = 40_000_000_000
    max_compression_ratio: int = 20_000
    max_chunk_bytes: int = 1 << 30
    max_levels: int = 32
    max_channels: int = 4
    max_classes: int = 255
    max_metadata_bytes: int = 16 << 20
    max_header_bytes: int = 100 << 20
    max_yaml_bytes: int = 1 << 20
    max_yaml_nodes: int = 100_000

    @staticmethod
    def env_name(field: str) -> str:
        """The environment variable that overrides ``field``."""
        return ENV_PREFIX + field.upper()

    def how_to_raise(self, field: str) -> str:
        """A hint for messages: ``set NAPARI_M2MRF_X=<n> to raise the limit (now <value>)``."""
        return f"set {self.env_name(field)} to raise the limit (now {getattr(self, field):,})"


DEFAULT_LIMITS = Limits()


def current_limits() -> Limits:
    """:data:`DEFAULT_LIMITS` with every ``NAPARI_M2MRF_MAX_…`` environment variable applied."""
    changes: dict[str, int] = {}
    for field in dataclasses.fields(Limits):
        raw = os.environ.get(Limits.env_name(field.name))
        if raw is None or not raw.strip():
            continue
        changes[field.name] = _parse_count(Limits.env_name(field.name), raw)
    return dataclasses.replace(DEFAULT_LIMITS, **changes) if changes else DEFAULT_LIMITS


def _parse_count(name: str, raw: str) -> int:
    text = raw.strip().replace("_", "").replace(",", "")
    try:
        value = int(text) if text.isdigit() else int(float(text))
    except (ValueError, OverflowError):
        raise UserError(f"{name}={raw!r}: expected a positive whole number (e.g. 500000000 or 5e8)") from None
    if value <= 0:
        raise UserError(f"{name}={raw!r}: expected a positive whole number")
    return value
