"""Learning-rate schedules of a population: torch's own scheduler for each member.

Member k's scheduler is the one its stand-alone run builds (any class, or none), driving a
one-number optimizer of its own whose learning rate the stacked optimizer takes after each
step: member k's learning rates are torch's, and members may differ in their scheduler. A
member that is not active doesn't step: its schedule goes on from there if it resumes::

    schedules = MemberSchedules(optimizer, [{"_target_": "torch.optim.lr_scheduler.StepLR",
                                             "step_size": 10}, {}])  # member 1: constant lr
    schedules.step(val_loss, active)  # once per epoch, after its optimizer steps; (K,) each
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from hydra.utils import get_class

from mlplab.errors import check
from mlplab.population.optim import StackedOptimizer

MODULE_KEYS = ("_target_", "monitor")  # read by the population, not arguments of the class


class MemberSchedules:
    """One torch scheduler per member (None: a constant learning rate), stepped per member.

    ``members``: K scheduler configs as ``conf/scheduler/*.yaml`` (``{}``: none), starting
    from ``optimizer``'s learning rates; ``check_optimization`` checked their values.
    """

    def __init__(self, optimizer: StackedOptimizer, members: Sequence[Mapping]) -> None:
        k = optimizer.members
        check(len(members) == k, "members", list(members), f"{k} dicts, one per member")
        self.optimizer = optimizer
        self.shadows, self.schedulers = [], []
        for lr, member in zip(optimizer.lr.tolist(), members, strict=True):
            shadow = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
            target = (member or {}).get("_target_")
            args = {key: v for key, v in (member or {}).items() if key not in MODULE_KEYS}
            self.shadows.append(shadow)
            self.schedulers.append(get_class(target)(shadow, **args) if target else None)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
        self.needs_metric = [isinstance(s, plateau) for s in self.schedulers]  # not the epoch
        self._take_lrs()

    def step(
        self,
        metrics: Sequence[float] | None = None,
        active: torch.Tensor | Sequence[bool] | None = None,
    ) -> None:
        """One epoch of every active member: a metric-driven one steps on its value (NaN or
        None: no value this epoch, no step — torch would count it as a bad epoch)."""
        mask = self.optimizer.active if active is None else torch.as_tensor(active)
        mask = mask.bool().reshape(-1).tolist()
        for k, (scheduler, shadow) in enumerate(zip(self.schedulers, self.shadows, strict=True)):
            if scheduler is None or not mask[k]:
                continue
            shadow.step()  # no gradient: changes nothing; torch wants it before the scheduler's
            if self.needs_metric[k]:
                value = None if metrics is None else float(metrics[k])
                if value is not None and not math.isnan(value):
                    scheduler.step(value)
            else:
                scheduler.step()
        self._take_lrs()

    def _take_lrs(self) -> None:
        self.optimizer.set_lr([shadow.param_groups[0]["lr"] for shadow in self.shadows])

    def state_dict(self) -> dict:
        """Every member's scheduler state (torch's) and learning rate: plain numbers."""
        return {
            "schedulers": [s.state_dict() if s is not None else None for s in self.schedulers],
            "lrs": [shadow.param_groups[0]["lr"] for shadow in self.shadows],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``: the members go on exactly where they were."""
        saved = state.get("schedulers", [])
        check(len(saved) == len(self.schedulers), "saved schedules", len(saved), "one per member")
        for scheduler, shadow, own, lr in zip(
            self.schedulers, self.shadows, saved, state["lrs"], strict=True
        ):
            if scheduler is not None:
                scheduler.load_state_dict(own)
            shadow.param_groups[0]["lr"] = lr
        self._take_lrs()
