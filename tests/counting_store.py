"""A zarr store wrapper that records what it hands out: audits how much of a pyramid a reader fetched (test and benchmark support)."""

from __future__ import annotations

from zarr.storage import WrapperStore


class CountingStore(WrapperStore):
    """Wraps any zarr v3 store; ``fetched`` lists ``(key, bytes)`` of every value handed out.

    ``bytes`` is the stored (compressed) size; chunk keys contain ``/c/`` (zarr v3 default key
    encoding). Groups and arrays opened through the wrapper share the same ``fetched`` list.
    """

    def __init__(self, store, fetched: list[tuple[str, int]] | None = None) -> None:
        super().__init__(store)
        self.fetched = fetched if fetched is not None else []

    def _with_store(self, store) -> CountingStore:
        return type(self)(store, self.fetched)

    async def get(self, key, prototype, byte_range=None):
        buffer = await self._store.get(key, prototype, byte_range)
        if buffer is not None:
            self.fetched.append((key, len(buffer)))
        return buffer

