"""Which samples each process trains on at each iteration: a pure function of (seed, iteration).

The global batch of iteration ``i`` holds ``batch_size`` slots; slot ``s`` is global sample
position ``p = i · batch_size + s``, which reads record ``perm_e[p mod N]`` of epoch
``e = p div N`` (``perm_e`` a permutation drawn from ``(seed, e)``) and augments it with the
generator of ``(seed, i, s)``. Process ``r`` of ``W`` takes slots ``[r·B/W, (r+1)·B/W)``.

Because nothing depends on earlier iterations, resuming at iteration ``k`` replays exactly the
samples an uninterrupted run would have seen, and ``W`` processes together see exactly the global
batch one process sees: this is the distributed sampler used under torchrun.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from napari_m2mrf.errors import UserError
from training.datasets import SampleKey


class IterationBatchSampler:
    """Yields, for iterations ``start, start+1, …, stop-1``, this process's list of
    :class:`SampleKey` (``batch_size / world_size`` keys each); a ``batch_sampler`` for
    ``torch.utils.data.DataLoader``."""

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise UserError(f"run.batch_size {batch_size} must be divisible by the number of processes {world_size}")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.seed = seed
        self.start, self.stop = start, stop
        self.local_batch = batch_size // world_size
        self.first_slot = rank * self.local_batch
        self._epoch = -1
        self._permutation = np.arange(0)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def record_index(self, position: int) -> int:
        """Record read at global sample position ``position``."""
        epoch, offset = divmod(position, self.dataset_size)
        if epoch != self._epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.dataset_size)
            self._epoch = epoch
        return int(self._permutation[offset])

    def keys(self, iteration: int) -> list[SampleKey]:
        """This process's keys for ``iteration``."""
        slots = range(self.first_slot, self.first_slot + self.local_batch)
        return [
            SampleKey(self.record_index(iteration * self.batch_size + slot), (self.seed, iteration, slot))
            for slot in slots
        ]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for iteration in range(self.start, self.stop):
            yield self.keys(iteration)
