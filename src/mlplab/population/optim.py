"""Optimizers for a population of K MLPs stored as stacked tensors, one learning rate per member.

Every parameter's first dimension is the member index (``StackedMLP``'s one ``(K, N)`` tensor).
``torch.optim`` takes one float per hyperparameter for a whole tensor, so these keep each
numeric hyperparameter as K floats and update all members with a few vectorized ops. Member k
follows torch's single-tensor code op for op (scalar algebra in float64, ``addcmul`` where torch
fuses), so on CPU it reproduces ``torch.optim`` run on member k alone bit for bit (its
single-tensor and its ``foreach`` code, which runs use; CUDA may differ by rounding). An
``active`` mask (K,) freezes members: weights and optimizer state (step count included) stay
bit for bit, for early stopping and diverged members::

    opt = StackedAdam([w, b], lr=[1e-3, 1e-2, 1e-1], beta2=[0.999, 0.99, 0.9])  # K = 3
    loss.backward(); opt.step(); opt.zero_grad()
    opt.set_active(torch.tensor([True, False, True]))  # member 1 stops here
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mlplab.errors import check
from mlplab.models.arguments import check_number

Tensor = torch.Tensor


class StackedOptimizer(torch.optim.Optimizer):
    """Base class: per-member hyperparameters, an ``active`` mask and a masked ``step``.

    Each param group holds every hyperparameter in ``DEFAULTS`` as a list of K floats, shared
    bools in ``FLAGS``, and ``active`` as K bools, so ``state_dict`` stores plain numbers and
    ``load_state_dict`` restores them. State per parameter: the buffers (shaped like it) and
    ``step``, a (K,) float64 CPU tensor counting each member's active steps. Per-member
    schedules set the learning rates with ``set_lr`` (``population.schedule``).
    """

    DEFAULTS: dict[str, float] = {}  # torch's defaults of the per-member numbers
    FLAGS: dict[str, bool] = {}  # options shared by all members (they change the formula)
    BUFFERS: tuple[str, ...] = ()  # state tensors shaped like the parameter

    def __init__(self, params, **options: Sequence[float] | bool) -> None:
        """Args: params: stacked tensors (K, ...); options: each name in ``DEFAULTS`` as K numbers
        (missing: torch's default for every member), each name in ``FLAGS`` as one bool."""
        allowed = f"one of {[*self.DEFAULTS, *self.FLAGS]}"
        for name, value in options.items():
            check(name in self.DEFAULTS or name in self.FLAGS, name, value, allowed)
        columns = {n: v for n, v in options.items() if n in self.DEFAULTS}
        check(bool(columns), "options", options, "at least one list of K numbers, e.g. lr=[...]")
        k = len(next(iter(columns.values())))
        for name, values in columns.items():
            check(len(values) == k, name, list(values), f"{k} values, one per member")
        defaults = {
            n: [float(x) for x in columns.get(n, [d] * k)] for n, d in self.DEFAULTS.items()
        }
        defaults |= {n: bool(options.get(n, d)) for n, d in self.FLAGS.items()}
        super().__init__(params, defaults | {"active": [True] * k})
        self._tensors: dict = {}  # _numbers' cache: group → its hyperparameters as tensors
        for shape in [tuple(p.shape) for g in self.param_groups for p in g["params"]]:
            check(shape[:1] == (k,), "param.shape", shape, f"({k}, ...), member index first")

    @property
    def members(self) -> int:
        return len(self.param_groups[0]["active"])

    @property
    def lr(self) -> Tensor:
        """The learning rates (K,) float64 of the first param group."""
        return torch.tensor(self.param_groups[0]["lr"], dtype=torch.float64)

    def set_lr(self, lr: Tensor | Sequence[float]) -> None:
        """Set the learning rate of every member (K numbers, each finite and >= 0) in all groups."""
        values = torch.as_tensor(lr, dtype=torch.float64).reshape(-1).tolist()
        check(len(values) == self.members, "lr", values, f"{self.members} values, one per member")
        ok = all(math.isfinite(v) and v >= 0 for v in values)
        check(ok, "lr", values, "a finite number >= 0")
        for group in self.param_groups:
            group["lr"] = values

    @property
    def active(self) -> Tensor:
        """The members that ``step`` updates, a (K,) bool tensor."""
        return torch.tensor(self.param_groups[0]["active"], dtype=torch.bool)

    def set_active(self, mask: Tensor | Sequence[bool]) -> None:
        """Freeze the members where ``mask`` (K,) is False: ``step`` leaves their weights and
        state untouched (gradients of frozen members may be anything, even NaN)."""
        values = torch.as_tensor(mask, dtype=torch.bool).reshape(-1).tolist()
        check(len(values) == self.members, "active", values, f"{self.members} bools")
        for group in self.param_groups:
            group["active"] = values

    def step(self, closure=None):
        """One update of every active member; ``closure`` re-evaluates the loss (torch's API)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                active, hp = self._numbers(group)
                if active.any():
                    for p in group["params"]:
                        if p.grad is not None:
                            self._step_param(p, group, hp, active)
        return loss

    def _numbers(self, group: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """The group's ``active`` mask (K,) and hyperparameters as (K,) float64 tensors, made
        again only when their values change (``set_lr``, ``set_active``, a scheduler)."""
        key = (tuple(group["active"]), *(tuple(group[n]) for n in self.DEFAULTS))
        cached = self._tensors.get(id(group))
        if cached is None or cached[0] != key:
            active = torch.tensor(group["active"], dtype=torch.bool)
            hp = {n: torch.tensor(group[n], dtype=torch.float64) for n in self.DEFAULTS}
            cached = self._tensors[id(group)] = (key, active, hp)
        return cached[1], cached[2]

    def _step_param(self, p: Tensor, group: dict, hp: dict[str, Tensor], active: Tensor) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(p.shape[0], dtype=torch.float64)
            state.update(self._init_buffers(p, hp, group))
        # every member's coefficients use its would-be step, so frozen ones stay finite too
        step = state["step"] + 1  # (K,) float64
        new_p, new_state = self._update(p, p.grad, state, hp, step, group)
        if bool(active.all()):
            p.copy_(new_p)
            state.update(new_state)
        else:
            keep = _per_member(p, active)[0].bool()  # (K, 1, ..., 1)
            p.copy_(torch.where(keep, new_p, p))
            state.update({n: torch.where(keep, v, state[n]) for n, v in new_state.items()})
        state["step"] = torch.where(active, step, state["step"])

    def _init_buffers(self, p: Tensor, hp: dict[str, Tensor], group: dict) -> dict[str, Tensor]:
        return {name: torch.zeros_like(p) for name in self.BUFFERS}

    def _update(self, p, grad, state, hp, step, group) -> tuple[Tensor, dict[str, Tensor]]:
        """The new parameter and buffers of all members, out of place (the caller masks them).
        ``hp``: name → (K,) float64 CPU; ``step``: (K,) float64, this step's count (from 1)."""
        raise NotImplementedError


def _per_member(p: Tensor, *values: Tensor) -> list[Tensor]:
    """(K,) CPU numbers → (K, 1, ..., 1) tensors in ``p``'s dtype and device (one transfer).
    The scalar algebra happens before, in float64, as torch does it in Python floats."""
    shape = (len(values), p.shape[0]) + (1,) * (p.dim() - 1)
    return list(torch.stack([v.double() for v in values]).to(p.device, p.dtype).view(shape))


class StackedSGD(StackedOptimizer):
    """``torch.optim.SGD`` per member: g ← ∂J/∂W + λW; b ← g on the first step (and always
    when μ = 0), else b ← μb + (1 − τ)g; W ← W − η·(g + μb if nesterov else b)."""

    DEFAULTS = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0}
    FLAGS = {"nesterov": False}
    BUFFERS = ("momentum_buffer",)

    def _update(self, p, grad, state, hp, step, group):
        mu = hp["momentum"]
        neg_lr, mu, undamped, wd, fresh = _per_member(
            p, -hp["lr"], mu, 1 - hp["dampening"], hp["weight_decay"], (step == 1) | (mu == 0)
        )
        fresh = fresh.bool()
        g = torch.addcmul(grad, p, wd)
        buf = torch.where(fresh, g, torch.addcmul(state["momentum_buffer"] * mu, g, undamped))
        direction = torch.addcmul(g, buf, mu) if group["nesterov"] else buf
        return torch.addcmul(p, direction, neg_lr), {"momentum_buffer": buf}


class StackedAdam(StackedOptimizer):
    """``torch.optim.Adam`` per member (amsgrad off): g ← ∂J/∂W + λW; m ← β₁m + (1 − β₁)g;
    v ← β₂v + (1 − β₂)g²; W ← W − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)."""

    DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    BUFFERS = ("exp_avg", "exp_avg_sq")
    DECOUPLED = False

    def _update(self, p, grad, state, hp, step, group):
        b1, b2, lr, wd = hp["beta1"], hp["beta2"], hp["lr"], hp["weight_decay"]
        step_size, bc2_sqrt, decay, wd, w1, b2, w2, eps = _per_member(
            *(p, lr / (1 - b1**step), (1 - b2**step).sqrt(), 1 - lr * wd, wd),
            *(1 - b1, b2, 1 - b2, hp["eps"]),
        )
        if self.DECOUPLED:
            p, g = p * decay, grad
        else:
            g = torch.addcmul(grad, p, wd)
        m = torch.lerp(state["exp_avg"], g, w1)
        v = torch.addcmul(state["exp_avg_sq"] * b2, w2 * g, g)
        new_p = p - step_size * m / (v.sqrt() / bc2_sqrt + eps)
        return new_p, {"exp_avg": m, "exp_avg_sq": v}


class StackedAdamW(StackedAdam):
    """``torch.optim.AdamW`` per member: Adam with decoupled decay, W ← (1 − ηλ)W first."""

    DEFAULTS = StackedAdam.DEFAULTS | {"weight_decay": 1e-2}
    DECOUPLED = True


class StackedAdadelta(StackedOptimizer):
    """``torch.optim.Adadelta`` per member: g ← ∂J/∂W + λW; v ← ρv + (1 − ρ)g²;
    Δ ← √(u + ε) / √(v + ε) · g; u ← ρu + (1 − ρ)Δ²; W ← W − ηΔ."""

    DEFAULTS = {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}
    BUFFERS = ("square_avg", "acc_delta")

    def _update(self, p, grad, state, hp, step, group):
        neg_lr, rho, w, eps, wd = _per_member(
            p, -hp["lr"], hp["rho"], 1 - hp["rho"], hp["eps"], hp["weight_decay"]
        )
        g = torch.addcmul(grad, p, wd)
        v = torch.addcmul(state["square_avg"] * rho, w * g, g)
        delta = (state["acc_delta"] + eps).sqrt() / (v + eps).sqrt() * g
        u = torch.addcmul(state["acc_delta"] * rho, w * delta, delta)
        return torch.addcmul(p, delta, neg_lr), {"square_avg": v, "acc_delta": u}


class StackedAdagrad(StackedOptimizer):
    """``torch.optim.Adagrad`` per member: g ← ∂J/∂W + λW; s ← s + g² (s₀ = initial value);
    W ← W − η/(1 + (t − 1)·lr_decay) · g / (√s + ε)."""

    DEFAULTS = {
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
    }
    BUFFERS = ("sum",)

    def _init_buffers(self, p, hp, group):
        (init,) = _per_member(p, hp["initial_accumulator_value"])
        return {"sum": torch.zeros_like(p) + init}

    def _update(self, p, grad, state, hp, step, group):
        clr, wd, eps = _per_member(
            p, hp["lr"] / (1 + (step - 1) * hp["lr_decay"]), hp["weight_decay"], hp["eps"]
        )
        g = torch.addcmul(grad, p, wd)
        s = torch.addcmul(state["sum"], g, g)
        return p - clr * g / (s.sqrt() + eps), {"sum": s}


class StackedRMSprop(StackedOptimizer):
    """``torch.optim.RMSprop`` per member: g ← ∂J/∂W + λW; v ← αv + (1 − α)g²;
    centered: ḡ ← αḡ + (1 − α)g, v̂ = v − ḡ² (else v̂ = v); b ← μb + g / (√v̂ + ε); W ← W − ηb."""

    DEFAULTS = {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0}
    FLAGS = {"centered": False}
    BUFFERS = ("square_avg", "momentum_buffer")

    def _init_buffers(self, p, hp, group):
        extra = ("grad_avg",) if group["centered"] else ()
        return {name: torch.zeros_like(p) for name in self.BUFFERS + extra}

    def _update(self, p, grad, state, hp, step, group):
        lr, alpha, w, eps, wd, mu, has_momentum = _per_member(
            *(p, hp["lr"], hp["alpha"], 1 - hp["alpha"], hp["eps"]),
            *(hp["weight_decay"], hp["momentum"], hp["momentum"] > 0),
        )
        has_momentum = has_momentum.bool()
        g = torch.addcmul(grad, p, wd)
        v = torch.addcmul(state["square_avg"] * alpha, w * g, g)
        new = {"square_avg": v}
        if group["centered"]:
            new["grad_avg"] = torch.lerp(state["grad_avg"], g, w)
            v = torch.addcmul(v, new["grad_avg"], new["grad_avg"], value=-1)
        avg = v.sqrt() + eps
        buf = state["momentum_buffer"] * mu + g / avg
        # torch's two formulas differ in rounding: W − ηb, and W − (ηg)/avg when μ = 0
        new_p = torch.where(has_momentum, torch.addcmul(p, buf, -lr), p - lr * g / avg)
        return new_p, new | {"momentum_buffer": buf}


OPTIMIZERS: dict[str, type[StackedOptimizer]] = {
    "torch.optim.SGD": StackedSGD,
    "torch.optim.Adam": StackedAdam,
    "torch.optim.AdamW": StackedAdamW,
    "torch.optim.Adadelta": StackedAdadelta,
    "torch.optim.Adagrad": StackedAdagrad,
    "torch.optim.RMSprop": StackedRMSprop,
}


def build_stacked_optimizer(params, target: str, members: list[dict]) -> StackedOptimizer:
    """The stacked version of the optimizer ``target``, member k configured by ``members[k]``.

    ``members``: one kwargs dict per member, as in ``conf/optimizer/*.yaml``; missing keys take
    torch's defaults; ``nesterov``/``centered`` must be the same for every member. A ConfigError
    names an unsupported ``target``, an unknown key or a value out of torch's range.
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
        momentum, dampening = options["momentum"], options["dampening"]
        check(min(momentum) > 0, "momentum", momentum, "> 0 for nesterov=true")
        check(set(dampening) == {0.0}, "dampening", dampening, "0 for nesterov=true")
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
            for i, beta in enumerate(("beta1", "beta2")):
                check_number(f"{name}[{i}]", beta, value[i])
                out[beta] = value[i]
        else:
            check_number(name, key, value)
            out[key] = value
    return out
