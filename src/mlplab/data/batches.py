"""Whole-batch iteration over tensors that already sit on the training device.

``DataLoader(TensorDataset)`` indexes one row at a time and collates; for small tabular
models that Python work costs more than the model. ``BatchIterator`` draws one permutation per
epoch and gathers each batch with a single index operation; evaluation batches are contiguous
slices (views, no copy). For training it can also yield lists of ``group`` mini-batches, one
per ``training_step`` (``mlplab.models.grouped``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class BatchIterator:
    """Mini-batches of ``(x, y)`` sliced from in-memory tensors.

    Args:
        x: features, shape (N, D), on the device the model trains on.
        y: targets, shape (N,) (float for binary/regression, long for multiclass).
        batch_size: rows per mini-batch (per rank under DDP); the last one may be smaller.
        shuffle: reshuffle every epoch with a permutation seeded by ``(seed, epoch)``.
        seed: base seed of the shuffle.
        rank, world_size: DDP position. Training shards (``shuffle=True``) wrap around so
            every rank gets the same number of rows and batches; evaluation shards are
            disjoint contiguous blocks, so no row is counted twice.
        group: if set, yield lists of up to ``group`` mini-batches.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        group: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.group = rank, world_size, group
        self.epoch = 0
        # Lightning calls `dataloader.sampler.set_epoch(epoch)` at each epoch start (and with
        # the restored epoch after a resume); being our own sampler lets that reach us.
        # (Lightning then also reads `batch_sampler`, which a DataLoader always has.)
        self.sampler, self.batch_sampler = self, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def rows(self) -> int:
        """Rows this rank sees per epoch."""
        n, w = len(self.x), self.world_size
        if self.shuffle:
            return math.ceil(n / w)
        return (self.rank + 1) * n // w - self.rank * n // w

    def num_batches(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.num_batches() / (self.group or 1))

    def rows_of_epoch(self) -> torch.Tensor | slice:
        """This rank's rows of the epoch: a permutation (shuffled) or a slice (evaluation)."""
        n, w = len(self.x), self.world_size
        if not self.shuffle:
            return slice(self.rank * n // w, (self.rank + 1) * n // w)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(n, generator=gen)
        if w > 1:  # pad by wrapping, then deal rows out round-robin (like DistributedSampler)
            perm = perm.repeat(math.ceil(self.rows * w / n))[: self.rows * w][self.rank :: w]
        return perm.to(self.x.device)

    def batches(self) -> Iterator[Batch]:
        index, bs = self.rows_of_epoch(), self.batch_size
        if isinstance(index, slice):  # evaluation: contiguous views, no copy at all
            x, y = self.x[index], self.y[index]
            for start in range(0, len(x), bs):
                yield x[start : start + bs], y[start : start + bs]
            return
        # Gather batch by batch: a whole-epoch gather of a wide table is a second copy of it
        # (190 MB for flights) and measurably slower than gathering while the cache is warm.
        for start in range(0, len(index), bs):
            rows = index[start : start + bs]
            yield self.x[rows], self.y[rows]

    def __iter__(self) -> Iterator[Batch] | Iterator[list[Batch]]:
        if self.group is None:
            yield from self.batches()
            return
        batches = self.batches()
        while chunk := list(islice(batches, self.group)):
            yield chunk
