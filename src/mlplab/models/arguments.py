"""The checks of a model's arguments, which need neither torch nor Lightning: ``MLP`` and
``MLPModule`` call them when they are built, and the command line calls them before Lightning
is imported (``mlplab.run.values``), so a wrong value answers at once, naming its key."""

from __future__ import annotations

import math
import numbers

from mlplab.errors import check

ACTIVATION_NAMES = ("sigmoid", "tanh", "relu", "identity")  # models.dense.ACTIVATIONS' keys
LAYERS = ("torch", "scratch")
CLIP_ALGORITHMS = ("norm", "value")


def _is_pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def is_real(v) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def check_mlp(in_features, hidden_sizes, out_features, activation, dropout, layer) -> None:
    """``MLP``'s arguments."""
    check(_is_pos_int(in_features), "model.in_features", in_features, "an integer >= 1")
    check(_is_pos_int(out_features), "model.out_features", out_features, "an integer >= 1")
    ok = isinstance(hidden_sizes, list | tuple) and all(map(_is_pos_int, hidden_sizes))
    check(ok, "model.hidden_sizes", hidden_sizes, "a list of integers >= 1 ([] = perceptron)")
    allowed = f"expected one of {list(ACTIVATION_NAMES)}"
    check(activation in ACTIVATION_NAMES, "model.activation", activation, allowed)
    ok = isinstance(dropout, int | float) and not isinstance(dropout, bool) and 0 <= dropout < 1
    check(ok, "model.dropout", dropout, "must be in [0, 1)")
    check(layer in LAYERS, "model.layer", layer, f"expected one of {list(LAYERS)}")


def check_module(l1, gradient_clip_val, gradient_clip_algorithm, group_batches) -> None:
    """``MLPModule``'s own arguments (its net's are ``check_mlp``'s)."""
    ok = group_batches == "auto" or _is_pos_int(group_batches)
    check(ok, "model.group_batches", group_batches, "an integer >= 1 or 'auto'")
    ok = isinstance(l1, int | float) and not isinstance(l1, bool) and l1 >= 0
    check(ok, "model.l1", l1, "must be >= 0")
    ok = isinstance(gradient_clip_val, int | float) and gradient_clip_val >= 0
    check(ok, "trainer.gradient_clip_val", gradient_clip_val, "must be >= 0")
    ok = gradient_clip_algorithm in CLIP_ALGORITHMS
    allowed = f"expected one of {list(CLIP_ALGORITHMS)}"
    check(ok, "trainer.gradient_clip_algorithm", gradient_clip_algorithm, allowed)


# The optimizers' numbers and their allowed ranges (torch's; betas are checked one by one).
_NON_NEGATIVE = (lambda v: v >= 0, "a finite number >= 0")
_BETA = (lambda v: 0 <= v < 1, "a number in [0, 1)")
RANGES = {
    **dict.fromkeys(
        ("lr", "momentum", "weight_decay", "eps", "alpha", "lr_decay", "initial_accumulator_value"),
        _NON_NEGATIVE,
    ),
    "dampening": (lambda v: True, "a finite number"),
    "beta1": _BETA,
    "beta2": _BETA,
    "rho": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
}


def check_number(name: str, key: str, value) -> None:
    """``value`` of optimizer key ``key`` (named ``name`` in the message) is in torch's range."""
    ok_range, allowed = RANGES[key]
    check(is_real(value) and ok_range(value), name, value, allowed)


# The shipped schedulers' arguments (others are checked when they are built).
SCHEDULER_ARGS = {
    "StepLR": {"step_size": ("an integer >= 1", _is_pos_int)},
    "CosineAnnealingLR": {"T_max": ("an integer >= 1", _is_pos_int)},
    "ReduceLROnPlateau": {
        "mode": ("min or max", lambda v: v in ("min", "max")),
        "factor": ("a number in [0, 1)", lambda v: is_real(v) and 0 <= v < 1),
        "patience": ("an integer >= 0", lambda v: _is_pos_int(v) or v == 0),
        "threshold_mode": ("rel or abs", lambda v: v in ("rel", "abs")),
    },
}


def check_optimization_numbers(optimizer: dict | None, scheduler: dict | None) -> None:
    """The optimizer's learning rate (a finite number > 0) and its other known numbers, and the
    shipped schedulers' arguments: what ``models.optimization.check_optimization`` finds by
    building them, found without torch."""
    optimizer = optimizer or {}
    lr = optimizer.get("lr")
    check(is_real(lr) and lr > 0, "optimizer.lr", lr, "must be a finite number > 0")
    for key, value in optimizer.items():
        if key == "betas" and isinstance(value, list | tuple) and len(value) == 2:
            for i, beta in enumerate(value):
                check_number(f"optimizer.betas[{i}]", f"beta{i + 1}", beta)
        elif key in RANGES:
            check_number(f"optimizer.{key}", key, value)
    name = str((scheduler or {}).get("_target_") or "").rsplit(".", 1)[-1]
    for key, (allowed, ok) in SCHEDULER_ARGS.get(name, {}).items():
        if key in scheduler:
            check(ok(scheduler[key]), f"scheduler.{key}", scheduler[key], allowed)
