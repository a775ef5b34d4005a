"""``PopulationModule``: a LightningModule that trains the K members of a ``StackedMLP`` at once.

One training step: member k gathers its own mini-batch (``member_batches``: the rows its
stand-alone run would see), the stacked forward computes all members, the per-member losses
(+ each member's L1) are summed — so member k's gradient is its own loss's — and one vectorized
optimizer step updates every active member. Validation scores every member on the shared val
split each epoch with the pooling ``MLPModule`` uses (batch means weighted by rows, or Σw_y for
class-weighted cross-entropy), keeps each member's best weights (lowest val/loss, what
``ModelCheckpoint`` keeps) and stops members early one by one (``EarlyStopping``'s rule): a
stopped or diverged member's weights and optimizer state stop changing. Its checkpoint keeps
the per-member state that ``resume=auto`` needs (``population.resume``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import lightning as L
import torch

from mlplab.population.batches import StackedSplit
from mlplab.population.clip import clip_members, clip_values
from mlplab.population.metrics import MemberScores, TrainScores
from mlplab.population.optim_config import build_stacked_optimizer
from mlplab.population.resume import STATE_KEY, load_member_state, member_state
from mlplab.population.schedule import build_stacked_scheduler
from mlplab.population.stacked import StackedMLP, gather_rows, member_losses

Batch = tuple[torch.Tensor, torch.Tensor]

OK, STOPPED, DIVERGED, PRUNED = "ok", "stopped", "diverged", "pruned"


class PopulationModule(L.LightningModule):
    """Train ``net``'s K members, each on its own training split.

    Args:
        net: the stacked members.
        x, y: each member's training features (K, N, D) and targets (K, N) (an ``expand`` of
            one split when members share it: no copy).
        task: ``binary``, ``multiclass`` or ``regression``; num_classes: outputs of the net.
        optimizer: ``_target_`` (a torch.optim class path) shared by all members.
        members: one optimizer kwargs dict per member (lr, betas, weight_decay, ...).
        l1: per-member L1 strength. class_weights: shared (as ``MLPModule``'s), or None.
        patience: per-member early-stopping patience (None: no early stopping); min_delta shared.
        target_scale: each member's (means, stds) of a regression target, to report
            metrics in its units.
        on_epoch: called after each validation with the epoch and the rows of the members
            that trained in it ({"member", "epoch", "train/...", "val/..."}); returns the
            members to stop now (status ``pruned``, e.g. by an Optuna pruner).
        scheduler, schedules: the learning-rate scheduler's ``_target_`` (shared) and each
            member's numbers; stepped once an epoch after validation, as ``MLPModule`` does
            (ReduceLROnPlateau on ``monitor`` of that epoch's validation).
        clip: each member's ``trainer.gradient_clip_val`` (0: none) and the shared algorithm.
    """

    def __init__(
        self,
        net: StackedMLP,
        x: torch.Tensor,
        y: torch.Tensor,
        task: str,
        optimizer: str,
        members: list[dict],
        l1: list[float],
        class_weights: list[float] | None = None,
        patience: list[int | None] | None = None,
        min_delta: float = 0.0,
        num_classes: int = 1,
        target_scale: tuple[list[float], list[float]] | None = None,
        on_epoch: Callable[[int, list[dict]], Iterable[int]] | None = None,
        scheduler: str | None = None,
        schedules: list[dict] | None = None,
        monitor: str = "val/loss",
        clip: tuple[list[float], str] | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net, self.task = net, task
        self.register_buffer("x", x, persistent=False)
        self.register_buffer("y", y, persistent=False)
        self.register_buffer("l1", torch.tensor(l1, dtype=torch.float32), persistent=False)
        self.has_l1 = any(v != 0 for v in l1)
        values, self.clip_algorithm = clip if clip else ([0.0] * net.k, "norm")
        self.register_buffer("clip", clip_values(values, self.clip_algorithm), persistent=False)
        self.has_clip = any(v > 0 for v in values)
        cw = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", cw, persistent=False)
        self.optimizer_target, self.member_options = optimizer, members
        scale = target_scale or ([0.0] * net.k, [1.0] * net.k)
        self.scores = MemberScores(task, num_classes, cw, scale)
        self.train_scores = TrainScores(self.scores)
        self.on_epoch = on_epoch
        self.scheduler_target, self.schedules, self.monitor = scheduler, schedules, monitor
        self._monitored: list[float] | None = None  # this epoch's values of `monitor`
        k = net.k
        self.patience = list(patience) if patience is not None else [None] * k
        self.min_delta = min_delta
        self.status = [OK] * k
        self.best_loss = [float("inf")] * k
        self.best_epoch: list[int | None] = [None] * k
        self.stopped_epoch: list[int | None] = [None] * k
        # the members' best weights, stacked per parameter (K, ...) as the net holds them
        self.best_stacked = [p.detach().clone() for p in net.parameters()]
        self._wait = [0] * k
        self._es_best = [float("inf")] * k
        self.history: list[dict] = []  # one row per (epoch, member)
        self._train_sum = torch.zeros(k)
        self._train_rows = 0

    # ---- members --------------------------------------------------------------------------
    def best_weights(self, k: int) -> list[torch.Tensor]:
        """Member k's best weights, one tensor per parameter in ``net.parameters()`` order."""
        return [best[k] for best in self.best_stacked]

    @torch.no_grad()
    def _keep_best(self, members: list[int]) -> None:
        """Keep the net's current weights of ``members`` as their best (one op a parameter)."""
        if not members:
            return
        improved = torch.zeros(self.net.k, dtype=torch.bool)
        improved[members] = True
        for i, p in enumerate(self.net.parameters()):
            mask = improved.to(p.device).view(-1, *[1] * (p.dim() - 1))
            self.best_stacked[i] = torch.where(mask, p.detach(), self.best_stacked[i].to(p))

    @torch.no_grad()
    def use_best_weights(self) -> None:
        """Put every member's best weights into ``net`` (its last ones are gone after this)."""
        for p, best in zip(self.net.parameters(), self.best_stacked, strict=True):
            p.copy_(best.to(p))

    @torch.no_grad()
    def evaluate(self, split: StackedSplit, stage: str) -> dict[str, torch.Tensor]:
        """{stage/metric: (K,)} of the net's current weights on each member's own rows."""
        scorer = MemberScores(
            self.task,
            self.scores.num_classes,
            self.class_weights,
            (self.scores.mean, self.scores.std),
        )
        training = self.net.training
        self.net.eval()
        for x, y in split:
            scorer.update(self.net(x.to(self.device)), y.to(self.device))
        self.net.train(training)
        return {k: v.cpu() for k, v in scorer.compute(stage).items()}

    def _active(self) -> torch.Tensor:
        key = tuple(s == OK for s in self.status)
        if getattr(self, "_active_key", None) != key:  # statuses change rarely: build once
            self._active_key, self._active_mask = key, torch.tensor(key, device=self.device)
            self._inactive = ~self._active_mask
        return self._active_mask

    # ---- training -------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = build_stacked_optimizer(
            self.net.parameters(), self.optimizer_target, self.member_options
        )
        scheduler = build_stacked_scheduler(optimizer, self.scheduler_target, self.schedules or [])
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def training_step(self, batches: list[torch.Tensor], batch_idx: int) -> None:
        """One epoch: ``batches`` are its mini-batches, (K, B) row indices each."""
        opt = self.optimizers()
        optimizer = opt.optimizer if hasattr(opt, "optimizer") else opt
        for index in batches:
            self._step(opt, optimizer, index)

    def _step(self, opt, optimizer, index: torch.Tensor) -> None:
        active = self._active()
        out = self.net(gather_rows(self.x, index))  # (K, B, out): member k's rows of its split
        y = gather_rows(self.y, index)
        losses = member_losses(out, y, self.task, self.class_weights)
        if self.has_l1:  # without L1 the term is 0 + 0·Σ|w|: skipping it changes no bit
            losses = losses + self.l1 * self.net.l1_penalty()
        finite = torch.isfinite(losses)
        if not bool((finite | self._inactive).all()):  # a member diverged: it stops, others go on
            for k in torch.nonzero(active & ~finite).flatten().tolist():
                self.status[k] = DIVERGED
                self.stopped_epoch[k] = self.current_epoch
            active = self._active()
        if optimizer.param_groups[0]["active"] != list(self._active_key):
            optimizer.set_active(active)
        for p in self.net.parameters():  # opt.zero_grad(set_to_none=True), without its ~0.1 ms
            p.grad = None
        # Only active members' losses: a diverged one would put NaN into everybody's sum.
        self.manual_backward(torch.where(active, losses, 0.0).sum())
        if self.has_clip:  # per member, as MLPModule clips (population.clip)
            clip_members(self.net, self.clip, self.clip_algorithm)
        opt.step()
        self._train_sum = self._train_sum.to(losses) + losses.detach() * index.shape[1]
        self._train_rows += index.shape[1]
        self.train_scores.update(out, y)

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # after validation, as MLPModule steps its scheduler
            metrics = self._monitored if scheduler.NEEDS_METRIC else None
            scheduler.step(metrics, active=self._active().cpu())
        self._monitored = None
        self._train_sum.zero_()
        self._train_rows = 0
        self.train_scores.reset()

    def on_train_start(self) -> None:
        if all(s != OK for s in self.status):  # resumed after every member had stopped
            self.trainer.should_stop = True

    # ---- validation -----------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch  # (K, B, D), (K, B): each member's own val rows
        self.scores.update(self.net(x), y)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.scores.preds:
            self.scores.reset()
            return
        results = {k: v.cpu().tolist() for k, v in self.scores.compute("val").items()}
        self.scores.reset()
        train = {"train/loss": (self._train_sum / max(self._train_rows, 1)).cpu().tolist()}
        train |= {k: v.cpu().tolist() for k, v in self.train_scores.compute().items()}
        epoch, rows, improved = self.current_epoch, [], []
        monitored = (train | results).get(self.monitor)
        self._monitored = monitored if monitored is not None else None
        for k in range(self.net.k):
            if self.status[k] != OK:
                continue
            row = {"epoch": epoch, "member": k}
            row |= {name: values[k] for name, values in (train | results).items()}
            self.history.append(row)
            rows.append(row)
            loss = row["val/loss"]
            if not math.isfinite(loss):
                self.status[k], self.stopped_epoch[k] = DIVERGED, epoch
                continue
            if loss < self.best_loss[k]:  # ModelCheckpoint(mode=min): strictly better
                self.best_loss[k], self.best_epoch[k] = loss, epoch
                improved.append(k)
            self._early_stop(k, loss, epoch)
        self._keep_best(improved)
        if self.on_epoch is not None:
            for k in self.on_epoch(epoch, rows):
                if self.status[k] == OK:
                    self.status[k], self.stopped_epoch[k] = PRUNED, epoch
        if all(s != OK for s in self.status):
            self.trainer.should_stop = True

    def _early_stop(self, k: int, loss: float, epoch: int) -> None:
        """Lightning's EarlyStopping, per member: improvement = loss < best − min_delta."""
        if self.patience[k] is None:
            return
        if loss < self._es_best[k] - self.min_delta:
            self._es_best[k], self._wait[k] = loss, 0
            return
        self._wait[k] += 1
        if self._wait[k] >= self.patience[k]:
            self.status[k], self.stopped_epoch[k] = STOPPED, epoch

    # ---- checkpoint -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STATE_KEY] = member_state(self)  # what the weights and optimizer don't hold

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        load_member_state(self, checkpoint[STATE_KEY])
