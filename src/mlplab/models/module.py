"""``MLPModule``: one LightningModule for binary, multiclass and regression tasks.

Losses (the lecture's):
- binary: ``J = −1/n Σ y·log σ(z) + (1−y)·log(1−σ(z))`` (BCE on logits z);
- multiclass: softmax cross-entropy;
- regression: mean squared error ``1/n Σ (y − ŷ)²`` on the standardized target.

Training opts into grouped mini-batches (``mlplab.models.grouped.GroupedSteps``: several
optimizer steps per ``training_step``, manual optimization); this module supplies the loss of a
mini-batch (``step_loss``), the epoch's metrics (``group_done``) and steps its scheduler at
epoch end. Optimizer and scheduler come from ``mlplab.models.optimization``.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassF1Score,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from mlplab.data.spec import TASKS, unstandardize
from mlplab.errors import DivergedError, check
from mlplab.models.arguments import check_module
from mlplab.models.grouped import GroupedSteps
from mlplab.models.mlp import MLP
from mlplab.models.optimization import build_optimization, check_optimization

MAIN_METRIC = {"binary": "acc", "multiclass": "acc", "regression": "r2"}


def check_monitor(key: str, monitor: str, task: str, num_classes: int) -> None:
    """``monitor`` must be a metric the MLP logs every epoch (``val/los`` would never be seen)."""
    train = "train/mse" if task == "regression" else "train/acc"
    known = ["train/loss", train, "val/loss", *make_metrics(task, num_classes, "val")]
    check(monitor in known, key, monitor, f"a metric logged every epoch: one of {known}")


def make_metrics(task: str, num_classes: int, stage: str) -> MetricCollection:
    """Stateful metrics of one stage. Train keeps the cheap ones (they update every step) and
    skips torchmetrics' input checks: those inputs are ours and well-formed."""
    train = stage == "train"
    if task == "binary":
        metrics = {"acc": BinaryAccuracy(validate_args=not train)}
        if not train:
            metrics |= {"auroc": BinaryAUROC(), "f1": BinaryF1Score()}
    elif task == "multiclass":
        metrics = {"acc": MulticlassAccuracy(num_classes, average="micro", validate_args=not train)}
        if not train:
            metrics["f1"] = MulticlassF1Score(num_classes, average="macro")
    else:
        metrics = {"mse": MeanSquaredError()}
        if not train:
            metrics |= {"mae": MeanAbsoluteError(), "r2": R2Score()}
    return MetricCollection(metrics, prefix=f"{stage}/")


class MLPModule(GroupedSteps, L.LightningModule):
    """An ``MLP`` with its loss, metrics, optimizer and scheduler, built from flat primitives.

    Args:
        in_features, out_features, task: set by ``train`` from the DataModule.
        hidden_sizes, activation, dropout, layer: see ``MLP``.
        l1: weight of the L1 penalty ``λ Σ|w|`` on weight matrices (not biases).
        optimizer: ``{"_target_": "torch.optim.Adam", "lr": 1e-3, ...}``.
        scheduler: ``{"_target_": "torch.optim.lr_scheduler.StepLR", ...}`` or None; a
            ``monitor`` key names the metric ReduceLROnPlateau watches (default ``val/loss``).
        gradient_clip_val: clip gradients to this norm/value each mini-batch (0 = off).
        gradient_clip_algorithm: ``norm`` or ``value``.
        group_batches: mini-batches per ``training_step`` (``GroupedSteps``): an int ≥ 1 or
            ``"auto"`` (about 32k rows per step on one device, 1 under DDP).
        target_mean, target_std: regression target scaling, to report metrics in real units.
        class_weights: loss weight per class (binary: ``[pos_weight]``), or None.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        task: str,
        hidden_sizes: list[int] | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        layer: str = "torch",
        l1: float = 0.0,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        gradient_clip_val: float = 0.0,
        gradient_clip_algorithm: str = "norm",
        target_mean: float = 0.0,
        target_std: float = 1.0,
        class_weights: list[float] | None = None,
        group_batches: int | str = "auto",
    ) -> None:
        super().__init__()
        check(task in TASKS, "task", task, f"expected one of {list(TASKS)}")
        check_module(l1, gradient_clip_val, gradient_clip_algorithm, group_batches)
        self.save_hyperparameters()
        self.automatic_optimization = False
        # A buffer follows the module to its device; None leaves the loss unweighted.
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        hidden = [] if hidden_sizes is None else hidden_sizes  # MLP validates the value itself
        self.net = MLP(in_features, hidden, out_features, activation, dropout, layer)
        # Fail now, with the key named, not at the first step.
        check_optimization(self.hparams.optimizer, self.hparams.scheduler)
        if "monitor" in (scheduler or {}) and type(self) is MLPModule:  # a subclass may log more
            check_monitor("scheduler.monitor", scheduler["monitor"], task, out_features)
        # One stateful collection per stage (a ModuleDict can't use "train": it's a method).
        self.train_metrics = make_metrics(task, out_features, "train")
        self.val_metrics = make_metrics(task, out_features, "val")
        self.test_metrics = make_metrics(task, out_features, "test")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._validated_epoch: int | None = None  # the last epoch validation ran in
        self._loss_sum: torch.Tensor | float = 0.0
        self._rows = 0

    # ---- the math -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, D) -> (B, out)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        task = self.hparams.task
        if task == "binary":
            return F.binary_cross_entropy_with_logits(
                out.squeeze(-1), y, pos_weight=self.class_weights
            )
        if task == "multiclass":
            return F.cross_entropy(out, y, weight=self.class_weights)
        return F.mse_loss(out.squeeze(-1), y)

    def l1_penalty(self) -> torch.Tensor:
        """``Σ|w|`` over weight matrices."""
        return sum(p.abs().sum() for p in self.net.parameters() if p.ndim > 1)

    def predictions(self, out: torch.Tensor) -> torch.Tensor:
        """Model output → P(class 1) (binary), class probabilities, or a value in real units."""
        task = self.hparams.task
        if task == "binary":
            return torch.sigmoid(out.squeeze(-1))
        if task == "multiclass":
            return torch.softmax(out, dim=-1)
        return unstandardize(out.squeeze(-1), self.hparams.target_mean, self.hparams.target_std)

    def _metric_target(self, y: torch.Tensor) -> torch.Tensor:
        if self.hparams.task == "binary":
            return y.long()
        if self.hparams.task == "regression":
            return unstandardize(y, self.hparams.target_mean, self.hparams.target_std)
        return y

    # ---- training: GroupedSteps runs the optimizer steps, these are the model's parts ------
    def step_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(x)
        loss = self.loss(out, y)
        if self.hparams.l1 > 0:
            loss = loss + self.hparams.l1 * self.l1_penalty()
        return loss, out

    def group_done(self, outs: list, ys: list, losses: torch.Tensor) -> None:
        weights = self._loss_weights(ys).to(losses)  # (G,)
        # Epoch means accumulate here, once per group: self.log per mini-batch costs 10–15%.
        self._loss_sum = self._loss_sum + (losses * weights).sum()
        self._rows = self._rows + weights.sum()
        out, y = torch.cat(outs), torch.cat(ys)
        self.train_metrics.update(self.predictions(out), self._metric_target(y))

    def on_train_epoch_end(self) -> None:
        if self._rows:
            self.log("train/loss", self._loss_sum / self._rows, sync_dist=True, prog_bar=True)
            self._loss_sum, self._rows = 0.0, 0
        self.log_dict(self.train_metrics.compute(), sync_dist=True)
        self.train_metrics.reset()
        self._step_scheduler()

    def _step_scheduler(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            monitor = (self.hparams.scheduler or {}).get("monitor", "val/loss")
            value = self.trainer.callback_metrics.get(monitor)
            # callback_metrics keeps the last validation's value: in an epoch without
            # validation (check_val_every_n_epoch > 1) there is nothing new to react to.
            stale = monitor.startswith("val/") and self._validated_epoch != self.current_epoch
            if value is not None and not stale:
                scheduler.step(value)
        else:
            scheduler.step()

    # ---- evaluation -----------------------------------------------------------------------
    def _loss_weights(self, ys: list[torch.Tensor]) -> torch.Tensor:
        """(len(ys),) what each batch's mean loss averages over, so batch means pool into the
        split's mean: its rows — or, for class-weighted cross-entropy (which divides by
        Σ w_y, not by the rows), Σ w_y."""
        if self.hparams.task == "multiclass" and self.class_weights is not None:
            return torch.stack([self.class_weights[y].sum() for y in ys])
        return torch.tensor([float(len(y)) for y in ys], device=ys[0].device)

    def _eval_step(self, batch, stage: str) -> None:
        x, y = batch
        out = self(x)
        weight = self._loss_weights([y])[0]
        getattr(self, f"{stage}_loss").update(self.loss(out, y), weight=weight)
        getattr(self, f"{stage}_metrics").update(self.predictions(out), self._metric_target(y))

    def _eval_epoch_end(self, stage: str) -> None:
        # torchmetrics gathers states across ranks in compute(): exact, no double counting.
        loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        value = loss.compute()
        if stage == "val" and not self.trainer.sanity_checking:
            self._validated_epoch = self.current_epoch
        if stage == "val" and self.trainer.training is False and self.trainer.state.fn == "fit":
            if not bool(torch.isfinite(value)):  # the weights went bad in the last steps
                raise DivergedError(
                    f"training diverged: val/loss is {float(value)} at epoch "
                    f"{self.current_epoch} (the weights became non-finite); try a smaller "
                    f"learning rate than optimizer.lr={(self.hparams.optimizer or {}).get('lr')}"
                )
        results = {f"{stage}/loss": value, **metrics.compute()}
        main = MAIN_METRIC[self.hparams.task]  # on the progress bar with the loss
        shown = {k: v for k, v in results.items() if k in (f"{stage}/loss", f"{stage}/{main}")}
        self.log_dict(shown, sync_dist=True, prog_bar=True)
        self.log_dict({k: v for k, v in results.items() if k not in shown}, sync_dist=True)
        loss.reset()
        metrics.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self.predictions(self(x))

    # ---- optimization ---------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizer, scheduler = build_optimization(self.parameters(), hp.optimizer, hp.scheduler)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
