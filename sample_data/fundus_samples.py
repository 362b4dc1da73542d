"""``fundus_lesions``: semi-synthetic fundus photographs with exact per-class lesion ground truth.

A real normal fundus photograph (``skimage.data.retina()``, CC0) or a variant of it (flip, tilt,
size, colour cast, blur, vignetting; ``sample_data.fundus_variants``) receives procedurally drawn
lesions of the four classes (``sample_data.lesions``): microaneurysms (MA), haemorrhages (HE), hard
exudates (EX) and soft exudates (SE). The mask of a class is exactly where its lesions were drawn
(opacity ≥ 0.5); every pixel outside the masks is the lesion-free photograph's.

* ``fundus_lesions(index, seed)``: one sample, generated into the per-user cache on first use.
  Index 0 is the unmodified photograph with plenty of lesions of all four classes; other indices
  are random variants with random severity, about half of them with soft exudates (as in IDRiD,
  many images have none).
* ``write_fundus_dataset(root, n, seed)``: N samples in IDRiD's own folder layout and mask format.

Everything is deterministic given ``(index, seed, scale)`` and ``GENERATOR_VERSION``.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_m2mrf.classes import FUNDUS_CLASSES
from napari_m2mrf.errors import UserError

if TYPE_CHECKING:
    from sample_data.fundus_variants import Fundus

# Bump when the generator's output changes: cached samples of other versions are not reused.
GENERATOR_VERSION = 2
LESION_CODES = tuple(cls.code for cls in FUNDUS_CLASSES)  # EX, HE, SE, MA
# Where lesions of different classes overlap, the later code here wins in ``labels``
# (small lesions win: MA > SE > HE > EX).
LABEL_PRIORITY = ("EX", "HE", "SE", "MA")
SCALE_RANGE = (0.5, 4.0)
MAX_DATASET_SIZE = 100_000
_SOFT_EXUDATE_PROBABILITY = 0.5
_SHOWCASE_SEVERITY = 0.9  # index 0 (the napari sample) shows plenty of every class
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class FundusSample:
    """One semi-synthetic photograph and its ground truth.

    ``image``: (H, W, 3) uint8 RGB. ``masks``: per class code (EX, HE, SE, MA) a (H, W) bool mask.
    ``labels``: (H, W) uint8 with the label values of ``FUNDUS_CLASSES`` (1 EX, 2 HE, 3 SE, 4 MA;
    0 background), overlaps resolved by ``LABEL_PRIORITY``. ``name``: a file-name-safe identifier.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    labels: np.ndarray
    name: str


def fundus_lesions(index: int = 0, seed: int = 0, scale: float = 1.0) -> FundusSample:
    """Sample ``index`` of the series ``seed``, read from the cache or generated and cached.

    ``scale`` resizes the photograph (1.0: 1411×1411 before the variant's own resize) and the
    lesions with it. Raises ``UserError`` for a negative index or seed or a scale outside 0.5–4.
    """
    from napari_m2mrf.cache import cache_dir

    _check_arguments(index=index, seed=seed, scale=scale)
    path = cache_dir("fundus_lesions") / f"v{GENERATOR_VERSION}_seed{seed}_index{index}_scale{scale:g}.npz"
    cached = _read_cached(path)
    if cached is not None:
        return cached
    sample = generate_fundus_sample(index, seed, scale)
    _write_cached(path, sample)
    return sample


def generate_fundus_sample(index: int = 0, seed: int = 0, scale: float = 1.0) -> FundusSample:
    """Generate sample ``index`` of series ``seed`` (no cache); see ``fundus_lesions``."""
    from sample_data.lesions import LesionCanvas, LesionLoad, draw_lesions

    fundus, rng = _lesion_free_fundus(index, seed, scale)
    if index == 0:
        load = LesionLoad.random(rng, with_soft_exudates=True, severity=_SHOWCASE_SEVERITY)
    else:
        load = LesionLoad.random(rng, with_soft_exudates=rng.random() < _SOFT_EXUDATE_PROBABILITY)
    canvas = LesionCanvas(fundus)
    draw_lesions(canvas, load, rng, scale)
    image = canvas.rendered_image()
    masks = {code: canvas.masks[code] for code in LESION_CODES}
    name = _sample_name(seed, index, scale)
    return FundusSample(image=image, masks=masks, labels=labels_from_masks(masks), name=name)


def lesion_free_image(index: int = 0, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """The photograph of sample ``index`` of series ``seed`` before lesions were drawn, (H, W, 3) uint8.

    It equals the sample's image everywhere outside the lesion masks (a per-sample negative control).
    """
    return _lesion_free_fundus(index, seed, scale)[0].image


def _lesion_free_fundus(index: int, seed: int, scale: float) -> tuple[Fundus, np.random.Generator]:
    """The variant photograph of a sample and the random generator positioned to draw its lesions."""
    from sample_data.fundus_variants import FundusVariant, apply_variant, base_fundus, random_variant

    _check_arguments(index=index, seed=seed, scale=scale)
    rng = np.random.default_rng([GENERATOR_VERSION, seed, index])
    variant = FundusVariant() if index == 0 else random_variant(rng)
    return apply_variant(base_fundus(), variant.scaled(scale), rng), rng


def labels_from_masks(masks: dict[str, np.ndarray]) -> np.ndarray:
    """(H, W) uint8 labels of ``FUNDUS_CLASSES`` from per-code bool masks; overlaps by ``LABEL_PRIORITY``."""
    label_of = {cls.code: cls.label for cls in FUNDUS_CLASSES}
    shape = next(iter(masks.values())).shape
    labels = np.zeros(shape, np.uint8)
    for code in LABEL_PRIORITY:
        if code in masks:
            labels[masks[code]] = label_of[code]
    return labels


def write_fundus_dataset(
    root: str | os.PathLike[str], n: int, seed: int = 0, split: str = "a. Training Set", scale: float = 1.0
) -> Path:
    """Write samples 0..n-1 of series ``seed`` under ``root`` in IDRiD's layout; returns ``root``.

    Images go to ``root/1. Original Images/<split>/<name>.jpg`` (JPEG, quality 95) and masks to
    ``root/2. All Segmentation Groundtruths/<split>/<n>. <Class>/<name>_<CODE>.tif`` as IDRiD's 1-bit
    palette TIFFs; an SE mask is written only for an image that has soft exudates, as in IDRiD.
    Every file is written atomically. Raises ``UserError`` for impossible arguments.
    """
    from napari_m2mrf.io.idrid_masks import idrid_image_path, idrid_mask_path, write_idrid_mask

    _check_arguments(seed=seed, scale=scale)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 0 <= n <= MAX_DATASET_SIZE:
        raise UserError(f"number of images must be an integer from 0 to {MAX_DATASET_SIZE}, got {n!r}")
    if not split or split in {".", ".."} or "/" in split or os.sep in split:
        raise UserError(f"split must be one folder name such as 'a. Training Set', got {split!r}")
    root = Path(root)
    for index in range(n):
        sample = generate_fundus_sample(index, seed, scale)
        _write_jpeg(idrid_image_path(root, split, sample.name), sample.image)
        for code in LESION_CODES:
            if code != "SE" or sample.masks[code].any():
                write_idrid_mask(idrid_mask_path(root, split, sample.name, code), sample.masks[code])
    return root


def _check_arguments(index: int = 0, seed: int = 0, scale: float = 1.0) -> None:
    for label, value in (("index", index), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise UserError(f"{label} must be a non-negative integer, got {value!r}")
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise UserError(f"scale must be a number from {SCALE_RANGE[0]} to {SCALE_RANGE[1]}, got {scale!r}")


def _sample_name(seed: int, index: int, scale: float) -> str:
    suffix = "" if scale == 1.0 else f"_x{scale:g}".replace(".", "p")
    return f"fundus_lesions_{seed}_{index:03d}{suffix}"


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    from napari_m2mrf.io.atomic import write_bytes_atomic

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    try:
        write_bytes_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise UserError(f"{path}: cannot write the image ({exc.strerror or exc})") from None


def _read_cached(path: Path) -> FundusSample | None:
    """The sample stored at ``path``, or None when it is absent or unreadable (then it is regenerated)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            image = stored["image"]
            packed = stored["masks"]
            name = str(stored["name"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if image.ndim != 3 or image.dtype != np.uint8 or packed.shape[0] != len(LESION_CODES):
        return None
    height, width = image.shape[:2]
    unpacked = np.unpackbits(packed, axis=-1, count=width).astype(bool)
    if unpacked.shape[1] != height:
        return None
    masks = dict(zip(LESION_CODES, unpacked))
    return FundusSample(image=image, masks=masks, labels=labels_from_masks(masks), name=name)


def _write_cached(path: Path, sample: FundusSample) -> None:
    """Store ``sample`` at ``path`` atomically (image + bit-packed masks, compressed)."""
    from napari_m2mrf.io.atomic import write_bytes_atomic

    buffer = io.BytesIO()
    packed = np.stack([np.packbits(sample.masks[code], axis=-1) for code in LESION_CODES])
    np.savez_compressed(buffer, image=sample.image, masks=packed, name=np.array(sample.name))
    write_bytes_atomic(path, buffer.getvalue())
