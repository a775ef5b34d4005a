"""Lightning callbacks that draw the lecture's figures into the run dir (and to wandb).

- ``LearningCurves``: ``learning_curves.png`` — train vs val loss per epoch, the best
  checkpoint and the early-stopping epoch marked;
- ``DecisionBoundary``: ``decision_boundary.png`` — for binary tasks on 2 numeric features,
  ``P(class 1)`` over the plane in the data's own units.

Both are in ``conf/callbacks/default.yaml``; ``callbacks.learning_curves=null`` turns one off.
When a ``WandbLogger`` is in use the PNG is also logged there as an image.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import WandbLogger

from mlplab.figures.plots import plot_decision_boundary, plot_learning_curves
from mlplab.models.outputs import predictions


def log_image(trainer: L.Trainer, key: str, path: Path) -> None:
    """Log the PNG at ``path`` to every ``WandbLogger`` of the trainer (others can't show it)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)])


def describe_model(pl_module: L.LightningModule) -> str:
    """``hidden [32, 32], relu activation, dropout 0.3, weight decay 0.001`` from the module's
    hyperparameters (empty for a module without them): a figure title says what was run."""
    hp = pl_module.hparams
    if "hidden_sizes" not in hp:
        return ""
    parts = [f"hidden {list(hp.hidden_sizes or [])}", f"{hp.get('activation')} activation"]
    if hp.get("dropout"):
        parts.append(f"dropout {hp.dropout:g}")
    weight_decay = (hp.get("optimizer") or {}).get("weight_decay")
    if weight_decay:
        parts.append(f"weight decay {weight_decay:g}")
    return ", ".join(parts)


def _title(name: str, pl_module: L.LightningModule) -> str:
    model = describe_model(pl_module)
    return f"{name}: {model}" if model else name


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)


class LearningCurves(L.Callback):
    """Record ``train/loss`` and ``val/loss`` per epoch; at fit end draw them.

    A callback's ``on_*_epoch_end`` runs *before* the module's, which logs the epoch's loss.
    So ``val/loss`` of epoch e is read at ``on_validation_end``, and ``train/loss`` of epoch e
    at the start of epoch e + 1, at ``on_train_end``, or when ``last.ckpt`` is written. The
    curves travel in checkpoints, so a resumed run draws every epoch once.

    Attributes (after fit): ``epochs``, ``train_loss``, ``val_loss`` (NaN where an epoch has
    no value), ``best_epoch`` (lowest val/loss, the one ``ModelCheckpoint`` keeps, or None),
    ``stopped_epoch`` (set by early stopping, else None), ``path`` (the PNG, or None).
    """

    def __init__(self, filename: str = "learning_curves.png") -> None:
        self.filename = filename
        self._train: dict[int, float] = {}
        self._val: dict[int, float] = {}
        self._epoch: int | None = None  # the epoch whose train/loss is logged next
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.path: Path | None = None
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    # ---- recording ------------------------------------------------------------------------
    def _take_train_loss(self, trainer: L.Trainer) -> None:
        value = _metric(trainer, "train/loss")
        if self._epoch is not None and value is not None:
            self._train[self._epoch] = value

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_train_loss(trainer)  # the epoch before this one ended with it logged
        self._epoch = trainer.current_epoch

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = _metric(trainer, "val/loss")
        if not trainer.sanity_checking and value is not None:
            self._val[trainer.current_epoch] = value

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_train_loss(trainer)  # the last epoch
        self._epoch = None

    # ---- results --------------------------------------------------------------------------
    @property
    def epochs(self) -> list[int]:
        return sorted(set(self._train) | set(self._val))

    @property
    def train_loss(self) -> list[float]:
        return [self._train.get(e, math.nan) for e in self.epochs]

    @property
    def val_loss(self) -> list[float]:
        return [self._val.get(e, math.nan) for e in self.epochs]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.epochs:
            return
        finite = {e: v for e, v in self._val.items() if math.isfinite(v)}
        # ModelCheckpoint keeps the first epoch that reached the minimum (strict improvement).
        self.best_epoch = min(finite, key=lambda e: (finite[e], e)) if finite else None
        stopper = trainer.early_stopping_callback
        stopped = stopper.stopped_epoch if stopper is not None else 0
        self.stopped_epoch = int(stopped) if stopped > 0 else None
        self.path = plot_learning_curves(
            self.epochs,
            self.train_loss,
            self.val_loss,
            Path(trainer.default_root_dir) / self.filename,
            best_epoch=self.best_epoch,
            stopped_epoch=self.stopped_epoch,
            title=_title("Learning curves", pl_module),
        )
        log_image(trainer, "learning_curves", self.path)

    # ---- resume: the curves of the epochs before the checkpoint travel with it -----------
    def state_dict(self) -> dict:
        trainer = self._trainer
        # Called while a checkpoint is written. Past the epoch's end (Lightning counts the
        # epoch as processed before its on_train_epoch_end hooks, and last.ckpt is written
        # after the module's), this epoch's train/loss is logged already: keep it with it.
        if trainer is not None and self._epoch == trainer.current_epoch:
            progress = trainer.fit_loop.epoch_progress.current
            if progress.processed > progress.completed:
                self._take_train_loss(trainer)
        return {"train": dict(self._train), "val": dict(self._val)}  # int → float: weights_only

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning also restores callbacks for trainer.test(ckpt_path=best): what was recorded
        # in this process after that checkpoint wins over it, so nothing is lost.
        for key, mine in (("train", self._train), ("val", self._val)):
            for epoch, value in state_dict.get(key, {}).items():
                mine.setdefault(int(epoch), float(value))


class DecisionBoundary(L.Callback):
    """At fit end, draw ``P(class 1 | x)`` over the training rows, in raw units.

    Only for a binary task on exactly 2 numeric features and no categorical ones (the
    lecture's toy data, e.g. ``data=moons``); on other data it does nothing. The grid goes
    through the datamodule's own ``preprocessor.features``, so the axes are the data's units.
    The model is drawn with its last weights, not the best checkpoint's. ``path``: the PNG
    written, or None.
    """

    def __init__(self, filename: str = "decision_boundary.png") -> None:
        self.filename = filename
        self.path: Path | None = None

    @staticmethod
    def applies(datamodule) -> bool:
        """True when the data is a binary task on exactly 2 numeric, 0 categorical features."""
        pre = getattr(datamodule, "preprocessor", None)
        return (
            pre is not None
            and pre.task == "binary"
            and len(pre.numeric) == 2
            and not pre.categorical
            and "train" in getattr(datamodule, "frames", {})
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or not self.applies(datamodule):
            return
        pre, train = datamodule.preprocessor, datamodule.frames["train"]
        self.path = plot_decision_boundary(
            _predictor(pl_module, pre),
            train[pre.numeric].to_numpy(dtype=np.float64),
            datamodule.tensors["train"][1].numpy(),
            Path(trainer.default_root_dir) / self.filename,
            feature_names=pre.numeric,
            title=_title("Decision boundary", pl_module),
            class_names=[str(c) for c in pre.classes],
        )
        log_image(trainer, "decision_boundary", self.path)


def _predictor(pl_module: L.LightningModule, pre):
    """Raw (M, 2) coordinates → (M,) P(class 1), through the fitted preprocessing."""

    @torch.no_grad()
    def predict_proba(points: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(points, columns=pre.numeric)
        was_training = pl_module.training
        pl_module.eval()  # dropout off
        try:
            # (M, 2) standardized, in the model's dtype (a 64-true or bf16-true run's)
            dtype = next(pl_module.parameters()).dtype
            x = pre.features(frame).to(pl_module.device, dtype=dtype)
            return predictions(pl_module, pl_module(x), pre).float().cpu().numpy()
        finally:
            pl_module.train(was_training)

    return predict_proba
