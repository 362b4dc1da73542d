"""Writing an image or label map and its coarser levels into a zarr group, block by block.

Memory is bounded by a few blocks (never a whole level); blocks run on a small thread pool. The
position reached is stored in the group's attributes after every block, so a build that was
interrupted (crash, kill, cancel) resumes where it stopped when started again with the same plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_m2mrf.io.downsample import half_shape, mean_2x2, mode_2x2
from napari_m2mrf.io.parallel import bounded_ordered_map
from napari_m2mrf.jobs import Cancelled, CancelToken, ProgressCallback

BUILD_KEY = "m2mrf_build"
DEFAULT_CHUNK = 512


@dataclass(frozen=True)
class Block:
    """A rectangle ``[y0:y1, x0:x1]`` of level ``level`` (pixels of that level)."""

    level: int
    y0: int
    y1: int
    x0: int
    x1: int


def level_count(height: int, width: int, chunk: int = DEFAULT_CHUNK) -> int:
    """Levels needed to halve ``height × width`` until it fits in one chunk (at least 1)."""
    levels, size = 1, max(height, width)
    while size > chunk:
        size = -(-size // 2)
        levels += 1
    return levels


def level_shapes(shape: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Shapes of ``levels`` levels starting at ``shape`` (``(C, Y, X)`` or ``(Y, X)``), each half the last."""
    shapes = [tuple(shape)]
    for _ in range(levels - 1):
        shapes.append(half_shape(shapes[-1]))
    return shapes[:levels]


def blocks_of(level: int, shape: tuple[int, ...], block: int) -> list[Block]:
    """Raster-ordered blocks of ``block × block`` pixels covering level ``level`` of ``shape``."""
    height, width = shape[-2], shape[-1]
    return [
        Block(level, y, min(y + block, height), x, min(x + block, width))
        for y in range(0, height, block)
        for x in range(0, width, block)
    ]


def create_level_arrays(
    group: Any, shape: tuple[int, ...], dtype: Any, levels: int, chunk: int, axes: str, first: int = 0
) -> list[Any]:
    """Create (overwriting) arrays ``"<first>"``, ``"<first+1>"``, … of ``levels`` halving shapes from ``shape``."""
    from napari_m2mrf.io.zarr_arrays import create_array

    return [
        create_array(group, str(k), level_shape, dtype, chunk, axes)
        for k, level_shape in enumerate(level_shapes(shape, levels), start=first)
    ]


def build_pyramid(
    group: Any,
    source: Any,
    *,
    kind: str = "image",
    chunk: int = DEFAULT_CHUNK,
    levels: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    workers: int = 2,
    copy_level0: bool = True,
    source_id: dict[str, Any] | None = None,
) -> list[Any]:
    """Copy ``source`` into array ``"0"`` of ``group`` and build levels ``"1"``… by 2×2 reduction.

    ``source``: array-like ``(C, Y, X)`` for ``kind="image"`` (area average) or ``(Y, X)`` for
    ``kind="labels"`` (mode), read one block at a time. With ``copy_level0=False`` array ``"0"``
    already holds level 0 (``source`` is that array) and only the coarser levels are built.
    ``progress(done, total, "")`` counts blocks. A set ``cancel`` token stops the build after the
    block in flight with ``Cancelled``; calling again with the same plan resumes the interrupted
    build. Returns the level arrays.
    """
    if kind not in ("image", "labels"):
        raise ValueError(f"kind must be 'image' or 'labels', not {kind!r}")
    shape = tuple(int(n) for n in source.shape)
    levels = levels or level_count(shape[-2], shape[-1], chunk)
    block = 2 * chunk
    plan = {
        "shape": list(shape),
        "dtype": str(np.dtype(source.dtype)),
        "levels": levels,
        "chunk": chunk,
        "copy_level0": copy_level0,
    }
    if source_id is not None:  # output_gate.source_identity: a different source of one shape restarts, never resumes
        plan["source"] = source_id
    state = dict(group.attrs.get(BUILD_KEY) or {})
    if state.get("plan") == plan and all(str(k) in group for k in range(levels)):
        arrays = [group[str(k)] for k in range(levels)]
        done = int(state.get("done", 0))
    else:
        axes = "cyx" if len(shape) == 3 else "yx"
        if copy_level0:
            arrays = create_level_arrays(group, shape, source.dtype, levels, chunk, axes)
        else:
            arrays = [group["0"]]
            arrays += create_level_arrays(group, half_shape(shape), source.dtype, levels - 1, chunk, axes, first=1)
        done = 0
        group.attrs[BUILD_KEY] = {"plan": plan, "done": 0}
    first = 0 if copy_level0 else 1
    schedule = [b for k in range(first, levels) for b in blocks_of(k, arrays[k].shape, block)]
    reduce = mean_2x2 if kind == "image" else mode_2x2

    def run(item: Block) -> None:
        _write_block(item, arrays, source, reduce)

    if progress:
        progress(done, len(schedule), "")
    for finished, _ in enumerate(_run_levels(run, schedule, done, workers), start=done + 1):
        group.attrs[BUILD_KEY] = {"plan": plan, "done": finished}
        if progress:
            progress(finished, len(schedule), "")
        if cancel is not None and cancel.is_set and finished < len(schedule):
            raise Cancelled(f"stopped after {finished} of {len(schedule)} blocks")
    del group.attrs[BUILD_KEY]
    return arrays


def _run_levels(run: Callable[[Block], None], schedule: list[Block], done: int, workers: int) -> Iterator[None]:
    """Run the blocks from ``done`` on; a level starts only when the previous one is complete."""
    remaining = schedule[done:]
    while remaining:
        level = remaining[0].level
        same_level = [b for b in remaining if b.level == level]
        remaining = remaining[len(same_level) :]
        yield from bounded_ordered_map(run, same_level, workers=workers, in_flight=2 * workers)


def _write_block(block: Block, arrays: list[Any], source: Any, reduce: Callable[[np.ndarray], np.ndarray]) -> None:
    target = arrays[block.level]
    if block.level == 0:
        data = np.asarray(source[..., block.y0 : block.y1, block.x0 : block.x1])
    else:
        finer = arrays[block.level - 1]
        data = reduce(np.asarray(finer[..., 2 * block.y0 : 2 * block.y1, 2 * block.x0 : 2 * block.x1]))
    target[..., block.y0 : block.y1, block.x0 : block.x1] = data


def update_region(arrays: list[Any], y0: int, y1: int, x0: int, x1: int, kind: str = "labels") -> None:
    """Recompute levels 1… over the region ``[y0:y1, x0:x1]`` of level 0 after it was edited."""
    reduce = mean_2x2 if kind == "image" else mode_2x2
    for level in range(1, len(arrays)):
        y0, x0 = y0 // 2, x0 // 2
        y1, x1 = -(-y1 // 2), -(-x1 // 2)
        finer = arrays[level - 1]
        block = np.asarray(finer[..., 2 * y0 : min(2 * y1, finer.shape[-2]), 2 * x0 : min(2 * x1, finer.shape[-1])])
        arrays[level][..., y0:y1, x0:x1] = reduce(block)
