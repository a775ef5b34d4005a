"""The update rules of the stacked optimizers: ``torch.optim``'s SGD (momentum, Nesterov),
Adam, AdamW, Adadelta, Adagrad and RMSprop, per member (``StackedOptimizer``'s ``_update``).

Each follows torch's single-tensor code op for op (scalar algebra in float64 first, then one
(K, 1, ..., 1) tensor per coefficient), so member k matches ``torch.optim`` run on it alone.
"""

from __future__ import annotations

import torch

from mlplab.population.optim import StackedOptimizer, _per_member


class StackedSGD(StackedOptimizer):
    """``torch.optim.SGD`` per member: g ← ∂J/∂W + λW; b ← g on the first step (and always
    when μ = 0), else b ← μb + (1 − τ)g; W ← W − η·(g + μb if nesterov else b)."""

    DEFAULTS = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0}
    FLAGS = {"nesterov": False}
    BUFFERS = ("momentum_buffer",)

    def _update(self, p, grad, state, hp, step, group):
        neg_lr, mu, undamped, wd = self._static(
            p,
            hp,
            group,
            lambda: (-hp["lr"], hp["momentum"], 1 - hp["dampening"], hp["weight_decay"]),
        )
        fresh = _per_member(p, (step == 1) | (hp["momentum"] == 0))[0].bool()
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
        step_size, bc2_sqrt = _per_member(p, lr / (1 - b1**step), (1 - b2**step).sqrt())
        decay, wd, w1, b2, w2, eps = self._static(
            p, hp, group, lambda: (1 - lr * wd, wd, 1 - b1, b2, 1 - b2, hp["eps"])
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
        neg_lr, rho, w, eps, wd = self._static(
            p,
            hp,
            group,
            lambda: (-hp["lr"], hp["rho"], 1 - hp["rho"], hp["eps"], hp["weight_decay"]),
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
        (clr,) = _per_member(p, hp["lr"] / (1 + (step - 1) * hp["lr_decay"]))
        wd, eps = self._static(p, hp, group, lambda: (hp["weight_decay"], hp["eps"]))
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
        lr, alpha, w, eps, wd, mu, has_momentum = self._static(
            p,
            hp,
            group,
            lambda: (
                *(hp["lr"], hp["alpha"], 1 - hp["alpha"], hp["eps"]),
                *(hp["weight_decay"], hp["momentum"], hp["momentum"] > 0),
            ),
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
