"""MIT 6.S191 lecture 1 written out by hand: tensors in, numbers out, no autograd.

Every gradient here comes from the chain rule on paper, so the tests can hold it against
torch's autograd and ``torch.optim.SGD``. Everything runs in float64 so those checks can be
tight (1e-6 for gradients, 1e-10 for weights after each step). The slides, in order:

* "The Perceptron: forward propagation", ŷ = g(w0 + XᵀW) → ``perceptron``
* "Common activation functions" g(z), and the g'(z) backprop needs → ``ACTIVATIONS``
* "Single layer neural network", z1 = xW1 + b1, a1 = g(z1), z2 = a1W2 + b2
  → ``init_params``, ``forward``
* "Empirical loss", J(W) = 1/n Σᵢ L(f(x⁽ⁱ⁾; W), y⁽ⁱ⁾), with binary cross entropy, softmax
  cross entropy and mean squared error → ``loss``
* "Computing gradients: backpropagation", ∂J/∂w1 = ∂J/∂ŷ · ∂ŷ/∂z1 · ∂z1/∂w1 → ``backward``
* "Gradient descent", "Stochastic gradient descent", "Mini-batches", W ← W − η ∂J/∂W
  → ``gradient_descent``

Try it (XOR, which no straight line separates)::

    .venv/bin/python -c "import torch; from mlplab import lecture as L
    x = torch.tensor([[0., 0], [0, 1], [1, 0], [1, 1]]); y = torch.tensor([0., 1, 1, 0])
    p0 = L.init_params(2, 8, 1)
    _, h = L.gradient_descent(p0, x, y, lr=0.5, epochs=500, activation='tanh')
    print(h['loss'][0], '->', h['loss'][-1])"
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

from mlplab.errors import check

Tensor = torch.Tensor
Params = dict[str, Tensor]
# float64: hand-written and autograd gradients then agree to ~1e-12 instead of ~1e-6.
DTYPE = torch.float64


def _sigmoid_prime(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


# name -> (g, g'). Backprop multiplies by g'(z) at every hidden unit: ∂a/∂z = g'(z).
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "sigmoid": (torch.sigmoid, _sigmoid_prime),  # σ' = σ(1 − σ)
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),  # tanh' = 1 − tanh²
    # relu' = 1[z > 0]; at the kink z = 0 we pick 0, the same subgradient torch picks.
    "relu": (torch.relu, lambda z: (z > 0).to(z.dtype)),
    "identity": (lambda z: z, torch.ones_like),  # identity' = 1
}
LOSSES = ("bce", "ce", "mse")


def _f64(t) -> Tensor:
    return torch.as_tensor(t, dtype=DTYPE)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_activation(activation: str) -> None:
    check(activation in ACTIVATIONS, "activation", activation, f"one of {list(ACTIVATIONS)}")


def _check_loss(loss: str) -> None:
    check(loss in LOSSES, "loss", loss, f"one of {list(LOSSES)}")


def perceptron(x: Tensor, w0: float, w: Tensor, activation: str = "sigmoid") -> Tensor:
    """A single perceptron: ŷ = g(w0 + XᵀW) → (N,), for inputs x (N, D) one example per row,
    a scalar bias w0, weights w (D,) and g one of ``ACTIVATIONS``."""
    _check_activation(activation)
    z = _f64(w0) + _f64(x) @ _f64(w)  # () + (N, D) @ (D,) -> (N,)
    return ACTIVATIONS[activation][0](z)


def init_params(
    in_features: int, hidden: int, out_features: int, sigma: float = 0.1, seed: int = 0
) -> Params:
    """Weights of a one-hidden-layer network: W ~ N(0, σ²), biases 0.

    Random weights break the symmetry between hidden units: units that start equal get
    equal gradients and stay equal forever. Once the weights differ, zero biases are fine.

    Widths D → H → K (K = 1 for ``bce`` and ``mse``, the class count for ``ce``); ``seed``
    seeds a ``torch.Generator`` (the global RNG is untouched). Returns ``{"W1": (D, H),
    "b1": (H,), "W2": (H, K), "b2": (K,)}``, float64.
    """
    check(sigma > 0, "sigma", sigma, "a number > 0")
    gen = torch.Generator().manual_seed(seed)
    W1 = sigma * torch.randn(in_features, hidden, generator=gen, dtype=DTYPE)  # (D, H)
    W2 = sigma * torch.randn(hidden, out_features, generator=gen, dtype=DTYPE)  # (H, K)
    b1, b2 = torch.zeros(hidden, dtype=DTYPE), torch.zeros(out_features, dtype=DTYPE)
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2}


def forward(params: Params, x: Tensor, activation: str = "relu") -> tuple[Tensor, Params]:
    """Forward propagation: z1 = xW1 + b1, a1 = g(z1), z2 = a1W2 + b2.

    The output z2 stays linear (logits): the loss applies σ or softmax itself, in the form
    that cannot overflow, and its gradient then simplifies to p − y. Returns z2 (N, K) for x
    (N, D), and the cache ``{"x", "z1", "a1", "z2"}`` that ``backward`` reads.
    """
    _check_activation(activation)
    x = _f64(x)
    z1 = x @ params["W1"] + params["b1"]  # (N, D) @ (D, H) + (H,) -> (N, H)
    a1 = ACTIVATIONS[activation][0](z1)  # (N, H)
    z2 = a1 @ params["W2"] + params["b2"]  # (N, H) @ (H, K) + (K,) -> (N, K)
    return z2, {"x": x, "z1": z1, "a1": a1, "z2": z2}


def _risk(z2: Tensor, y: Tensor, loss: str) -> Tensor:
    """J = 1/n Σᵢ L(z2⁽ⁱ⁾, y⁽ⁱ⁾) for outputs z2 (N, K)."""
    check(loss == "ce" or z2.shape[1] == 1, "out_features", z2.shape[1], f"1 for loss={loss!r}")
    if loss == "ce":
        # L = −log softmax(z)_y = logsumexp(z) − z_y; logsumexp shifts by max(z), no overflow.
        y = torch.as_tensor(y).reshape(-1, 1).long()  # (N, 1) class indices
        per = torch.logsumexp(z2, dim=1) - z2.gather(1, y)[:, 0]  # (N,)
    elif loss == "bce":
        # L = −[y log σ(z) + (1 − y) log(1 − σ(z))] = max(z, 0) − zy + log(1 + e^−|z|):
        # the same number, but never log(0) for a confident wrong answer.
        z, y = z2[:, 0], _f64(y).reshape(-1)  # (N,)
        per = z.clamp(min=0) - z * y + torch.log1p(torch.exp(-z.abs()))
    else:
        per = (z2[:, 0] - _f64(y).reshape(-1)) ** 2  # L = (ŷ − y)²
    return per.mean()


def loss(
    params: Params, x: Tensor, y: Tensor, activation: str = "relu", loss: str = "bce"
) -> Tensor:
    """Empirical risk J(W) = 1/n Σᵢ L(f(x⁽ⁱ⁾; W), y⁽ⁱ⁾), a 0-d float64 tensor.

    ``loss`` is ``"bce"`` (binary cross entropy on p = σ(z2), K = 1, targets 0/1), ``"ce"``
    (softmax cross entropy, K classes, targets class indices) or ``"mse"`` (mean squared error
    on ŷ = z2, K = 1, real targets); x is (N, D), y is (N,).
    """
    _check_loss(loss)
    return _risk(forward(params, x, activation)[0], y, loss)


def _grad_z2(z2: Tensor, y: Tensor, loss: str) -> Tensor:
    """∂J/∂z2 (N, K): (p − y)/n for both cross entropies, 2(ŷ − y)/n for mse.

    For bce, ∂L/∂p = (p − y)/(p(1 − p)) and ∂p/∂z = σ' = p(1 − p) cancel; softmax's Jacobian
    cancels the same way against −log p_y.
    """
    n = z2.shape[0]
    if loss == "ce":
        y = torch.as_tensor(y).reshape(-1, 1).long()  # (N, 1)
        onehot = torch.zeros_like(z2).scatter_(1, y, 1.0)  # (N, K)
        return (torch.softmax(z2, dim=1) - onehot) / n
    y = _f64(y).reshape(-1, 1)  # (N, 1)
    if loss == "bce":
        return (torch.sigmoid(z2) - y) / n
    return 2 * (z2 - y) / n


def backward(
    params: Params, cache: Params, y: Tensor, activation: str = "relu", loss: str = "bce"
) -> Params:
    """Backpropagation: the chain rule, from the loss back to every weight.

    For one first-layer weight, ∂J/∂w1 = ∂J/∂ŷ · ∂ŷ/∂z1 · ∂z1/∂w1. For the whole batch
    (n examples, ⊙ elementwise, Σᵢ a sum over examples)::

        ∂J/∂z2 = (p − y)/n (bce, ce)  or  2(ŷ − y)/n (mse)
        ∂J/∂W2 = a1ᵀ ∂J/∂z2          ∂J/∂b2 = Σᵢ ∂J/∂z2
        ∂J/∂a1 = ∂J/∂z2 W2ᵀ
        ∂J/∂z1 = ∂J/∂a1 ⊙ g'(z1)
        ∂J/∂W1 = xᵀ ∂J/∂z1           ∂J/∂b1 = Σᵢ ∂J/∂z1

    ``params``, ``cache`` and ``activation`` are those of the ``forward`` call; returns ∂J/∂θ
    for every θ in ``params``, same keys and shapes.
    """
    _check_activation(activation)
    _check_loss(loss)
    dz2 = _grad_z2(cache["z2"], y, loss)  # (N, K)
    da1 = dz2 @ params["W2"].T  # (N, K) @ (K, H) -> (N, H)
    dz1 = da1 * ACTIVATIONS[activation][1](cache["z1"])  # (N, H)
    return {
        "W1": cache["x"].T @ dz1,  # (D, N) @ (N, H) -> (D, H)
        "b1": dz1.sum(0),  # (H,)
        "W2": cache["a1"].T @ dz2,  # (H, N) @ (N, K) -> (H, K)
        "b2": dz2.sum(0),  # (K,)
    }


def _check_run(lr: float, epochs: int, batch_size: int | None) -> None:
    ok_lr = isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0
    check(ok_lr, "lr", lr, "a finite number > 0")
    check(_is_int(epochs) and epochs >= 1, "epochs", epochs, "an integer >= 1")
    ok_bs = batch_size is None or (_is_int(batch_size) and batch_size >= 1)
    check(ok_bs, "batch_size", batch_size, "None (full batch) or an integer >= 1")


def gradient_descent(
    params: Params,
    x: Tensor,
    y: Tensor,
    lr: float,
    epochs: int,
    batch_size: int | None = None,
    activation: str = "relu",
    loss: str = "bce",
    seed: int = 0,
    record_steps: bool = False,
) -> tuple[Params, dict[str, list]]:
    """The slides' algorithm: loop, compute ∂J/∂W on a batch, update W ← W − η ∂J/∂W.

    Epoch e visits the examples in the order ``torch.randperm(n, generator=
    torch.Generator().manual_seed(seed + e))``: a fresh generator per epoch, so an epoch's
    order does not depend on what was drawn before. ``batch_size`` picks the slide: None is
    gradient descent (one step per epoch on all n examples; shuffling only changes rounding),
    1 is stochastic gradient descent, k is mini-batch (the last batch may be smaller).
    ``params`` is not modified; ``lr`` is η > 0, ``epochs`` the passes over the data.

    Returns:
        The final weights and ``{"loss": [J(W) on all data after each epoch], "steps":
        [weights after each update]}`` (``steps`` is empty unless ``record_steps``).
    """
    _check_run(lr, epochs, batch_size)
    _check_activation(activation)
    _check_loss(loss)
    x, y, n = _f64(x), torch.as_tensor(y), len(x)
    check(len(y) == n, "y.shape", tuple(y.shape), f"({n},): one target per row of x")
    size = n if batch_size is None else batch_size
    params = {k: _f64(v).clone() for k, v in params.items()}
    history: dict[str, list] = {"loss": [], "steps": []}
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        for start in range(0, n, size):
            idx = order[start : start + size]
            _, cache = forward(params, x[idx], activation)
            grads = backward(params, cache, y[idx], activation, loss)
            # New tensors, not in-place: recorded steps stay distinct snapshots.
            params = {k: params[k] - lr * grads[k] for k in params}  # W ← W − η ∂J/∂W
            if record_steps:
                history["steps"].append(params)
        history["loss"].append(_risk(forward(params, x, activation)[0], y, loss).item())
    return params, history
