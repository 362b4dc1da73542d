"""The synthetic pyramidal histology slide sample (OME-Zarr and OME-TIFF, with ground truth).

``sample_slide()`` returns the 32768² slide from the user cache, generating it on first use.
``generate_slide(out_dir, size, levels, seed)`` writes ``slide.ome.zarr`` (NGFF 0.5: image
multiscale, ``labels/ground_truth`` multiscale with colours; zarr chunks of 256² pixels, so a reader
that needs a few pixels decodes little) and ``slide.ome.tif`` (tiled 512, JPEG image pyramid in
SubIFDs, then a ``ground_truth`` series, zstd) level by level: level 0 tile by
tile from :class:`~sample_data.slide_texture.TissueSynth`, each coarser level by 2×2 area
averaging (labels: 2×2 mode) of the previous level read back from the zarr store. No level is
ever held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_m2mrf.io import ngff
from napari_m2mrf.io.atomic import created_once
from napari_m2mrf.io.downsample import mean_2x2, mode_2x2
from napari_m2mrf.io.omezarr import COMPLETE_KEY
from napari_m2mrf.io.parallel import bounded_ordered_map
from napari_m2mrf.io.pyramid_build import level_count, level_shapes
from napari_m2mrf.io.tiff import LABELS_SERIES_NAME
from napari_m2mrf.io.zarr_arrays import create_array
from sample_data.slide_texture import TILE, TissueSynth

SAMPLE_SIZE = 32768
PIXEL_SIZE_UM = 0.25
SLIDE_CLASSES: dict[int, tuple[str, tuple[float, float, float, float]]] = {
    1: ("tumour", (1.0, 0.6, 0.0, 1.0)),
    2: ("vessel", (0.0, 0.85, 1.0, 1.0)),
    3: ("necrosis", (0.3, 0.9, 0.2, 1.0)),
}
_FORMAT_VERSION = 2  # 2: zarr chunks of ZARR_CHUNK (256²) instead of 512²
ZARR_CHUNK = 256  # pixels per side of a zarr chunk; the 512² synthesis tiles are whole chunks
_JPEG_QUALITY = 85

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SampleSlide:
    """A generated slide: paths, level-0 ``shape`` ``(C, Y, X)``, number of ``levels``, classes, µm per pixel."""

    ome_zarr: Path
    ome_tiff: Path
    shape: tuple[int, int, int]
    levels: int
    class_names: dict[int, str]
    class_colors: dict[int, tuple[float, float, float, float]]
    pixel_size_um: float


def sample_slide(size: int = SAMPLE_SIZE, seed: int = 0) -> SampleSlide:
    """The cached synthetic slide (generated into ``cache_dir("slide")`` on first use, about a minute)."""
    from napari_m2mrf.cache import cache_dir

    levels = _default_levels(size)
    folder = cache_dir("slide") / f"synthetic-v{_FORMAT_VERSION}-{size}-seed{seed}"
    if not folder.is_dir():
        with created_once(folder) as scratch:  # another process finishing first is fine
            generate_slide(scratch, size=size, levels=levels, seed=seed)
    return _describe(folder, size, levels)


def _default_levels(size: int) -> int:
    return level_count(size, size, TILE)


def _describe(folder: Path, size: int, levels: int) -> SampleSlide:
    return SampleSlide(
        ome_zarr=folder / "slide.ome.zarr",
        ome_tiff=folder / "slide.ome.tif",
        shape=(3, size, size),
        levels=levels,
        class_names={k: name for k, (name, _) in SLIDE_CLASSES.items()},
        class_colors={k: color for k, (_, color) in SLIDE_CLASSES.items()},
        pixel_size_um=PIXEL_SIZE_UM,
    )


def generate_slide(
    out_dir: str | os.PathLike[str],
    size: int = SAMPLE_SIZE,
    levels: int | None = None,
    seed: int = 0,
    *,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> SampleSlide:
    """Write the synthetic slide (``size`` a multiple of 512) into ``out_dir``; returns its description.

    ``levels`` defaults to halving down to one 512 tile (7 levels for 32768). ``progress(stage,
    done, total)`` reports tiles per stage.
    """
    import tifffile
    import zarr

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    levels = levels or _default_levels(size)
    synth = TissueSynth(size, seed)
    image_shapes = level_shapes((3, size, size), levels)
    label_shapes = level_shapes((size, size), levels)

    root = zarr.open_group(str(out_dir / "slide.ome.zarr"), mode="w", zarr_format=3)
    images = [create_array(root, str(k), shape, np.uint8, ZARR_CHUNK, "cyx") for k, shape in enumerate(image_shapes)]
    labels_group = root.create_group("labels")
    truth_group = labels_group.create_group(LABELS_SERIES_NAME)
    labels = [create_array(truth_group, str(k), s, np.uint8, ZARR_CHUNK, "yx") for k, s in enumerate(label_shapes)]

    def level0_tile(position: tuple[int, int]) -> np.ndarray:
        ty, tx = position
        rgb, truth = synth.tile(ty, tx)
        window = np.s_[ty * TILE : (ty + 1) * TILE, tx * TILE : (tx + 1) * TILE]
        images[0][(slice(None), *window)] = rgb.transpose(2, 0, 1)
        labels[0][window] = truth
        return rgb

    def coarser_tile(level: int, arrays: list, reduce: Callable, channel_last: bool) -> Callable:
        def run(position: tuple[int, int]) -> np.ndarray:
            ty, tx = position
            finer = arrays[level - 1]
            block = reduce(np.asarray(finer[..., 2 * ty * TILE : 2 * (ty + 1) * TILE, 2 * tx * TILE : 2 * (tx + 1) * TILE]))
            arrays[level][..., ty * TILE : ty * TILE + block.shape[-2], tx * TILE : tx * TILE + block.shape[-1]] = block
            return _pad_tile(block.transpose(1, 2, 0) if channel_last else block)

        return run

    def stage(name: str, run: Callable, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
        positions = _tile_positions(shape[-2], shape[-1])
        for done, tile in enumerate(bounded_ordered_map(run, positions, workers=workers, in_flight=2 * workers), 1):
            if progress:
                progress(name, done, len(positions))
            yield tile

    def label_tiles(level: int) -> Callable:
        if level == 0:
            return lambda p: _pad_tile(np.asarray(labels[0][p[0] * TILE : (p[0] + 1) * TILE, p[1] * TILE : (p[1] + 1) * TILE]))
        return coarser_tile(level, labels, mode_2x2, channel_last=False)

    resolution = (1e4 / PIXEL_SIZE_UM, 1e4 / PIXEL_SIZE_UM)
    with tifffile.TiffWriter(out_dir / "slide.ome.tif", bigtiff=True, ome=True) as tif:
        for level in range(levels):
            run = level0_tile if level == 0 else coarser_tile(level, images, mean_2x2, channel_last=True)
            shape = image_shapes[level]
            tif.write(
                stage(f"image level {level}", run, shape),
                shape=(shape[1], shape[2], 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": _JPEG_QUALITY},
                subifds=levels - 1 if level == 0 else None,
                subfiletype=1 if level else 0,
                resolution=(resolution[0] / 2**level, resolution[1] / 2**level),
                resolutionunit="CENTIMETER",
                metadata=_ome_metadata("image", "YXS") if level == 0 else None,
                maxworkers=workers,
                buffersize=1 << 25,
            )
        for level in range(levels):
            shape = label_shapes[level]
            tif.write(
                stage(f"labels level {level}", label_tiles(level), shape),
                shape=shape,
                dtype=np.uint8,
                tile=(TILE, TILE),
                photometric="minisblack",
                compression="zstd",
                subifds=levels - 1 if level == 0 else None,
                subfiletype=1 if level else 0,
                resolution=(resolution[0] / 2**level, resolution[1] / 2**level),
                resolutionunit="CENTIMETER",
                metadata=_ome_metadata(LABELS_SERIES_NAME, "YX") if level == 0 else None,
                maxworkers=workers,
                buffersize=1 << 25,
            )
    write_slide_ngff_metadata(root, truth_group, labels_group, levels)
    return _describe(out_dir, size, levels)


def _tile_positions(height: int, width: int) -> list[tuple[int, int]]:
    return [(ty, tx) for ty in range(-(-height // TILE)) for tx in range(-(-width // TILE))]


def _pad_tile(tile: np.ndarray) -> np.ndarray:
    """Zero-pad an edge tile ``(h, w[, C])`` to ``(512, 512[, C])`` (TIFF tiles are always full)."""
    pad_y, pad_x = TILE - tile.shape[0], TILE - tile.shape[1]
    if not pad_y and not pad_x:
        return tile
    return np.pad(tile, [(0, pad_y), (0, pad_x)] + [(0, 0)] * (tile.ndim - 2))


def _ome_metadata(name: str, axes: str) -> dict:
    return {
        "axes": axes,
        "Name": name,
        "PhysicalSizeX": PIXEL_SIZE_UM,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": PIXEL_SIZE_UM,
        "PhysicalSizeYUnit": "µm",
    }


def write_slide_ngff_metadata(
    root, truth_group, labels_group, levels: int, name: str = "synthetic slide", pixel_size_um: float = PIXEL_SIZE_UM
) -> None:
    """NGFF 0.5 attributes of a slide written as OME-Zarr: ``root`` (image, ``levels`` levels of
    ``pixel_size_um`` µm at level 0, named ``name``), ``labels_group`` listing ``truth_group`` (the
    ground-truth label pyramid with the slide classes' names and colours); both marked complete."""
    downsamples = [2.0**k for k in range(levels)]
    image_meta = {
        "multiscales": [ngff.multiscales_entry(name, "cyx", downsamples, pixel_size_um, "0.5")],
        "omero": ngff.omero_rgb(name, 3),
    }
    truth_meta = {
        "multiscales": [ngff.multiscales_entry(LABELS_SERIES_NAME, "yx", downsamples, pixel_size_um, "0.5")],
        "image-label": ngff.image_label(
            {k: color for k, (_, color) in SLIDE_CLASSES.items()},
            {k: label_name for k, (label_name, _) in SLIDE_CLASSES.items()},
            "0.5",
        ),
    }
    truth_group.attrs.put({**ngff.wrap_attributes(truth_meta, "0.5"), COMPLETE_KEY: {"complete": True}})
    labels_group.attrs.put(ngff.wrap_attributes({"labels": [LABELS_SERIES_NAME]}, "0.5"))
    root.attrs.put({**ngff.wrap_attributes(image_meta, "0.5"), COMPLETE_KEY: {"complete": True}})
