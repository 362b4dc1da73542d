"""Generated training slides for the bundled slide model: the sample slide's generator, other seeds.

A slide of the sample's size (32768² level 0, :class:`~sample_data.slide_texture.TissueSynth`)
is rendered tile by tile and reduced in memory by ``reduction`` rounds of the sample pyramid's own
2×2 steps (images: area mean, labels: 2×2 mode), so the result equals level ``reduction`` of a
slide written by :func:`sample_data.slide_sample.generate_slide` with that seed, without ever storing
level 0 (a 32768² slide takes 1.9 GB on disk; its 2048² level 12 MB). It is written as a small
OME-Zarr (NGFF 0.5) whose level 0 is that reduced level (pixel size scaled accordingly), with the
``labels/ground_truth`` pyramid the trainer's ``slides`` data kind reads. Its geometry (level
shapes, µm per pixel: the sample slide's 0.25 µm × ``2**reduction``) is known without generating it
(:func:`training_slide_geometry`), so a slide model's training scale can be recorded from the names
of its generated training slides alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_m2mrf.io.atomic import temporary_sibling
from napari_m2mrf.io.downsample import mean_2x2, mode_2x2
from napari_m2mrf.io.pyramid_build import level_shapes
from napari_m2mrf.io.tiff import LABELS_SERIES_NAME
from napari_m2mrf.io.zarr_arrays import create_array
from training.slide_scale import SlideGeometry
from sample_data.slide_sample import PIXEL_SIZE_UM, SAMPLE_SIZE, write_slide_ngff_metadata
from sample_data.slide_texture import TILE, TissueSynth

GENERATOR_VERSION = 1
DEFAULT_REDUCTION = 4  # 32768² → 2048², level 4 of the sample slide
STORED_LEVELS = 3


def reduced_slide(
    seed: int, size: int = SAMPLE_SIZE, reduction: int = DEFAULT_REDUCTION,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Level ``reduction`` of the generated slide ``seed``: RGB ``(S, S, 3)`` uint8 and labels ``(S, S)``
    uint8 (0 background, 1 tumour, 2 vessel, 3 necrosis) with ``S = size / 2**reduction``.

    ``progress(done, total)`` is called per row of level-0 tiles.
    """
    if TILE % 2**reduction:
        raise ValueError(f"reduction {reduction} must leave whole pixels of a {TILE} px tile")
    synth = TissueSynth(size, seed)
    tiles, side = size // TILE, TILE >> reduction
    rgb = np.empty((tiles * side, tiles * side, 3), np.uint8)
    labels = np.empty((tiles * side, tiles * side), np.uint8)
    for ty in range(tiles):
        for tx in range(tiles):
            tile_rgb, tile_labels = synth.tile(ty, tx)
            image, truth = tile_rgb.transpose(2, 0, 1), tile_labels
            for _ in range(reduction):
                image, truth = mean_2x2(image), mode_2x2(truth)
            window = np.s_[ty * side : (ty + 1) * side, tx * side : (tx + 1) * side]
            rgb[window] = image.transpose(1, 2, 0)
            labels[window] = truth
        if progress:
            progress(ty + 1, tiles)
    return rgb, labels


def write_training_slide(
    path: str | os.PathLike[str], seed: int, size: int = SAMPLE_SIZE, reduction: int = DEFAULT_REDUCTION
) -> Path:
    """Write ``reduced_slide(seed, size, reduction)`` as an OME-Zarr at ``path`` (atomically); returns it."""
    import zarr

    path = Path(path)
    rgb, labels = reduced_slide(seed, size, reduction)
    scratch = temporary_sibling(path)
    try:
        root = zarr.open_group(str(scratch), mode="w", zarr_format=3)
        image_level = rgb.transpose(2, 0, 1)
        truth_group = root.create_group("labels").create_group(LABELS_SERIES_NAME)
        levels = min(STORED_LEVELS, len(level_shapes(labels.shape, STORED_LEVELS)))
        for level in range(levels):
            create_array(root, str(level), image_level.shape, np.uint8, TILE, "cyx")[:] = image_level
            create_array(truth_group, str(level), labels.shape, np.uint8, TILE, "yx")[:] = labels
            image_level, labels = mean_2x2(image_level), mode_2x2(labels)
        write_slide_ngff_metadata(root, truth_group, root["labels"], levels, f"generated slide seed {seed}",
                                  PIXEL_SIZE_UM * 2**reduction)
        if path.exists():
            shutil.rmtree(path)
        os.rename(scratch, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def training_slide_geometry(size: int = SAMPLE_SIZE, reduction: int = DEFAULT_REDUCTION) -> SlideGeometry:
    """The level shapes and µm per pixel :func:`write_training_slide` writes for ``size`` and
    ``reduction`` (the same for every seed), known without generating the slide."""
    side = size >> reduction
    return SlideGeometry(tuple(level_shapes((side, side), STORED_LEVELS)), PIXEL_SIZE_UM * 2**reduction)


def training_slide_path(folder: str | os.PathLike[str], seed: int) -> Path:
    """Where :func:`ensure_training_slides` keeps the slide of ``seed`` under ``folder``."""
    return Path(folder) / f"generated-v{GENERATOR_VERSION}-seed{seed}.ome.zarr"


def ensure_training_slides(
    folder: str | os.PathLike[str], seeds: Sequence[int], size: int = SAMPLE_SIZE,
    reduction: int = DEFAULT_REDUCTION, log: Callable[[str], None] = print,
) -> list[Path]:
    """The slides of ``seeds`` under ``folder``, generating the missing ones (32768²: about half a minute each)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = training_slide_path(folder, seed)
        if not path.is_dir():
            log(f"generating slide seed {seed} -> {path}")
            write_training_slide(path, seed, size, reduction)
        paths.append(path)
    return paths
