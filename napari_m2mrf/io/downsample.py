"""2×2 reductions that build each pyramid level from the previous one.

Images: area average (rounded). Labels: the mode of each 2×2 block, ties going to the larger
label value so that thin foreground is not lost to background. Odd edges are padded by
repeating the last row/column, so level ``k+1`` has shape ``ceil(shape_k / 2)``.
"""

from __future__ import annotations

import numpy as np


def half_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the next level: the last two axes halved, rounded up."""
    return (*shape[:-2], -(-shape[-2] // 2), -(-shape[-1] // 2))


def _pad_even(block: np.ndarray) -> np.ndarray:
    pad_y, pad_x = block.shape[-2] % 2, block.shape[-1] % 2
    if not pad_y and not pad_x:
        return block
    return np.pad(block, [(0, 0)] * (block.ndim - 2) + [(0, pad_y), (0, pad_x)], mode="edge")


def mean_2x2(block: np.ndarray) -> np.ndarray:
    """``(..., 2h, 2w)`` (any size; odd edges padded) → ``(..., h, w)`` area average, same dtype (rounded)."""
    block = _pad_even(block)
    corners = (block[..., 0::2, 0::2], block[..., 0::2, 1::2], block[..., 1::2, 0::2], block[..., 1::2, 1::2])
    if block.dtype.kind == "f":
        return ((corners[0].astype(np.float32) + corners[1] + corners[2] + corners[3]) / 4).astype(block.dtype)
    wide = np.uint16 if block.dtype.itemsize == 1 else np.uint64 if block.dtype.kind == "u" else np.int64
    total = corners[0].astype(wide)
    for corner in corners[1:]:
        total += corner
    total += 2
    total //= 4
    return total.astype(block.dtype)


def mode_2x2(block: np.ndarray) -> np.ndarray:
    """``(2h, 2w)`` labels (odd edges padded) → ``(h, w)``: each block's most frequent value, ties → larger."""
    block = _pad_even(block)
    if block.size and block.min() == block.max():  # uniform (mostly background): nothing to vote on
        return np.ascontiguousarray(block[0::2, 0::2])
    corners = (block[0::2, 0::2], block[0::2, 1::2], block[1::2, 0::2], block[1::2, 1::2])
    best_value = corners[0]
    best_key = np.full(best_value.shape, -1, dtype=np.int32)
    for candidate in corners:
        count = sum((candidate == other).astype(np.int32) for other in corners)
        key = count * 65536 + candidate.astype(np.int32)
        better = key > best_key
        best_key = np.where(better, key, best_key)
        best_value = np.where(better, candidate, best_value)
    return best_value
