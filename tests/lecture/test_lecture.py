"""Tests of ``mlplab.lecture``, the lecture's math written without autograd.

The hand-written chain rule is held against ``torch.autograd`` (built here, in the test) and
against central finite differences; the from-scratch loop against ``torch.optim.SGD`` step by
step; and the whole thing must learn XOR, which a linear model cannot.

    .venv/bin/python -m pytest tests/lecture/test_lecture.py -q
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from mlplab.errors import ConfigError
from mlplab.lecture import scratch as L

# Activations as torch would write them, independent of L.ACTIVATIONS.
TORCH_G = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu, "identity": lambda z: z}
CASES = list(itertools.product(TORCH_G, L.LOSSES))
D, H, N = 3, 5, 10
K = {"bce": 1, "ce": 4, "mse": 1}


def _problem(loss: str, seed: int = 0, sigma: float = 0.7):
    """Random float64 data of N examples and weights of a D-H-K net for ``loss``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=gen, dtype=torch.float64)
    if loss == "bce":
        y = torch.randint(0, 2, (N,), generator=gen).double()
    elif loss == "ce":
        y = torch.randint(0, K["ce"], (N,), generator=gen)
    else:
        y = torch.randn(N, generator=gen, dtype=torch.float64)
    params = L.init_params(D, H, K[loss], sigma=sigma, seed=seed)
    # Nonzero biases, so their gradients are checked away from the trivial start.
    params["b1"] = 0.3 * torch.randn(H, generator=gen, dtype=torch.float64)
    params["b2"] = 0.3 * torch.randn(K[loss], generator=gen, dtype=torch.float64)
    return params, x, y


def _torch_loss(params, x, y, activation: str, loss: str) -> torch.Tensor:
    """The same J(W), built from torch ops so autograd can differentiate it."""
    z2 = TORCH_G[activation](x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(z2[:, 0], y)
    if loss == "ce":
        return F.cross_entropy(z2, y)
    return F.mse_loss(z2[:, 0], y)


def _autograd(params, x, y, activation: str, loss: str):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    J = _torch_loss(leaves, x, y, activation, loss)
    J.backward()
    return J.detach(), {k: v.grad for k, v in leaves.items()}


def test_perceptron_reproduces_the_lectures_worked_example():
    # w0 = 1, W = (3, −2), x = (−1, 2): z = 1 − 3 − 4 = −6, ŷ = σ(−6) ≈ 0.002.
    x = torch.tensor([[-1.0, 2.0]])
    y_hat = L.perceptron(x, 1.0, torch.tensor([3.0, -2.0]))
    assert y_hat.dtype == torch.float64 and y_hat.shape == (1,)
    assert L.perceptron(x, 1.0, torch.tensor([3.0, -2.0]), "identity").item() == -6.0
    assert y_hat.item() == pytest.approx(1 / (1 + math.exp(6)), abs=1e-15)
    assert round(y_hat.item(), 5) == 0.00247


@pytest.mark.parametrize("name", list(L.ACTIVATIONS))
def test_activation_derivative_matches_autograd(name):
    # arange / 10 hits z = 0 exactly (linspace may miss it by 1e-16): relu'(0) must be 0 there.
    z = (torch.arange(-40, 41, dtype=torch.float64) / 10).requires_grad_(True)
    g, g_prime = L.ACTIVATIONS[name]
    TORCH_G[name](z).sum().backward()
    torch.testing.assert_close(g(z.detach()), TORCH_G[name](z.detach()))
    torch.testing.assert_close(g_prime(z.detach()), z.grad, rtol=0, atol=1e-12)


def test_init_params_shapes_seed_and_scale():
    p = L.init_params(20, 30, 4, sigma=0.5, seed=3)
    assert {k: tuple(v.shape) for k, v in p.items()} == {
        "W1": (20, 30),
        "b1": (30,),
        "W2": (30, 4),
        "b2": (4,),
    }
    assert all(v.dtype == torch.float64 for v in p.values())
    assert not p["b1"].any() and not p["b2"].any()
    assert p["W1"].std().item() == pytest.approx(0.5, rel=0.1)
    assert torch.equal(p["W1"], L.init_params(20, 30, 4, sigma=0.5, seed=3)["W1"])
    assert not torch.equal(p["W1"], L.init_params(20, 30, 4, sigma=0.5, seed=4)["W1"])


@pytest.mark.parametrize(("activation", "loss"), CASES)
def test_backward_matches_autograd(activation, loss):
    params, x, y = _problem(loss)
    J_ref, grads_ref = _autograd(params, x, y, activation, loss)
    torch.testing.assert_close(L.loss(params, x, y, activation, loss), J_ref, rtol=0, atol=1e-12)
    _, cache = L.forward(params, x, activation)
    grads = L.backward(params, cache, y, activation, loss)
    assert grads.keys() == params.keys()
    for k in params:
        assert grads[k].shape == params[k].shape, k
        torch.testing.assert_close(grads[k], grads_ref[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize(
    ("activation", "loss"), [("tanh", "ce"), ("sigmoid", "bce"), ("relu", "mse")]
)
def test_backward_matches_central_finite_differences(activation, loss):
    params, x, y = _problem(loss, seed=1)
    _, cache = L.forward(params, x, activation)
    grads = L.backward(params, cache, y, activation, loss)
    gen, eps = torch.Generator().manual_seed(1), 1e-6
    for k, v in params.items():
        for i in torch.randint(0, v.numel(), (3,), generator=gen).tolist():
            bumped = {s: t.clone() for s, t in params.items()}
            bumped[k].view(-1)[i] += eps
            J_plus = L.loss(bumped, x, y, activation, loss)
            bumped[k].view(-1)[i] -= 2 * eps
            J_minus = L.loss(bumped, x, y, activation, loss)
            numeric = ((J_plus - J_minus) / (2 * eps)).item()  # (J(θ+ε) − J(θ−ε)) / 2ε
            assert grads[k].view(-1)[i].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8), (k, i)


def _torch_sgd_steps(params, x, y, lr, epochs, batch_size, activation, loss, seed):
    """The same run with torch.optim.SGD and autograd, in the order the module documents."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.SGD(leaves.values(), lr=lr, momentum=0.0)
    n, steps = len(x), []
    size = n if batch_size is None else batch_size
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        for start in range(0, n, size):
            idx = order[start : start + size]
            opt.zero_grad()
            _torch_loss(leaves, x[idx], y[idx], activation, loss).backward()
            opt.step()
            steps.append({k: v.detach().clone() for k, v in leaves.items()})
    return steps


@pytest.mark.parametrize(("batch_size", "steps_per_epoch"), [(None, 1), (1, N), (4, 3)])
@pytest.mark.parametrize(("activation", "loss"), [("tanh", "bce"), ("relu", "ce")])
def test_gradient_descent_matches_torch_sgd_step_by_step(
    batch_size, steps_per_epoch, activation, loss
):
    params, x, y = _problem(loss, seed=2)
    run = dict(lr=0.3, epochs=3, batch_size=batch_size, activation=activation, loss=loss, seed=5)
    final, history = L.gradient_descent(params, x, y, record_steps=True, **run)
    expected = _torch_sgd_steps(params, x, y, **run)
    assert len(history["steps"]) == len(expected) == 3 * steps_per_epoch
    assert len(history["loss"]) == 3
    for step, (ours, theirs) in enumerate(zip(history["steps"], expected, strict=True)):
        for k in params:
            torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-10, msg=f"{step} {k}")
    assert all(torch.equal(final[k], history["steps"][-1][k]) for k in params)
    # The caller's weights are left alone.
    assert all(torch.equal(params[k], _problem(loss, seed=2)[0][k]) for k in params)


def test_shuffle_order_depends_on_seed():
    params, x, y = _problem("bce")
    run = dict(lr=0.3, epochs=1, batch_size=1, activation="tanh", seed=0)
    a, _ = L.gradient_descent(params, x, y, **run)
    b, _ = L.gradient_descent(params, x, y, **run)
    c, _ = L.gradient_descent(params, x, y, **{**run, "seed": 1})
    assert torch.equal(a["W1"], b["W1"])
    assert not torch.equal(a["W1"], c["W1"])


XOR_X = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]])
XOR_Y = torch.tensor([0.0, 1, 1, 0])


def test_gradient_descent_learns_xor_with_tanh_hidden_units():
    params = L.init_params(2, 8, 1, sigma=0.1, seed=0)
    start = L.loss(params, XOR_X, XOR_Y, "tanh", "bce").item()
    final, history = L.gradient_descent(params, XOR_X, XOR_Y, lr=0.5, epochs=500, activation="tanh")
    assert history["loss"][-1] < 0.5 * start
    assert history["loss"][-1] == pytest.approx(L.loss(final, XOR_X, XOR_Y, "tanh").item())
    z2, _ = L.forward(final, XOR_X, "tanh")
    assert torch.equal((z2[:, 0] > 0).double(), XOR_Y.double())


def test_identity_hidden_units_cannot_learn_xor():
    # A stack of linear layers is linear; the best line predicts p = 1/2 everywhere: J = log 2.
    params = L.init_params(2, 8, 1, sigma=0.1, seed=0)
    _, history = L.gradient_descent(params, XOR_X, XOR_Y, lr=0.5, epochs=500, activation="identity")
    assert history["loss"][-1] == pytest.approx(math.log(2), abs=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"activation": "softplus"}, "activation"),
        ({"loss": "hinge"}, "loss"),
    ],
)
def test_gradient_descent_rejects_bad_arguments(kwargs, key):
    params, x, y = _problem("bce")
    value = next(iter(kwargs.values()))
    with pytest.raises(ConfigError, match=rf"^{key}={value!r} is invalid: \S"):
        L.gradient_descent(params, x, y, **{"lr": 0.1, "epochs": 1, **kwargs})


def test_other_entry_points_reject_bad_names():
    params, x, y = _problem("bce")
    with pytest.raises(ConfigError, match=r"^activation='swish' is invalid: one of \["):
        L.perceptron(x, 0.0, torch.ones(D), activation="swish")
    with pytest.raises(ConfigError, match="^activation="):
        L.forward(params, x, "swish")
    with pytest.raises(ConfigError, match="^loss='hinge'"):
        L.loss(params, x, y, "relu", "hinge")
    with pytest.raises(ConfigError, match="^out_features=4"):
        L.loss(L.init_params(D, H, 4), x, y, "relu", "bce")
    with pytest.raises(ConfigError, match=r"^y.shape=\(9,\) is invalid: \(10,\)"):
        L.gradient_descent(params, x, y[:9], lr=0.1, epochs=1)
    with pytest.raises(ConfigError, match="^sigma="):
        L.init_params(D, H, 1, sigma=0.0)
