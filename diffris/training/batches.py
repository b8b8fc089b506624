"""How a run's samples become optimiser steps: each epoch's order, the split of a global batch
over processes and micro-batches, and the seed of every draw (``diffris.training.trainer``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffris.errors import ConfigError


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch is split over processes and accumulation steps.

    Micro-batch ``k`` of a global batch holds its samples ``[k*micro, (k+1)*micro)``; process
    ``rank`` runs micro-batches ``a*world + rank`` for ``a`` in ``range(accum)``.
    """

    global_batch: int
    world: int
    micro: int

    @property
    def accum(self) -> int:
        return self.global_batch // (self.world * self.micro)

    @classmethod
    def plan(cls, global_batch: int, micro_batch_size: int, world: int) -> BatchLayout:
        if global_batch % world:
            raise ConfigError(f"train.batch_size {global_batch} does not split over {world} processes")
        per_process = global_batch // world
        micro = min(micro_batch_size, per_process)
        if per_process % micro:
            raise ConfigError(
                f"train.batch_size {global_batch} over {world} process(es) gives {per_process} "
                f"per process, not a multiple of train.micro_batch_size {micro_batch_size}"
            )
        return cls(global_batch, world, micro)

    def micro_batches(self, batch: list[int], rank: int) -> list[tuple[int, list[int]]]:
        """(k, sample indices) of the micro-batches that ``rank`` runs for one global batch."""
        out = []
        for a in range(self.accum):
            k = a * self.world + rank
            out.append((k, batch[k * self.micro : (k + 1) * self.micro]))
        return out



def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    return np.random.default_rng([seed, epoch]).permutation(num_samples).tolist()

