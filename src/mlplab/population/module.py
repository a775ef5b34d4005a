"""``PopulationModule``: a LightningModule that trains the K members of a ``StackedMLP`` at once.

One training step is one epoch of every member: for each mini-batch, member k gathers the rows
its stand-alone run would see, the stacked forward computes all members, the per-member losses
(+ L1) are summed — so member k's gradient is its own loss's — and one vectorized optimizer step
updates every active member. Validation keeps each member's best weights (``ModelCheckpoint``'s
rule) and stops members one by one (``EarlyStopping``'s): a stopped, pruned or diverged member's
weights and optimizer state stop changing. Its checkpoint keeps the per-member state that
``resume=auto`` needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import lightning as L
import torch

from mlplab.models.module import check_monitor
from mlplab.population.metrics import MemberScores, TrainScores
from mlplab.population.optim import build_stacked_optimizer
from mlplab.population.schedule import MemberSchedules
from mlplab.population.stacked import StackedMLP, gather_rows, member_batches, member_losses

OK, STOPPED, DIVERGED, PRUNED = "ok", "stopped", "diverged", "pruned"

# What the weights and the optimizer don't hold: saved in the population's checkpoint.
MEMBER_STATE = ("status", "best_score", "best_epoch", "stopped_epoch", "wait", "stop_best")
MEMBER_STATE += ("triggered",)  # early stopping said stop, min_epochs not reached yet


class PopulationBatches:
    """One item per epoch: the list of (K, B) row indices of the members' own shuffles, the
    first ``limit`` mini-batches of it (``trainer.limit_train_batches``, as Lightning counts
    them for one member). Lightning sets the epoch (as on a sampler); a resumed fit makes the
    iterator before it does, so the shuffle is drawn when iterated."""

    def __init__(self, n_rows: int, batch_size: int, seeds: list[int], limit=1.0) -> None:
        self.n_rows, self.batch_size, self.seeds = n_rows, batch_size, list(seeds)
        batches = -(-n_rows // batch_size)
        self.limit = int(limit) if isinstance(limit, int) else int(batches * float(limit))
        self.limit = min(self.limit, batches)
        self.epoch = 0
        self.sampler = self  # Lightning calls dataloader.sampler.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield member_batches(self.n_rows, self.batch_size, self.seeds, self.epoch)[: self.limit]


class StackedSplit:
    """Eval batches of every member's own split at once: ((K, B, D), (K, B)) views (a class,
    not a list: Lightning takes a list for several dataloaders)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int) -> None:
        self.batches = [
            (x[:, i : i + size], y[:, i : i + size]) for i in range(0, x.shape[1], size)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


@dataclass
class Watch:
    """A monitored metric: ``ModelCheckpoint``'s (the best weights) or ``EarlyStopping``'s."""

    monitor: str = "val/loss"
    mode: str = "min"
    key: str = "monitor"  # the config key that set it, for messages
    strict: bool = True  # a monitor the module doesn't log is an error (Lightning's strict)

    def better(self, value: float, than: float, delta: float = 0.0) -> bool:
        """Lightning's rule: strictly better by more than ``delta``."""
        return value < than - delta if self.mode == "min" else value > than + delta

    @property
    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf


@dataclass
class Stopping(Watch):
    """Early stopping per member: its own patience (None: never), shared rule."""

    patience: list[int | None] | None = None
    min_delta: float = 0.0
    min_epochs: int = 0


class PopulationModule(L.LightningModule):
    """Train ``net``'s K members, each on its own training split.

    Args:
        x, y: each member's training features (K, N, D) and targets (K, N) (an ``expand`` of
            one split when members share it: no copy).
        optimizer, members: the shared ``_target_`` and one kwargs dict per member.
        l1: per-member L1 strength. class_weights: shared (as ``MLPModule``'s), or None.
        best: what picks a member's best weights (None: test the last).
        target_scale: each member's (means, stds) of a regression target (metrics in its units).
        on_epoch: called after each epoch with its number and the rows of the members that
            trained in it; returns the members to stop now (status ``pruned``).
        schedules, monitor: each member's scheduler config and the metric ReduceLROnPlateau
            watches (shared).
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
        best: Watch | None = None,
        stopping: Stopping | None = None,
        target_scale: tuple[list[float], list[float]] | None = None,
        on_epoch: Callable[[int, list[dict]], Iterable[int]] | None = None,
        schedules: list[dict] | None = None,
        monitor: str = "val/loss",
        clip: tuple[list[float], str] | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        k = net.k
        self.net, self.task = net, task
        self.register_buffer("x", x, persistent=False)
        self.register_buffer("y", y, persistent=False)
        self.register_buffer("l1", torch.tensor(l1, dtype=torch.float32), persistent=False)
        self.has_l1 = any(v != 0 for v in l1)
        values, self.clip_algorithm = clip if clip else ([0.0] * k, "norm")  # checked: check_module
        self.register_buffer("clip", torch.tensor(values, dtype=torch.float32), persistent=False)
        self.has_clip = any(v > 0 for v in values)
        cw = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", cw, persistent=False)
        self.optimizer_target, self.member_options = optimizer, members
        build_stacked_optimizer([net.flat], optimizer, members)  # a bad option fails before fit
        self.scale = target_scale or ([0.0] * k, [1.0] * k)
        self.scores = self._scorer()
        self.train_scores = TrainScores(self.scores)
        self.on_epoch = on_epoch
        self.schedules, self.monitor = schedules, monitor
        self.best_watch, self.stopping = best, stopping
        for watch in (best, stopping):  # a misspelled one would never improve or stop
            if watch is not None and watch.strict:
                check_monitor(watch.key, watch.monitor, task, net.out_features)
        self.status = [OK] * k
        self.best_score = [best.worst if best else math.nan] * k
        self.best_epoch: list[int | None] = [None] * k
        self.stopped_epoch: list[int | None] = [None] * k
        self.wait = [0] * k
        self.stop_best = [stopping.worst if stopping else math.nan] * k
        self.triggered = [False] * k
        self.best_flat = net.flat.detach().clone()  # (K, N): each member's best weights
        self.history: list[dict] = []  # one row per (epoch, member)
        self.last_val: dict[int, dict] = {}  # member → its last validation's metrics
        self.test_results: dict[str, list[float]] = {}
        self._val: dict[str, list[float]] | None = None  # this epoch's validation
        self._active_key: tuple | None = None

    def _scorer(self) -> MemberScores:
        return MemberScores(self.task, self.net.out_features, self.class_weights, self.scale)

    # ---- members --------------------------------------------------------------------------
    def _active(self) -> torch.Tensor:
        key = tuple(s == OK for s in self.status)
        if self._active_key != key:  # statuses change rarely: build once
            self._active_key, self._active_mask = key, torch.tensor(key, device=self.device)
            self._inactive = ~self._active_mask
        return self._active_mask

    @torch.no_grad()
    def use_best_weights(self) -> None:
        """Put every member's best weights into ``net`` (its last ones are gone after this)."""
        self.net.flat.copy_(self.best_flat.to(self.net.flat))

    # ---- training -------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = build_stacked_optimizer(
            [self.net.flat], self.optimizer_target, self.member_options
        )
        if not any((s or {}).get("_target_") for s in self.schedules or []):
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": MemberSchedules(optimizer, self.schedules)}

    def training_step(self, batches: list[torch.Tensor], batch_idx: int) -> None:
        """One epoch: ``batches`` are its mini-batches, (K, B) row indices each."""
        opt = self.optimizers()
        optimizer = opt.optimizer if hasattr(opt, "optimizer") else opt
        for index in batches:
            self._step(opt, optimizer, index.to(self.device))

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
                self.status[k], self.stopped_epoch[k] = DIVERGED, self.current_epoch
            active = self._active()
        if optimizer.param_groups[0]["active"] != list(self._active_key):
            optimizer.set_active(active)
        self.net.flat.grad = None
        # Only active members' losses: a diverged one would put NaN into everybody's sum.
        self.manual_backward(torch.where(active, losses, 0.0).sum())
        if self.has_clip:
            self._clip_gradients()
        opt.step()
        self.train_scores.update(out, y, losses)

    @torch.no_grad()
    def _clip_gradients(self) -> None:
        """Clip each member's gradient as Lightning clips one model's (``MLPModule``): ``norm``:
        the total of its parameters' norms ‖(‖g₁‖₂, ‖g₂‖₂, …)‖₂, then × min(1, c/(total +
        1e-6)); ``value``: clamped to [−c, c]. c = 0 leaves a member as it is."""
        grad, c = self.net.flat.grad, self.clip  # (K, N), (K,)
        if self.clip_algorithm == "value":
            bound = torch.where(c > 0, c, torch.inf)[:, None]
            grad.clamp_(min=-bound, max=bound)
            return
        blocks = grad.split(self.net.sizes, dim=1)
        total = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(b, dim=1) for b in blocks], dim=1), dim=1
        )
        coef = torch.where(c > 0, torch.clamp(c / (total + 1e-6), max=1.0), 1.0)
        grad.mul_(coef[:, None])

    def on_train_start(self) -> None:
        if all(s != OK for s in self.status):  # resumed after every member had stopped
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        """The epoch's rows, best weights, early stopping and pruning; then the scheduler."""
        epoch, val = self.current_epoch, self._val
        train = {k: v.cpu().tolist() for k, v in self.train_scores.compute().items()}
        rows, improved = [], []
        for k in range(self.net.k):
            if self.status[k] != OK:  # stopped before, or diverged in this epoch's steps
                continue
            row = {"epoch": epoch, "member": k}
            row |= {name: values[k] for name, values in (train | (val or {})).items()}
            self.history.append(row)
            rows.append(row)
            if val is not None:
                self.last_val[k] = {n: v for n, v in row.items() if n.startswith("val/")}
                if not math.isfinite(row["val/loss"]):
                    self.status[k], self.stopped_epoch[k] = DIVERGED, epoch
                    continue
                value = row.get(self.best_watch.monitor) if self.best_watch else None
                if value is not None and self.best_watch.better(value, self.best_score[k]):
                    self.best_score[k], self.best_epoch[k] = value, epoch
                    improved.append(k)
                self._early_stop(k, row, epoch)
        if improved:
            with torch.no_grad():
                self.best_flat[improved] = self.net.flat[improved].to(self.best_flat)
        if self.on_epoch is not None:
            for k in self.on_epoch(epoch, rows):
                if self.status[k] == OK:
                    self.status[k], self.stopped_epoch[k] = PRUNED, epoch
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # after validation, as MLPModule steps its scheduler
            scheduler.step((train | (val or {})).get(self.monitor), active=self._active().cpu())
        if all(s != OK for s in self.status):
            self.trainer.should_stop = True
        self._val = None
        self.train_scores.reset()

    def _early_stop(self, k: int, row: dict, epoch: int) -> None:
        """Lightning's EarlyStopping, per member; it stops once the trainer's min_epochs are
        done (as Lightning's trainer waits for them)."""
        rule = self.stopping
        if rule is None or rule.patience[k] is None or rule.monitor not in row:
            return
        value = row[rule.monitor]
        if rule.better(value, self.stop_best[k], rule.min_delta):
            self.stop_best[k], self.wait[k] = value, 0
        else:
            self.wait[k] += 1
            self.triggered[k] = self.triggered[k] or self.wait[k] >= rule.patience[k]
        if self.triggered[k] and epoch + 1 >= rule.min_epochs:
            self.status[k], self.stopped_epoch[k] = STOPPED, epoch

    # ---- validation and test ------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch  # (K, B, D), (K, B): each member's own rows
        self.scores.update(self.net(x), y)

    test_step = validation_step

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking and self.scores.preds:
            self._val = {k: v.cpu().tolist() for k, v in self.scores.compute("val").items()}
        self.scores.reset()

    def on_test_epoch_start(self) -> None:
        self.scores = self._scorer()

    def on_test_epoch_end(self) -> None:
        self.test_results = {k: v.cpu().tolist() for k, v in self.scores.compute("test").items()}
        self.scores.reset()

    # ---- checkpoint -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = {name: list(getattr(self, name)) for name in MEMBER_STATE}
        state["best_flat"] = self.best_flat
        state["last_val"] = {str(k): v for k, v in self.last_val.items()}
        state["history"] = _columns(self.history)
        state["dropout_rng"] = self.net.dropout_states()
        checkpoint["population"] = state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["population"]
        for name in MEMBER_STATE:
            setattr(self, name, list(state[name]))
        self.best_flat = state["best_flat"]
        self.last_val = {int(k): v for k, v in state["last_val"].items()}
        self.history = _rows(state["history"])
        self.net.set_dropout_states(state["dropout_rng"])  # masks go on as never stopped


def _columns(rows: list[dict]) -> dict[str, torch.Tensor]:
    """History rows as one (N,) tensor per key (int64 for epoch and member, float64 for
    metrics): thousands of small dicts pickle slowly."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    kinds = {k: torch.int64 if k in ("epoch", "member") else torch.float64 for k in keys}
    return {k: torch.tensor([row.get(k, math.nan) for row in rows], dtype=kinds[k]) for k in keys}


def _rows(columns: dict[str, torch.Tensor]) -> list[dict]:
    values = {k: v.tolist() for k, v in columns.items()}
    n = len(next(iter(values.values()), []))
    return [{k: column[i] for k, column in values.items()} for i in range(n)]
