"""``TabularDataModule``: any DataFrame + column spec → split → train-fitted preprocessing →
tensors built once → fast in-memory batches.

    source fn ─► DataFrame+spec ─► seeded (stratified) split ─► Preprocessor.fit(train)
              ─► float32 tensors on the training device ─► BatchIterator
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import torch

from mlplab.data.batches import BatchIterator
from mlplab.data.columns import Columns
from mlplab.data.preprocess import Preprocessor
from mlplab.data.sources import load_source, parsed_table
from mlplab.data.spec import SPLITS
from mlplab.data.splits import check_cv_args, check_data_args, cv_split, split_indices
from mlplab.errors import check
from mlplab.models.grouped import counts_training_steps


class TabularDataModule(L.LightningDataModule):
    """One DataModule for every table.

    Args:
        source: dataset name (see ``mlplab.data.sources.SOURCES``).
        options: keyword arguments of that dataset's function (e.g. ``n_samples``, ``noise``).
        batch_size: rows per mini-batch: an int ≥ 1 (1 = single-sample SGD) or ``"full"``
            (full-batch gradient descent). Per rank under DDP.
        val_fraction, test_fraction: shares of the rows held out; each in (0, 1), together < 1.
        seed: seeds the split and the per-epoch shuffle.
        eval_batch_size: rows per validation/test batch.
        balance_classes: weight the loss by inverse class frequency (imbalanced classes).
        cv_folds, cv_fold: K-fold cross-validation (``mlplab.data.splits``): the train and val
            rows of the split are parted into K ≥ 2 folds and fold k (0 … K−1) is the val
            split; the test split stays. Both null (the default): no cross-validation.
    """

    def __init__(
        self,
        source: str,
        options: dict | None = None,
        batch_size: int | str = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        eval_batch_size: int = 4096,
        balance_classes: bool = False,
        cv_folds: int | None = None,
        cv_fold: int | None = None,
    ) -> None:
        super().__init__()
        check_data_args(batch_size, val_fraction, test_fraction, eval_batch_size)
        check_cv_args(cv_folds, cv_fold)
        self.save_hyperparameters()
        self.preprocessor: Preprocessor | None = None
        self.frames: dict[str, pd.DataFrame] = {}
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- data -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.tensors:  # built once; fit → test reuse the same tensors
            return
        hp = self.hparams
        df, spec = load_source(hp.source, **(hp.options or {}))
        if spec.split_by:  # the data says which rows are which (e.g. flights: by date)
            labels = df[spec.split_by].to_numpy()
            parts = {name: np.flatnonzero(labels == name) for name in SPLITS}
            why = f"has no {{}} rows in its split column {spec.split_by!r}"
        else:
            parts = split_indices(df, spec, hp.val_fraction, hp.test_fraction, hp.seed)
            why = f"leaves the {{}} split of {len(df)} rows empty"
        if hp.cv_folds is not None:  # the same test rows; train+val parted into folds
            parts = cv_split(df, spec, parts, hp.cv_folds, hp.cv_fold, hp.seed)
        for name, rows in parts.items():
            check(len(rows) > 0, "data.source", hp.source, why.format(name))
        for name in ("val", "test"):  # R² (regression) is undefined on one row
            why = (
                f"leaves {len(parts[name])} row in the {name} split of {len(df)}: regression "
                "metrics (R²) need at least 2 — use more rows or a larger fraction"
            )
            ok = spec.task != "regression" or len(parts[name]) >= 2
            check(ok, f"data.{name}_fraction", hp[f"{name}_fraction"], why)
        self.frames = {name: df.iloc[rows] for name, rows in parts.items()}
        table = parsed_table(df)  # a population's shared table: parsed once for all members
        columns = {n: Columns(self.frames[n], table, r) for n, r in parts.items()}
        if self.preprocessor is None:  # a checkpoint's state (load_state_dict) wins
            self.preprocessor = Preprocessor.fit(self.frames["train"], spec, columns["train"])
        self._build_tensors(columns)

    def _build_tensors(self, columns: dict | None = None) -> None:
        pre, columns = self._fitted(), columns or {}
        self.tensors = {
            n: (pre.features(f, columns.get(n)), pre.targets(f, columns.get(n)))
            for n, f in self.frames.items()
        }
        self._on_device.clear()

    @property
    def task(self) -> str:
        return self._fitted().task

    @property
    def in_features(self) -> int:
        return self._fitted().n_features

    @property
    def out_features(self) -> int:
        return self._fitted().n_outputs

    @property
    def class_weights(self) -> list[float] | None:
        """Loss weights for the model when ``balance_classes=True`` (classification only)."""
        pre = self._fitted()
        return pre.class_weights() if self.hparams.balance_classes and pre.classes else None

    def _fitted(self) -> Preprocessor:
        if self.preprocessor is None:
            raise RuntimeError("call setup() first: sizes come from the fitted preprocessor")
        return self.preprocessor

    # ---- iterators ------------------------------------------------------------------------
    def _placement(self) -> tuple[torch.device, int, int]:
        trainer = self.trainer
        if trainer is None:
            return torch.device("cpu"), 0, 1
        return trainer.strategy.root_device, trainer.global_rank, trainer.world_size

    def _split(self, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, str(device))
        if key not in self._on_device:  # move once, then every epoch slices on the device
            x, y = self.tensors[name]
            self._on_device[key] = (x.to(device), y.to(device))
        return self._on_device[key]

    def train_dataloader(self) -> BatchIterator:
        device, rank, world = self._placement()
        x, y = self._split("train", device)
        batch_size = self.hparams.batch_size
        if batch_size == "full":
            batch_size = -(-len(x) // world)  # the whole (per-rank) training split
        # Trainer(overfit_batches=k) means "the same k batches every epoch": no reshuffle.
        shuffle = not (self.trainer and self.trainer.overfit_batches)
        group = self._batches_per_step(batch_size, world)
        return BatchIterator(x, y, batch_size, shuffle, self.hparams.seed, rank, world, group)

    def _batches_per_step(self, batch_size: int, world: int) -> int | None:
        """Groups of mini-batches for a module that asks for them (``GroupedSteps``), unless
        Lightning counts steps."""
        ask = getattr(getattr(self.trainer, "lightning_module", None), "batches_per_step", None)
        if ask is None or counts_training_steps(self.trainer):
            return None
        return ask(batch_size, world)

    def _eval(self, name: str) -> BatchIterator:
        device, rank, world = self._placement()
        x, y = self._split(name, device)
        return BatchIterator(x, y, self.hparams.eval_batch_size, rank=rank, world_size=world)

    def val_dataloader(self) -> BatchIterator:
        return self._eval("val")

    def test_dataloader(self) -> BatchIterator:
        return self._eval("test")

    # ---- checkpoint state -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"preprocessor": self._fitted().state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.preprocessor = Preprocessor.from_state_dict(state_dict["preprocessor"])
        if self.tensors:  # Lightning restores state after setup(): re-encode with this state
            self._build_tensors()
