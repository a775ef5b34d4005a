"""Members' learning-rate schedules: torch's own scheduler per member, each member's learning
rate its stand-alone run's, frozen members paused, a checkpoint's state restored exactly.

    .venv/bin/python -m pytest tests/population/test_schedule.py -q
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from mlplab.population.optim import StackedSGD
from mlplab.population.schedule import MemberSchedules

STEP = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 2, "gamma": 0.5}
COSINE = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": 3, "eta_min": 0.01}
PLATEAU = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "patience": 0, "factor": 0.5}
ONE_CYCLE = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.3, "total_steps": 9}
MEMBERS = [STEP, COSINE, PLATEAU, {}, ONE_CYCLE]  # any scheduler class, or none, per member
LRS = [0.1, 0.2, 0.3, 0.4, 0.05]
METRICS = [1.0, 0.9, 0.95, 0.97, 0.5, 0.6, 0.7, 0.8]  # the plateau member's val/loss


def _alone(member: dict, lr: float, epochs: int, metrics=METRICS) -> list[float]:
    """Member alone: its torch scheduler on a real optimizer, as MLPModule steps it."""
    p = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    args = {k: v for k, v in member.items() if k not in ("_target_", "monitor")}
    scheduler = None
    if member:
        cls = getattr(torch.optim.lr_scheduler, member["_target_"].rsplit(".", 1)[1])
        scheduler = cls(opt, **args)
    lrs = []
    for epoch in range(epochs):
        opt.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(metrics[epoch])
        elif scheduler is not None:
            scheduler.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def _population(members=MEMBERS, lrs=LRS) -> tuple[StackedSGD, MemberSchedules]:
    opt = StackedSGD([torch.zeros(len(members), 2, requires_grad=True)], lr=lrs)
    return opt, MemberSchedules(opt, members)


def test_each_member_follows_its_own_torch_scheduler_exactly():
    opt, schedules = _population()
    got = []
    for epoch in range(8):
        schedules.step([METRICS[epoch]] * len(MEMBERS))
        got.append(opt.lr.tolist())
    for k, (member, lr) in enumerate(zip(MEMBERS, LRS, strict=True)):
        assert [row[k] for row in got] == _alone(member, lr, 8), k  # bit for bit: torch's
    assert got[-1][3] == LRS[3]  # no scheduler: a constant rate
    assert schedules.needs_metric == [False, False, True, False, False]


def test_a_frozen_member_pauses_and_goes_on_where_it_was():
    opt, schedules = _population([STEP, STEP], [0.1, 0.1])
    for epoch in range(6):  # member 1 frozen in epochs 2 and 3
        schedules.step(active=[True, epoch not in (2, 3)])
    assert opt.lr.tolist() == [_alone(STEP, 0.1, 6)[-1], _alone(STEP, 0.1, 4)[-1]]


def test_a_missing_metric_does_not_step_a_plateau():
    opt, schedules = _population([PLATEAU, STEP], [0.1, 0.1])
    schedules.step([math.nan, math.nan])  # no validation this epoch
    schedules.step([1.0, 1.0])
    schedules.step(None)
    assert opt.lr.tolist()[0] == _alone(PLATEAU, 0.1, 1, metrics=[1.0])[-1]
    assert opt.lr.tolist()[1] == _alone(STEP, 0.1, 3)[-1]  # the epoch steps it anyway


def test_state_round_trip_is_exact():
    opt, schedules = _population()
    for epoch in range(4):
        schedules.step([METRICS[epoch]] * len(MEMBERS))
    buffer = io.BytesIO()
    torch.save(schedules.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    again, fresh = _population()
    fresh.load_state_dict(state)
    for epoch in range(4, 8):
        schedules.step([METRICS[epoch]] * len(MEMBERS))
        fresh.step([METRICS[epoch]] * len(MEMBERS))
    assert again.lr.tolist() == opt.lr.tolist()


def test_members_must_match_the_optimizer():
    opt = StackedSGD([torch.zeros(2, 2)], lr=[0.1, 0.1])
    with pytest.raises(Exception, match="2 dicts, one per member"):
        MemberSchedules(opt, [STEP])
