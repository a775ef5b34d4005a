"""Grouped mini-batches: several optimizer steps in one Lightning ``training_step`` (opt-in).

Lightning pays a fixed cost per ``training_step`` (hooks, logging, loop bookkeeping) larger
than a small MLP's forward + backward. A LightningModule that inherits ``GroupedSteps`` (with
manual optimization) is fed lists of ``batches_per_step(batch_size, world_size)`` mini-batches
by the DataModule — plain ``(x, y)`` batches whenever Lightning counts training steps
(``counts_training_steps``), so those settings keep their meaning. Per mini-batch it runs the
module's ``step_loss`` → zero_grad → backward → clipping → ``optimizer.step()`` (one
``W ← W − η ∂J/∂W`` per mini-batch, as without groups), syncs with the host once per group to
stop on a non-finite loss, and hands the group to the module's ``group_done``.

``scripts/bench_throughput.py`` measures the gain (docs/throughput.md); tests check grouped
and ungrouped training give the same weights bit for bit.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden

from mlplab.errors import DivergedError

# With group_batches=auto one training_step covers about this many rows.
AUTO_GROUP_ROWS = 32768


class GroupedSteps:
    """Mix into a LightningModule (before ``L.LightningModule``) with
    ``automatic_optimization = False``. The module provides ``step_loss(x, y) -> (loss,
    output)`` of one mini-batch, ``group_done(outs, ys, losses)`` called after the group's steps
    with detached outputs, targets and (G,) losses, and these hyperparameters:
    ``group_batches`` (int or "auto"), ``gradient_clip_val``, ``gradient_clip_algorithm``, and
    ``optimizer`` (its ``lr`` is named in messages)."""

    _plain_backward = False  # decided at fit start: see _backward_is_plain
    _last_loss: torch.Tensor | None = None  # of the previous group, for messages

    # ---- what the DataModule asks ---------------------------------------------------------
    def batches_per_step(self, batch_size: int, world_size: int) -> int:
        """Mini-batches per training_step: ``group_batches``, or with "auto" about
        ``AUTO_GROUP_ROWS`` rows — 1 under DDP, where each backward must run inside its own
        DDP forward for the gradients to be synchronized."""
        group = self.hparams.get("group_batches", "auto")
        if group != "auto":
            return int(group)
        return 1 if world_size > 1 else max(1, AUTO_GROUP_ROWS // batch_size)

    # ---- training -------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        # A group of mini-batches (a list), or one plain (x, y) batch (a tuple).
        group = batch if isinstance(batch, list) else [batch]
        opt = self.optimizers()
        clip = self.hparams.get("gradient_clip_val") or 0.0
        clip_algorithm = self.hparams.get("gradient_clip_algorithm") or "norm"
        outs, ys, losses, step0 = [], [], [], self.global_step
        for x, y in group:
            loss, out = self.step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            if self._plain_backward:
                loss.backward()
            else:
                self.manual_backward(loss)
            if clip > 0:
                self.clip_gradients(opt, clip, clip_algorithm)
            opt.step()
            losses.append(loss.detach())
            outs.append(out.detach())
            ys.append(y)
        losses = torch.stack(losses)  # (G,) one loss per mini-batch of the group
        # One host sync per group: a non-finite loss stops the run in the epoch it happened,
        # before any checkpoint of the broken weights is written.
        if not bool(torch.isfinite(losses).all()):
            self._diverged(losses, step0)
        self._last_loss = losses[-1]
        self.group_done(outs, ys, losses)

    def _diverged(self, losses: torch.Tensor, step0: int) -> None:
        """Raise a DivergedError naming where the loss first became non-finite."""
        bad = int(torch.nonzero(~torch.isfinite(losses))[0])
        previous = losses[bad - 1] if bad > 0 else self._last_loss
        last = f"{float(previous):.4g}" if previous is not None else "none yet"
        lr = (self.hparams.get("optimizer") or {}).get("lr")
        raise DivergedError(
            f"training diverged: train/loss became {float(losses[bad])} at epoch "
            f"{self.current_epoch}, step {step0 + bad} (last finite loss: {last}); try a smaller "
            f"learning rate than optimizer.lr={lr}, or gradient clipping "
            "(trainer.gradient_clip_val=1.0)"
        )

    def on_train_start(self) -> None:
        self._plain_backward = self._backward_is_plain()

    def _backward_is_plain(self) -> bool:
        """True when ``manual_backward(loss)`` would do exactly ``loss.backward()``: full
        precision (no AMP scaling), one device (no DDP hooks), and no callback or module hook
        listening around backward. Then Lightning's hook dispatches per mini-batch are skipped."""
        trainer = self.trainer
        hooks = ("on_before_backward", "on_after_backward")
        listening = [
            c for c in trainer.callbacks if any(is_overridden(h, c, L.Callback) for h in hooks)
        ]
        return (
            type(trainer.strategy.precision_plugin) in (Precision, QuietStep)
            and type(trainer.strategy) is SingleDeviceStrategy
            and not listening
            and not any(is_overridden(h, self, L.LightningModule) for h in (*hooks, "backward"))
        )


class QuietStep(Precision):
    """Full precision whose optimizer step skips Lightning's ``on_before_optimizer_step``
    dispatch when nothing listens: a module with manual optimization (for which Lightning
    clips nothing there) and no callback or module overriding the hook. Otherwise, and for a
    module with automatic optimization, Lightning's own step. The step still goes through the
    ``LightningOptimizer``, which counts it (``trainer.global_step``)."""

    _listening: tuple = ((), True)  # (the classes it was asked for, answer)

    def optimizer_step(self, optimizer, model, closure, **kwargs):
        if self._hooks_listen(model):
            return super().optimizer_step(optimizer, model, closure, **kwargs)
        return optimizer.step(closure=closure, **kwargs)

    def _hooks_listen(self, model) -> bool:
        if not isinstance(model, L.LightningModule):
            return True
        trainer = model.trainer
        # whether a hook is overridden is a matter of classes
        key = (type(model), model.automatic_optimization, *map(type, trainer.callbacks))
        if self._listening[0] != key:
            hook = "on_before_optimizer_step"
            listen = (
                model.automatic_optimization
                or is_overridden(hook, model, L.LightningModule)
                or any(is_overridden(hook, c, L.Callback) for c in trainer.callbacks)
            )
            self._listening = (key, listen)
        return self._listening[1]


def counts_training_steps(trainer: L.Trainer) -> bool:
    """True when a Trainer setting counts training_step calls, which groups would change:
    then the DataModule hands over plain mini-batches so they keep Lightning's meaning."""
    return (
        trainer.limit_train_batches != 1.0
        or trainer.max_steps != -1
        or trainer.val_check_interval != 1.0
        or bool(trainer.overfit_batches)
    )
