"""Build a population optimizer from per-member configs like ``conf/optimizer/*.yaml``.

``build_stacked_optimizer(params, "torch.optim.SGD", [{"lr": 0.1}, {"lr": 0.05, "momentum": 0.9}])``
gives the ``StackedSGD`` (``mlplab.population.rules``) of a population of two members: member k
is what ``torch.optim.SGD(params_k, **members[k])`` would do. Values are checked against torch's
ranges here, where the config arrives, with a one-line ``ConfigError`` naming the member and key.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from mlplab.errors import check
from mlplab.population.rules import (
    StackedAdadelta,
    StackedAdagrad,
    StackedAdam,
    StackedAdamW,
    StackedOptimizer,
    StackedRMSprop,
    StackedSGD,
)

OPTIMIZERS: dict[str, type[StackedOptimizer]] = {
    "torch.optim.SGD": StackedSGD,
    "torch.optim.Adam": StackedAdam,
    "torch.optim.AdamW": StackedAdamW,
    "torch.optim.Adadelta": StackedAdadelta,
    "torch.optim.Adagrad": StackedAdagrad,
    "torch.optim.RMSprop": StackedRMSprop,
}
# Keys of a member's config that are per-member numbers, and their allowed range (torch's).
RANGES = {
    "lr": (lambda v: v >= 0, "a finite number >= 0"),
    "momentum": (lambda v: v >= 0, "a finite number >= 0"),
    "dampening": (lambda v: True, "a finite number"),
    "weight_decay": (lambda v: v >= 0, "a finite number >= 0"),
    "eps": (lambda v: v >= 0, "a finite number >= 0"),
    "beta1": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "beta2": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "rho": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "alpha": (lambda v: v >= 0, "a finite number >= 0"),
    "lr_decay": (lambda v: v >= 0, "a finite number >= 0"),
    "initial_accumulator_value": (lambda v: v >= 0, "a finite number >= 0"),
}


def build_stacked_optimizer(params, target: str, members: list[dict]) -> StackedOptimizer:
    """The stacked version of the optimizer ``target``, member k configured by ``members[k]``.

    Args:
        params: stacked parameters, each (K, ...) with K = ``len(members)``.
        target: torch's class path, a key of ``OPTIMIZERS`` (e.g. ``"torch.optim.Adam"``).
        members: one kwargs dict per member, as in ``conf/optimizer/*.yaml`` (``betas`` as a
            list of two numbers; a ``_target_`` equal to ``target`` is ignored). Missing keys take
            torch's defaults. ``nesterov``/``centered`` must be the same for every member.

    Raises:
        ConfigError: unsupported ``target``, unknown key, or a value out of torch's range.
    """
    check(target in OPTIMIZERS, "optimizer._target_", target, f"one of {list(OPTIMIZERS)}")
    cls = OPTIMIZERS[target]
    check(len(members) >= 1, "members", members, "at least one member")
    rows = [_member_options(cls, target, f"members[{i}]", m) for i, m in enumerate(members)]
    options: dict = {name: [row.get(name, d) for row in rows] for name, d in cls.DEFAULTS.items()}
    for name, default in cls.FLAGS.items():
        values = [row.get(name, default) for row in rows]
        check(len(set(values)) == 1, name, values, "the same value for every member")
        options[name] = values[0]
    if options.get("nesterov"):
        # torch.optim.SGD refuses nesterov without momentum, or with dampening
        ok = min(options["momentum"]) > 0 and set(options["dampening"]) == {0.0}
        check(ok, "momentum", options["momentum"], "> 0, with dampening=0, for nesterov=true")
    return cls(params, **options)


def _member_options(cls, target: str, where: str, member: dict) -> dict:
    """One member's config → internal names (``betas`` → ``beta1``, ``beta2``), checked."""
    allowed = [k for k in cls.DEFAULTS if not k.startswith("beta")] + list(cls.FLAGS)
    allowed += ["betas"] if "beta1" in cls.DEFAULTS else []
    out = {}
    for key, value in member.items():
        name = f"{where}.{key}"
        if key == "_target_":
            check(value == target, name, value, f"{target!r} like the other members")
            continue
        check(key in allowed, name, value, f"not an option of {target}; allowed: {allowed}")
        if key in cls.FLAGS:
            check(isinstance(value, bool), name, value, "true or false")
            out[key] = value
        elif key == "betas":
            ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
            check(ok, name, value, "a list of two numbers [beta1, beta2]")
            out |= {"beta1": _number(f"{name}[0]", "beta1", value[0])}
            out |= {"beta2": _number(f"{name}[1]", "beta2", value[1])}
        else:
            out[key] = _number(name, key, value)
    return out


def _number(name: str, key: str, value) -> float:
    ok_range, allowed = RANGES[key]
    is_num = isinstance(value, numbers.Real) and not isinstance(value, bool)
    check(is_num and math.isfinite(value) and ok_range(value), name, value, allowed)
    return float(value)
