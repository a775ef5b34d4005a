"""``MLP``: dense layers stacked into a deep network; ``hidden_sizes=[]`` is the perceptron."""

from __future__ import annotations

from torch import nn

from mlplab.models.arguments import ACTIVATION_NAMES, check_mlp
from mlplab.models.dense import ACTIVATIONS, Dense

# The nn.Module that runs each activation of ``layer="torch"``.
TORCH_ACTIVATIONS = dict(sigmoid=nn.Sigmoid, tanh=nn.Tanh, relu=nn.ReLU, identity=nn.Identity)
# One list of names: the checks', the scratch layers' and the torch layers'.
assert tuple(ACTIVATIONS) == tuple(TORCH_ACTIVATIONS) == ACTIVATION_NAMES


class MLP(nn.Module):
    """Multi-layer perceptron returning logits (or raw values for regression).

    ``hidden_sizes=[]`` gives the single perceptron ``ŷ = g(w0 + XᵀW)``, where the output
    nonlinearity g (sigmoid / softmax) lives in the loss. Each hidden layer is
    ``a = g(aW + b)`` followed by dropout when ``dropout > 0``. ``out_features``: 1 for
    binary/regression, the number of classes for multiclass; ``layer``: ``torch``
    (``nn.Linear``) or ``scratch`` (the lecture's ``Dense``).
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
                blocks.append(nn.Dropout(dropout))
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
