"""Optimizer and scheduler of ``MLPModule``, built from plain-dict configs and checked early.

``optimizer`` and ``scheduler`` are the hparams dicts (``{"_target_": "torch.optim.Adam",
"lr": 1e-3, ...}``); a bad class name or argument is a ConfigError naming the config key,
raised when the module is built (``check_optimization``) rather than at the first step.

A torch optimizer that takes ``foreach`` is built with ``foreach=True`` unless the config sets
``foreach`` or ``fused``: bit for bit the weights of torch's CPU default (a loop over the
parameters) and faster for small MLPs (``scripts/bench_throughput.py``). ``fused`` rounds
differently, so a population, whose members reproduce the loop's arithmetic, refuses it.
"""

from __future__ import annotations

import inspect

import torch
from hydra.utils import get_class

from mlplab.errors import ConfigError, check
from mlplab.models.arguments import is_real

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def build_optimization(params, optimizer: dict | None, scheduler: dict | None):
    """``(optimizer, scheduler or None)`` over ``params`` from the plain-dict configs.

    A scheduler's ``monitor`` key is for the module (which metric ReduceLROnPlateau watches),
    not an argument of the scheduler.
    """
    opt_cfg = dict(optimizer or DEFAULT_OPTIMIZER)
    target = opt_cfg.pop("_target_", None)
    lr = opt_cfg.get("lr")
    check(is_real(lr) and lr > 0, "optimizer.lr", lr, "must be a finite number > 0")
    built = _build(target, "optimizer", params, **opt_cfg)
    sched_cfg = dict(scheduler or {})
    if not sched_cfg.get("_target_"):
        return built, None
    sched_cfg.pop("monitor", None)
    return built, _build(sched_cfg.pop("_target_"), "scheduler", built, **sched_cfg)


def check_optimization(optimizer: dict | None, scheduler: dict | None) -> None:
    """Build optimizer and scheduler on a stand-in parameter and step them a few times: a
    bad argument (``scheduler.step_size=0``) fails here, naming the config key."""
    probe = torch.nn.Parameter(torch.ones(2))
    opt, sched = build_optimization([probe], optimizer, scheduler)
    for _ in range(3):
        probe.grad = torch.ones_like(probe)
        _try_step("optimizer", optimizer, opt.step)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            _try_step("scheduler", scheduler, lambda: sched.step(1.0))
        elif sched is not None:
            _try_step("scheduler", scheduler, sched.step)


def _try_step(key: str, node: dict | None, step) -> None:
    try:
        step()
    except Exception as err:  # noqa: BLE001 — any failure here is a config mistake
        raise ConfigError(
            f"{key}={_describe(node)} is invalid: stepping it fails with "
            f"{type(err).__name__}: {err}"
        ) from None


def _describe(node: dict | None) -> str:
    """``StepLR(step_size=0, gamma=0.5)`` from ``{_target_: ..., step_size: 0, ...}``."""
    node = dict(node or {})
    name = str(node.pop("_target_", "")).rsplit(".", 1)[-1]
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in node.items())})"


def _build(target: str | None, key: str, first, **kwargs):
    """``target(first, **kwargs)`` with bad targets/arguments reported as the config key."""
    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001 — a misspelt or missing class
        cause = err.__cause__ or err
        raise ConfigError(
            f"{key}._target_={target!r} is invalid: it can't be imported "
            f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
        ) from None
    given = dict(kwargs)
    if key == "optimizer" and not {"foreach", "fused"} & set(kwargs) and _takes(cls, "foreach"):
        kwargs["foreach"] = True
    try:
        return cls(first, **kwargs)
    except Exception as err:  # noqa: BLE001 — any failure here is a config mistake
        node = {"_target_": target, **given}
        raise ConfigError(f"{key}={_describe(node)} is invalid: {err}") from None


def _takes(cls, name: str) -> bool:
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a class without an inspectable signature
        return False
