"""What a population's Trainer iterates: each epoch's mini-batch indices of all members
(``PopulationBatches``) and eval batches of every member's own split (``StackedSplit``)."""

from __future__ import annotations

import torch

from mlplab.population.stacked import member_batches


class PopulationBatches:
    """One item per epoch: the list of (K, B) row indices of the members' own shuffles.
    ``PopulationModule.training_step`` runs the epoch's mini-batches itself (one Lightning step
    per mini-batch cost more than the step). Lightning sets the epoch, but a resumed fit makes
    the first iterator before it does: the shuffle is drawn lazily."""

    def __init__(self, n_rows: int, batch_size: int, seeds: list[int]) -> None:
        self.n_rows, self.batch_size, self.seeds = n_rows, batch_size, list(seeds)
        self.epoch = 0
        self.sampler = self  # Lightning calls dataloader.sampler.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield member_batches(self.n_rows, self.batch_size, self.seeds, self.epoch)


class StackedSplit:
    """Eval batches of every member's own split at once: ((K, B, D), (K, B)) slices."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-self.x.shape[1] // self.batch_size)

    def __iter__(self):
        size = self.batch_size
        return (
            (self.x[:, i : i + size], self.y[:, i : i + size])
            for i in range(0, self.x.shape[1], size)
        )
