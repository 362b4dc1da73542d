"""Ordered parallel map with a bounded number of results in flight (memory stays bounded)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_ordered_map(
    function: Callable[[T], R], items: Iterable[T], *, workers: int = 2, in_flight: int = 4
) -> Iterator[R]:
    """Like ``map(function, items)`` on ``workers`` threads, yielding results in input order.

    At most ``in_flight`` calls are submitted but not yet consumed, so a slow consumer never makes
    results pile up in memory. Stopping iteration early cancels what has not started.
    """
    pending: deque[Future[R]] = deque()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for item in source:
                pending.append(pool.submit(function, item))
                if len(pending) >= in_flight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
