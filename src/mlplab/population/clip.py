"""Gradient clipping per member of a ``StackedMLP``, as Lightning clips one model's gradients.

``MLPModule`` clips with ``trainer.gradient_clip_val`` through Lightning's ``clip_gradients``,
which calls ``torch.nn.utils``:

- ``norm``: ``clip_grad_norm_`` — total = ‖(‖g₁‖₂, ‖g₂‖₂, …)‖₂ over the model's gradients (in
  its parameter order: layer 0 weight, layer 0 bias, layer 1 weight, …), then every gradient
  × min(1, c / (total + 1e-6));
- ``value``: ``clip_grad_value_`` — every gradient clamped to [−c, c].

Here each member k has its own c_k (0 = no clipping, as in ``MLPModule``) and its own total
norm, computed from its slices of the stacked gradients in the same order. Member k's clipped
gradient equals its stand-alone one up to float32 summation order (a stacked weight is the
transpose of ``nn.Linear``'s).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mlplab.errors import check

ALGORITHMS = ("norm", "value")


@torch.no_grad()
def clip_members(net, values: torch.Tensor, algorithm: str) -> None:
    """Clip the gradients of ``net`` (a ``StackedMLP``) in place, member k to ``values[k]``
    ((K,) float32 on the net's device; 0 leaves member k's gradients as they are)."""
    params = [p for pair in zip(net.weights, net.biases, strict=True) for p in pair]
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if algorithm == "value":
        bound = torch.where(values > 0, values, torch.inf)
        for g in grads:
            shape = (-1,) + (1,) * (g.dim() - 1)
            g.clamp_(min=-bound.view(shape), max=bound.view(shape))
        return
    norms = torch.stack(
        [torch.linalg.vector_norm(g, dim=tuple(range(1, g.dim()))) for g in grads], dim=1
    )  # (K, P)
    total = torch.linalg.vector_norm(norms, dim=1)  # (K,)
    coef = torch.clamp(values / (total + 1e-6), max=1.0)
    coef = torch.where(values > 0, coef, 1.0)
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))


def clip_values(values: Sequence[float], algorithm: str) -> torch.Tensor:
    """The members' ``trainer.gradient_clip_val`` checked (each >= 0, the algorithm one of
    ``ALGORITHMS``), as a (K,) float32 tensor."""
    check(algorithm in ALGORITHMS, "trainer.gradient_clip_algorithm", algorithm, str(ALGORITHMS))
    for v in values:
        check(v >= 0, "trainer.gradient_clip_val", v, "must be >= 0")
    return torch.tensor([float(v) for v in values], dtype=torch.float32)
