"""How noisy a mini-batch gradient is (the lecture's "Stochastic gradient descent" and
"Mini-batches" slides): ``gradient_variance`` measures ``E‖∇J_B(W) − ∇J(W)‖²`` per batch size;
``plot_gradient_variance`` (``mlplab.figures.plots``) draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mlplab.errors import ConfigError


def _flat_grad(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """∂loss/∂W of every trainable parameter, flattened into one vector."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    return torch.cat([g.reshape(-1) for g in flat])  # (P,)


def gradient_variance(
    x: torch.Tensor,
    y: torch.Tensor,
    model: torch.nn.Module,
    batch_sizes: Sequence[int | str] = (1, 8, 32, 128, "full"),
    draws: int = 64,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> dict[int | str, float]:
    """How far a mini-batch gradient is from the full-batch one, per batch size ``b``:
    ``E‖∇J_B(W) − ∇J(W)‖²`` over ``draws`` random batches ``B`` of ``b`` rows.

    Rows are drawn without replacement within a batch (as a shuffled epoch does), so the
    expectation is ``s²/b · (N − b)/(N − 1)`` with ``s² = 1/N Σᵢ ‖∇Jᵢ − ∇J‖²``: it falls like
    ``1/b`` and is exactly 0 for the full batch. The model is measured in eval mode (dropout
    off: only the sampling noise counts) and put back in its previous mode.

    ``x`` (N, D) and ``y`` (N,) are the data, ``loss_fn(model(x), y)`` the loss (default
    ``model.loss``, which ``MLPModule`` has); ``batch_sizes`` are ints ≤ N or ``"full"`` (= N,
    the one full batch, deterministic). Returns batch size (as given) → mean squared distance.
    """
    loss_fn = loss_fn if loss_fn is not None else model.loss
    n = len(x)
    for b in batch_sizes:
        if b != "full" and not (isinstance(b, int) and 1 <= b <= n):
            raise ConfigError(f"batch size {b!r} is invalid: an int in [1, {n}] or 'full'")
    was_training = model.training
    model.eval()
    try:
        full = _flat_grad(model, loss_fn(model(x), y))
        generator = torch.Generator().manual_seed(seed)
        result: dict[int | str, float] = {}
        for b in batch_sizes:
            if b == "full":  # the same rows in the same order: bit-identical gradient
                result[b] = float((_flat_grad(model, loss_fn(model(x), y)) - full).pow(2).sum())
                continue
            total = 0.0
            for _ in range(draws):
                rows = torch.randperm(n, generator=generator)[:b].to(x.device)
                grad = _flat_grad(model, loss_fn(model(x[rows]), y[rows]))
                total += float((grad - full).pow(2).sum())
            result[b] = total / draws
    finally:
        model.train(was_training)
    return result
