"""The lecture's dense layer, written from scratch: ``z = xW + b``, ``a = g(z)``."""

from __future__ import annotations

import math

import torch
from torch import nn

# g(z): the nonlinearities of the lecture, plus identity to show that a stack of linear
# layers is still linear (a straight decision boundary however deep the net).
ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda z: z,
}


class Dense(nn.Module):
    """A fully connected layer with its activation: ``a = g(xW + b)``.

    Same parametrization as ``nn.Linear`` except that ``W`` is stored (in, out) = (D, H), the
    way the lecture writes ``XᵀW``; ``nn.Linear`` stores its transpose. Initialization matches
    ``nn.Linear``: every entry ~ U(−1/√D, 1/√D).
    """

    def __init__(self, in_features: int, out_features: int, activation: str = "identity"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: expected one of {list(ACTIVATIONS)}")
        bound = 1.0 / math.sqrt(in_features)
        self.W = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.activation = activation
        self.g = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.W + self.b  # (B, D) @ (D, H) + (H,) -> (B, H)
        return self.g(z)

    def extra_repr(self) -> str:
        d, h = self.W.shape
        return f"in_features={d}, out_features={h}, activation={self.activation}"
