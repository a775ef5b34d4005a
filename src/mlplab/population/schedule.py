"""Learning-rate schedulers for a population of K MLPs: torch's schedulers, one per member.

``build_stacked_scheduler(opt, "torch.optim.lr_scheduler.StepLR", [{"step_size": 10},
{"step_size": 5, "gamma": 0.5}])`` schedules the two members of a ``StackedOptimizer`` ``opt``
(one scheduler type, per-member numbers). Member k follows torch's ``step()`` op for op in Python
floats, with the recursive forms torch's ``get_lr`` uses, so its lr equals torch's bit for bit
(K scalars once an epoch: tensor ops would save nothing, and ``torch.cos`` may differ from
``math.cos`` in the last bit). Like the optimizer, a member that is not active (stopped early,
diverged) keeps its lr and its scheduler state unchanged and goes on where it paused::

    sched = build_stacked_scheduler(opt, "torch.optim.lr_scheduler.ReduceLROnPlateau", members)
    sched.step(val_loss)  # once per epoch, after the epoch's optimizer steps; val_loss: (K,)
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from mlplab.errors import check
from mlplab.population.optim import StackedOptimizer

REQUIRED = object()  # an option torch has no default for


def _integer(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: type(v) is int and v >= low), f"an integer >= {low}"


def _number(below: float = math.inf) -> tuple[Callable[[Any], bool], str]:
    """A real number in [0, below) (NaN and inf fail the comparison)."""
    real = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)  # noqa: E731
    allowed = "a finite number >= 0" if below == math.inf else f"a number in [0, {below})"
    return (lambda v: real(v) and 0 <= v < below), allowed


def _choice(*values: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and v in values), f"one of {list(values)}"


class StackedScheduler:
    """Base class: one dict of plain numbers per member (its options and its state). Subclasses
    give ``OPTIONS`` (name → (torch's default or ``REQUIRED``, check, what is allowed)), a
    member's initial state (``_initial_state``) and its step (``_update``), as torch writes it."""

    TARGET = ""
    OPTIONS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {}
    NEEDS_METRIC = False  # ReduceLROnPlateau steps on a metric, the others on the epoch

    def __init__(self, optimizer: StackedOptimizer, members: Sequence[Mapping]) -> None:
        """Args: optimizer: the population's optimizer, its current lrs are the base lrs;
        members: K dicts of this scheduler's options (missing: torch's default; ``monitor``,
        for the population, is skipped; a ``_target_`` must be this class's)."""
        k = optimizer.members
        check(len(members) == k, "members", list(members), f"{k} dicts, one per member")
        self.optimizer = optimizer
        rows = [self._checked(f"members[{i}]", m) for i, m in enumerate(members)]
        self.members = [
            row | self._initial_state(row, lr)
            for row, lr in zip(rows, optimizer.lr.tolist(), strict=True)
        ]

    def _checked(self, where: str, member: Mapping) -> dict:
        allowed = f"not an option of {self.TARGET}; allowed: {list(self.OPTIONS)}"
        for key, value in member.items():
            if key == "_target_":
                check(value == self.TARGET, f"{where}.{key}", value, f"{self.TARGET!r} as the rest")
            check(key in {*self.OPTIONS, "_target_", "monitor"}, f"{where}.{key}", value, allowed)
        row = {}
        for key, (default, ok, allowed) in self.OPTIONS.items():
            value = member.get(key, default)
            check(value is not REQUIRED, f"{where}.{key}", None, f"required, {allowed}")
            check(ok(value), f"{where}.{key}", value, allowed)
            row[key] = float(value) if isinstance(default, float) else value
        return row

    def _initial_state(self, row: dict, lr: float) -> dict:
        return {"last_epoch": 0}

    def _update(self, m: dict, lr: float, metric: float | None) -> float:
        """Member ``m``'s step (``m`` holds its options and state, updated in place): its new lr."""
        raise NotImplementedError

    def step(
        self,
        metrics: torch.Tensor | Sequence[float] | None = None,
        active: torch.Tensor | Sequence[bool] | None = None,
    ) -> None:
        """One epoch of every active member.

        Args:
            metrics: (K,) the monitored metric of this epoch (ReduceLROnPlateau only; others
                ignore it). A member whose value is NaN, or all members when None, have no value
                this epoch and don't step (torch would count NaN as a bad epoch).
            active: (K,) bools, the members that step; None: the optimizer's ``active``.
        """
        k = self.optimizer.members
        mask = self.optimizer.active if active is None else torch.as_tensor(active)
        mask = mask.bool().reshape(-1).tolist()
        check(len(mask) == k, "active", mask, f"{k} bools")
        values: list[float | None] = [None] * k
        if metrics is not None:
            values = torch.as_tensor(metrics, dtype=torch.float64).detach().reshape(-1).tolist()
            check(len(values) == k, "metrics", values, f"{k} numbers, one per member")
        lrs = self.optimizer.lr.tolist()
        for i, (m, on, value) in enumerate(zip(self.members, mask, values, strict=True)):
            absent = value is None or math.isnan(value)
            if on and not (self.NEEDS_METRIC and absent):
                lrs[i] = self._update(m, lrs[i], value)
        self.optimizer.set_lr(lrs)

    def state_dict(self) -> dict:
        """Every member's options and state: plain numbers and strings (loads with weights_only).
        The learning rates themselves live in the optimizer's ``state_dict``."""
        return {"target": self.TARGET, "members": copy.deepcopy(self.members)}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``: the members go on exactly where they were (as torch, the
        saved options replace the ones this scheduler was built with)."""
        saved, rows = state.get("target"), state.get("members", [])
        check(saved == self.TARGET, "saved scheduler", saved, f"{self.TARGET!r} as configured")
        k = len(self.members)
        check(len(rows) == k, "saved scheduler members", len(rows), f"{k} as configured")
        self.members = copy.deepcopy(list(rows))


class StackedStepLR(StackedScheduler):
    """``StepLR`` per member: η ← γη at every epoch that is a multiple of step_size (torch's
    recursive form; its closed form η₀γ^⌊t/step_size⌋ differs in the last bits)."""

    TARGET = "torch.optim.lr_scheduler.StepLR"
    OPTIONS = {"step_size": (REQUIRED, *_integer(1)), "gamma": (0.1, *_number())}

    def _update(self, m, lr, metric):
        m["last_epoch"] += 1
        return lr * m["gamma"] if m["last_epoch"] % m["step_size"] == 0 else lr


class StackedCosineAnnealingLR(StackedScheduler):
    """``CosineAnnealingLR`` per member, torch's recursive form at epoch t:
    η_t = η_min + (η_{t−1} − η_min)·(1 + cos(πt/T)) / (1 + cos(π(t−1)/T)), and where the
    denominator is 0 (t − 1 − T a multiple of 2T): η_t = η_{t−1} + (η₀ − η_min)(1 − cos(π/T))/2.
    Past T the lr rises again, as in torch."""

    TARGET = "torch.optim.lr_scheduler.CosineAnnealingLR"
    OPTIONS = {"T_max": (REQUIRED, *_integer(1)), "eta_min": (0.0, *_number())}

    def _initial_state(self, row, lr):
        return {"last_epoch": 0, "base_lr": lr}

    def _update(self, m, lr, metric):
        m["last_epoch"] = t = m["last_epoch"] + 1
        t_max, eta_min = m["T_max"], m["eta_min"]
        if (t - 1 - t_max) % (2 * t_max) == 0:
            return lr + (m["base_lr"] - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        ratio = (1 + math.cos(math.pi * t / t_max)) / (1 + math.cos(math.pi * (t - 1) / t_max))
        return ratio * (lr - eta_min) + eta_min


class StackedReduceLROnPlateau(StackedScheduler):
    """``ReduceLROnPlateau`` per member. Better: m < best·(1 − θ) (rel) or m < best − θ (abs)
    in mode min, m > best·(1 + θ) or m > best + θ in mode max. After more than ``patience`` epochs
    that are not better (none counted during ``cooldown`` epochs after a cut): η ← max(fη, η_min)
    unless that changes η by eps or less, then the cooldown starts."""

    TARGET = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    OPTIONS = {
        "mode": ("min", *_choice("min", "max")),
        "factor": (0.1, *_number(below=1)),
        "patience": (10, *_integer(0)),
        "threshold": (1e-4, *_number()),
        "threshold_mode": ("rel", *_choice("rel", "abs")),
        "cooldown": (0, *_integer(0)),
        "min_lr": (0.0, *_number()),
        "eps": (1e-8, *_number()),
    }
    NEEDS_METRIC = True

    def _initial_state(self, row, lr):
        best = math.inf if row["mode"] == "min" else -math.inf
        return {"best": best, "num_bad_epochs": 0, "cooldown_counter": 0}

    @staticmethod
    def _is_better(m: dict, a: float) -> bool:
        best, threshold, rel = m["best"], m["threshold"], m["threshold_mode"] == "rel"
        if m["mode"] == "min":
            return a < best * (1.0 - threshold) if rel else a < best - threshold
        return a > best * (threshold + 1.0) if rel else a > best + threshold

    def _update(self, m, lr, metric):
        if self._is_better(m, metric):
            m["best"], m["num_bad_epochs"] = metric, 0
        else:
            m["num_bad_epochs"] += 1
        if m["cooldown_counter"] > 0:
            m["cooldown_counter"] -= 1
            m["num_bad_epochs"] = 0  # bad epochs in the cooldown don't count
        if m["num_bad_epochs"] > m["patience"]:
            new_lr = max(lr * m["factor"], m["min_lr"])
            lr = new_lr if lr - new_lr > m["eps"] else lr
            m["cooldown_counter"], m["num_bad_epochs"] = m["cooldown"], 0
        return lr


SCHEDULERS: dict[str, type[StackedScheduler]] = {
    cls.TARGET: cls for cls in (StackedStepLR, StackedCosineAnnealingLR, StackedReduceLROnPlateau)
}


def build_stacked_scheduler(
    optimizer: StackedOptimizer, target: str | None, members: Sequence[Mapping]
) -> StackedScheduler | None:
    """The stacked version of the scheduler ``target`` over ``optimizer``, member k configured
    by ``members[k]``; None for no scheduler (``conf/scheduler/none.yaml``).

    Args:
        optimizer: the population's optimizer, built first; its current lrs are the base lrs.
        target: torch's class path, a key of ``SCHEDULERS``, or None / "" for none.
        members: one kwargs dict per member as in ``conf/scheduler/*.yaml`` (``monitor``, read
            by the population, is skipped; a ``_target_`` must equal ``target``).

    Raises:
        ConfigError: unsupported ``target``, unknown or missing key, or a value out of range.
    """
    if not target:
        return None
    allowed = f"one of {list(SCHEDULERS)} or null"
    check(target in SCHEDULERS, "scheduler._target_", target, allowed)
    return SCHEDULERS[target](optimizer, members)
