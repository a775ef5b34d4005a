"""``MLP``: dense layers stacked into a deep network; ``hidden_sizes=[]`` is the perceptron."""

from __future__ import annotations

import torch
from torch import nn

from mlplab.models.arguments import ACTIVATION_NAMES, check_mlp
from mlplab.models.dense import ACTIVATIONS, Dense

# The nn.Module that runs each activation of ``layer="torch"``.
TORCH_ACTIVATIONS = dict(sigmoid=nn.Sigmoid, tanh=nn.Tanh, relu=nn.ReLU, identity=nn.Identity)
# One list of names: the checks', the scratch layers' and the torch layers'.
assert tuple(ACTIVATIONS) == tuple(TORCH_ACTIVATIONS) == ACTIVATION_NAMES


def keep_(noise: torch.Tensor, p: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Uniform noise in [0, 1) → dropout's multiplier, in place: ``1/(1 − p)`` where
    ``noise ≥ p`` (kept, probability 1 − p), else 0. ``p`` and ``scale`` are tensors of the
    noise's dtype, so a population (one row of them per member) computes what a run does."""
    return noise.ge_(p).mul_(scale)


class Dropout(nn.Dropout):
    """Inverted dropout ``a ← a · m / (1 − p)``, ``m ~ Bernoulli(1 − p)``, with ``m`` drawn as
    ``uniform ≥ p``: on CPU ``torch.rand`` is about 2.5× faster than the ``bernoulli_`` that
    ``nn.Dropout`` uses, and a population draws each member's masks the same way from that
    member's own generator (``mlplab.population.stacked``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        p = torch.full((), self.p, dtype=x.dtype, device=x.device)
        scale = torch.full((), 1 / (1 - self.p), dtype=x.dtype, device=x.device)
        return x * keep_(torch.rand_like(x), p, scale)


class MLP(nn.Module):
    """Multi-layer perceptron returning logits (or raw values for regression).

    ``hidden_sizes=[]`` gives the single perceptron ``ŷ = g(w0 + XᵀW)``, where the output
    nonlinearity g (sigmoid / softmax) lives in the loss. Each hidden layer is
    ``a = g(aW + b)`` followed by dropout when ``dropout > 0``.

    Args:
        in_features: number of input features.
        hidden_sizes: width of each hidden layer, e.g. ``[32, 32]``.
        out_features: 1 for binary/regression, number of classes for multiclass.
        activation: ``sigmoid``, ``tanh``, ``relu`` or ``identity``.
        dropout: drop probability after each hidden layer, in [0, 1).
        layer: ``torch`` (``nn.Linear``) or ``scratch`` (the lecture's ``Dense``).
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: list[int],
        out_features: int,
        activation: str = "relu",
        dropout: float = 0.0,
        layer: str = "torch",
    ) -> None:
        super().__init__()
        check_mlp(in_features, hidden_sizes, out_features, activation, dropout, layer)
        widths = [in_features, *hidden_sizes]
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            blocks.append(self._dense(layer, d_in, d_out, activation))
            if dropout > 0:
                blocks.append(Dropout(dropout))
        blocks.append(self._dense(layer, widths[-1], out_features, "identity"))
        self.net = nn.Sequential(*blocks)

    @staticmethod
    def _dense(layer: str, d_in: int, d_out: int, activation: str) -> nn.Module:
        if layer == "scratch":
            return Dense(d_in, d_out, activation)
        if activation == "identity":
            return nn.Linear(d_in, d_out)
        return nn.Sequential(nn.Linear(d_in, d_out), TORCH_ACTIVATIONS[activation]())

    def forward(self, x):
        return self.net(x)  # (B, D) -> (B, out_features)
