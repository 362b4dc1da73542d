"""Writes small DICOM whole-slide images (VL Whole Slide Microscopy) with wsidicom's own writer.

No DICOM test files ship in the wsidicom or pydicom wheels, so tests make theirs: ``write_dicom_wsi``
wraps in-memory levels in a minimal ``wsidicom.ImageData`` + ``Source`` (what wsidicomizer does for
other formats) and lets ``WsiDicom.save`` write a TILED_FULL instance per level, uncompressed frames.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

import numpy as np
from wsidicom import ImageData, WsiDataset, WsiDicom, WsiInstance
from wsidicom.codec import Encoder
from wsidicom.codec.settings import Channels, NumpySettings
from wsidicom.geometry import Size, SizeMm
from wsidicom.metadata import Equipment, Image, ImageType, Label, Patient, Pyramid, Series, Slide, Study, WsiMetadata
from wsidicom.metadata.sample import SlideSample
from wsidicom.metadata.schema.dicom.wsi import WsiMetadataDicomSchema
from wsidicom.source import Source
from wsidicom.uid import UID


def _uid() -> UID:
    return UID(f"2.25.{uuid.uuid4().int}")


class _ArrayTiles(ImageData):
    def __init__(self, array: np.ndarray, tile: int, spacing_mm: float, encoder: Encoder) -> None:
        self._array, self._tile, self._spacing = array, tile, spacing_mm
        super().__init__(encoder)

    transfer_syntax = property(lambda self: self.encoder.transfer_syntax)
    image_size = property(lambda self: Size(self._array.shape[1], self._array.shape[0]))
    tile_size = property(lambda self: Size(self._tile, self._tile))
    pixel_spacing = property(lambda self: SizeMm(self._spacing, self._spacing))
    imaged_size = property(lambda self: None)
    samples_per_pixel = property(lambda self: 3)
    bits = property(lambda self: 8)
    photometric_interpretation = property(lambda self: self.encoder.photometric_interpretation)
    image_coordinate_system = property(lambda self: None)
    thread_safe = property(lambda self: True)
    lossy_compression = property(lambda self: None)
    transcoder = property(lambda self: None)

    def get_decoded_tile(self, tile_point, z, path, cache=True):  # noqa: ANN001, ANN201
        t = self._tile
        out = np.full((t, t, 3), 255, np.uint8)
        part = self._array[tile_point.y * t : (tile_point.y + 1) * t, tile_point.x * t : (tile_point.x + 1) * t]
        out[: part.shape[0], : part.shape[1]] = part
        return out

    def get_encoded_tile(self, tile, z, path):  # noqa: ANN001, ANN201
        return self.encoder.encode(self.get_decoded_tile(tile, z, path))


class _ArraySource(Source):
    def __init__(self, levels: list[np.ndarray], tile: int, pixel_size_um: float) -> None:
        super().__init__()
        encoder = Encoder.create_for_settings(NumpySettings(8, Channels.RGB))
        metadata = WsiMetadata(
            study=Study(uid=_uid()), series=Series(uid=_uid(), number=1), patient=Patient(), equipment=Equipment(),
            slide=Slide(identifier="slide-1", samples=[SlideSample(identifier="sample-1", uid=_uid())]),
            pyramid=Pyramid(image=Image(), optical_paths=[], uid=_uid()), label=Label(),
            frame_of_reference_uid=_uid(), dimension_organization_uids=[_uid()],
        )
        self._base = WsiMetadataDicomSchema().dump(metadata, ImageType.VOLUME)
        spacing0 = pixel_size_um / 1000.0
        self._levels = [
            WsiInstance.create_instance(
                _ArrayTiles(array, tile, spacing0 * levels[0].shape[1] / array.shape[1], encoder),
                copy.deepcopy(self._base), ImageType.VOLUME, index,
            )
            for index, array in enumerate(levels)
        ]

    base_dataset = property(lambda self: WsiDataset(self._base))
    level_instances = property(lambda self: self._levels)
    label_instances = property(lambda self: [])
    overview_instances = property(lambda self: [])
    thumbnail_instances = property(lambda self: [])
    annotation_instances = property(lambda self: [])

    def close(self) -> None:
        pass


def write_dicom_wsi(folder: Path, levels: list[np.ndarray], *, tile: int = 128, pixel_size_um: float = 0.25) -> list[Path]:
    """Write ``levels`` (``(Y, X, 3)`` uint8, level 0 first, each half the last) as a DICOM WSI into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with WsiDicom(_ArraySource(levels, tile, pixel_size_um)) as slide:
        slide.save(folder)
    return sorted(folder.glob("*.dcm"))
