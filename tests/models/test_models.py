"""Unit tests of the lecture's networks: ``Dense``, ``MLP`` and ``MLPModule``.

Formulas are checked against numbers written out by hand; the scratch layer against
``nn.Linear``; bad config values against the ``ConfigError`` message that names the key.

    .venv/bin/python -m pytest tests/models/test_models.py -q
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from mlplab.errors import ConfigError
from mlplab.models import ACTIVATIONS, MLP, Dense, MLPModule

# The lecture's worked example: ŷ = g(w0 + XᵀW) with w0 = 1, W = (3, −2), x = (−1, 2).
X_LECTURE = torch.tensor([[-1.0, 2.0]])
W_LECTURE = [3.0, -2.0]
B_LECTURE = 1.0
Z_LECTURE = 1.0 + 3.0 * -1.0 - 2.0 * 2.0  # = −6
Y_LECTURE = 1.0 / (1.0 + math.exp(6.0))  # σ(−6) = 0.00247…


def _module(**kwargs) -> MLPModule:
    kwargs = {"in_features": 2, "out_features": 1, "task": "binary", **kwargs}
    return MLPModule(**kwargs)


def _linears(net: nn.Module) -> list[nn.Module]:
    """The affine layers of an MLP in forward order (``Dense`` or ``nn.Linear``)."""
    return [m for m in net.modules() if isinstance(m, Dense | nn.Linear)]


def _copy_linear_into_dense(linear: nn.Linear, dense: Dense) -> None:
    with torch.no_grad():
        dense.W.copy_(linear.weight.T)  # nn.Linear stores (out, in); Dense stores (in, out)
        dense.b.copy_(linear.bias)


# ---- the lecture's perceptron --------------------------------------------------------------
def test_lecture_perceptron_with_dense():
    assert Z_LECTURE == -6.0
    layer = Dense(2, 1, "sigmoid")
    with torch.no_grad():
        layer.W.copy_(torch.tensor(W_LECTURE).reshape(2, 1))  # (D, H) = (2, 1)
        layer.b.fill_(B_LECTURE)
    y_hat = layer(X_LECTURE)
    assert y_hat.shape == (1, 1)
    assert y_hat.item() == pytest.approx(Y_LECTURE, rel=1e-5)
    assert y_hat.item() == pytest.approx(0.002, abs=5e-4)  # the slide's rounded "≈ 0.002"
    assert y_hat.item() == pytest.approx(0.0024726, abs=1e-7)


@pytest.mark.parametrize("layer", ["scratch", "torch"])
def test_lecture_perceptron_with_mlp(layer):
    net = MLP(2, [], 1, layer=layer)
    (affine,) = _linears(net)  # hidden_sizes=[] is exactly one layer
    with torch.no_grad():
        if layer == "scratch":
            affine.W.copy_(torch.tensor(W_LECTURE).reshape(2, 1))
            affine.b.fill_(B_LECTURE)
        else:
            affine.weight.copy_(torch.tensor([W_LECTURE]))  # (out, in) = (1, 2)
            affine.bias.fill_(B_LECTURE)
    logit = net(X_LECTURE)
    assert logit.item() == pytest.approx(-6.0, abs=1e-6)  # the output g lives in the loss
    assert torch.sigmoid(logit).item() == pytest.approx(Y_LECTURE, rel=1e-5)


# ---- scratch layer == nn.Linear ------------------------------------------------------------
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_dense_matches_linear(activation):
    torch.manual_seed(0)
    linear, dense = nn.Linear(5, 3), Dense(5, 3, activation)
    _copy_linear_into_dense(linear, dense)
    g = ACTIVATIONS[activation]
    x1 = torch.randn(8, 5, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    upstream = torch.randn(8, 3)  # a generic ∂J/∂a, so every output entry matters

    out_dense, out_linear = dense(x1), g(linear(x2))
    torch.testing.assert_close(out_dense, out_linear)
    (out_dense * upstream).sum().backward()
    (out_linear * upstream).sum().backward()

    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(dense.W.grad, linear.weight.grad.T)
    torch.testing.assert_close(dense.b.grad, linear.bias.grad)
    assert dense.W.grad.abs().sum() > 0  # gradients really flowed


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_scratch_mlp_matches_torch_mlp(activation):
    torch.manual_seed(0)
    ref = MLP(4, [6, 5], 3, activation=activation, layer="torch")
    scratch = MLP(4, [6, 5], 3, activation=activation, layer="scratch")
    ref_layers, scratch_layers = _linears(ref), _linears(scratch)
    assert len(ref_layers) == len(scratch_layers) == 3
    for linear, dense in zip(ref_layers, scratch_layers, strict=True):
        _copy_linear_into_dense(linear, dense)

    x = torch.randn(10, 4)
    upstream = torch.randn(10, 3)
    out_ref, out_scratch = ref(x), scratch(x)
    torch.testing.assert_close(out_scratch, out_ref)
    (out_ref * upstream).sum().backward()
    (out_scratch * upstream).sum().backward()
    for linear, dense in zip(ref_layers, scratch_layers, strict=True):
        torch.testing.assert_close(dense.W.grad, linear.weight.grad.T)
        torch.testing.assert_close(dense.b.grad, linear.bias.grad)


# ---- MLP shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize("layer", ["scratch", "torch"])
@pytest.mark.parametrize(("hidden", "n_layers"), [([], 1), ([7], 2), ([7, 5], 3), ([4, 4, 4], 4)])
def test_mlp_depth_and_output_shape(layer, hidden, n_layers):
    net = MLP(3, hidden, 2, layer=layer)
    assert len(_linears(net)) == n_layers
    assert len(net.net) == n_layers  # no dropout → one block per layer
    assert net(torch.randn(6, 3)).shape == (6, 2)
    widths = [3, *hidden, 2]
    n_params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert sum(p.numel() for p in net.parameters()) == n_params


@pytest.mark.parametrize("layer", ["scratch", "torch"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_dropout_modules_only_when_positive(layer, dropout):
    net = MLP(3, [8, 8], 1, dropout=dropout, layer=layer)
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == (2 if dropout > 0 else 0)  # one after each hidden layer
    assert all(d.p == dropout for d in drops)
    assert not isinstance(net.net[-1], nn.Dropout)  # never after the output layer
    # The perceptron has no hidden layer, so no dropout whatever the setting.
    assert not any(isinstance(m, nn.Dropout) for m in MLP(3, [], 1, dropout=dropout).modules())


@pytest.mark.parametrize("layer", ["scratch", "torch"])
def test_identity_activation_makes_the_net_linear(layer):
    torch.manual_seed(0)
    a, b, zero = torch.randn(16, 4) * 3, torch.randn(16, 4) * 3, torch.zeros(16, 4)

    def nonlinearity_gap(activation: str) -> float:
        f = MLP(4, [16, 16], 2, activation=activation, layer=layer)
        with torch.no_grad():
            lhs = f(a + b) - f(zero)
            rhs = (f(a) - f(zero)) + (f(b) - f(zero))
        return (lhs - rhs).abs().max().item()

    assert nonlinearity_gap("identity") < 1e-4  # however deep, still a straight boundary
    assert nonlinearity_gap("tanh") > 1e-2  # the check has teeth: a real g breaks it


# ---- losses against hand-computed numbers --------------------------------------------------
def test_binary_loss_is_bce_on_logits():
    module = _module(task="binary")
    # J = −1/n Σ y·log σ(z) + (1−y)·log(1−σ(z)); σ(0) = 1/2, 1 − σ(2) = 1/(1 + e²).
    assert module.loss(torch.tensor([[0.0]]), torch.tensor([1.0])).item() == pytest.approx(
        math.log(2)
    )
    out, y = torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, 0.0])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert module.loss(out, y).item() == pytest.approx(expected, rel=1e-6)


def test_multiclass_loss_is_softmax_cross_entropy():
    module = _module(out_features=3, task="multiclass")
    # softmax(0, ln 3, 0) = (1/5, 3/5, 1/5); softmax(0, 0, 0) = (1/3, 1/3, 1/3).
    out = torch.tensor([[0.0, math.log(3), 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([1, 2])
    expected = (-math.log(3 / 5) + math.log(3)) / 2
    assert module.loss(out, y).item() == pytest.approx(expected, rel=1e-6)

    two = _module(out_features=2, task="multiclass")
    got = two.loss(torch.tensor([[0.0, math.log(3)]]), torch.tensor([1])).item()
    assert got == pytest.approx(-math.log(3 / 4), rel=1e-6)  # softmax = (1/4, 3/4)


def test_regression_loss_is_mse():
    module = _module(task="regression")
    out, y = torch.tensor([[1.0], [3.0], [-1.0]]), torch.tensor([0.0, 1.0, -1.0])
    expected = ((1 - 0) ** 2 + (3 - 1) ** 2 + 0**2) / 3  # 1/n Σ (y − ŷ)² = 5/3
    assert module.loss(out, y).item() == pytest.approx(expected, rel=1e-6)


# ---- bad values ----------------------------------------------------------------------------
SGD = "torch.optim.SGD"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"dropout": 1.0}, "model.dropout"),
        ({"dropout": -0.1}, "model.dropout"),
        ({"hidden_sizes": [0]}, "model.hidden_sizes"),
        ({"hidden_sizes": [8, -3]}, "model.hidden_sizes"),
        ({"hidden_sizes": [True]}, "model.hidden_sizes"),
        ({"activation": "swish"}, "model.activation"),
        ({"layer": "keras"}, "model.layer"),
        ({"optimizer": {"_target_": SGD, "lr": 0}}, "optimizer.lr"),
        ({"optimizer": {"_target_": SGD, "lr": -1}}, "optimizer.lr"),
        ({"optimizer": {"_target_": "torch.optim.NoSuchOptimizer", "lr": 0.1}}, "optimizer"),
        ({"task": "foo"}, "task"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}\b") as err:
        _module(**kwargs)
    bad = next(iter(kwargs.values()))
    if not isinstance(bad, dict):
        assert repr(bad) in str(err.value)  # the message shows the offending value too


def test_unknown_optimizer_message_names_the_target():
    with pytest.raises(ConfigError, match="torch.optim.NoSuchOptimizer"):
        _module(optimizer={"_target_": "torch.optim.NoSuchOptimizer", "lr": 0.1})


@pytest.mark.parametrize("hidden_sizes", [32, True, 0])
def test_scalar_hidden_sizes_raise_config_error(hidden_sizes):
    with pytest.raises(ConfigError, match="model.hidden_sizes"):
        _module(hidden_sizes=hidden_sizes)


# ---- learning ------------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """Run on one intra-op thread, restored afterwards: for tensors this small a second thread
    only adds synchronization, and on a busy 2-core machine it made this test 25× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_overfits_one_batch(one_thread):
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,)).float()  # random labels: memorize
    assert 0 < y.sum() < 16  # both classes, so a bias alone can't drive the loss down
    module = _module(
        in_features=4, hidden_sizes=[32], optimizer={"_target_": "torch.optim.Adam", "lr": 1e-2}
    )
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    first = module.loss(module(x), y).item()
    for _ in range(300):
        loss = module.loss(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = module.loss(module(x), y).item()
    assert final < 0.05 < first


# ---- hyperparameters -----------------------------------------------------------------------
def _assert_primitive(value, path="hparams"):
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{path} has a non-string key {k!r}"
            _assert_primitive(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _assert_primitive(v, f"{path}[{i}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), (
            f"{path} = {value!r} ({type(value).__name__}) is not a primitive"
        )


def test_hparams_hold_only_primitives(tmp_path):
    module = _module(
        hidden_sizes=[16, 8],
        dropout=0.1,
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 0.01},
        scheduler={"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 5},
    )
    hparams = dict(module.hparams)
    assert hparams["hidden_sizes"] == [16, 8]
    assert hparams["optimizer"]["_target_"] == "torch.optim.AdamW"
    _assert_primitive(hparams)
    # …which is what lets a checkpoint load under torch's weights_only=True default.
    torch.save(hparams, tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True) == hparams


@pytest.mark.parametrize(
    "optimizer",
    [
        {"_target_": "torch.optim.Adam", "lr": 1e-2},
        {"_target_": "torch.optim.SGD", "lr": 1e-2, "momentum": 0.9, "nesterov": True},
        {"_target_": "torch.optim.RMSprop", "lr": 1e-2},
        {"_target_": "torch.optim.Adagrad", "lr": 1e-2},
        {"_target_": "torch.optim.Adadelta", "lr": 1.0},
    ],
)
def test_optimizers_are_multi_tensor_with_the_same_weights(optimizer):
    from mlplab.models.optimization import build_optimization

    weights = {}
    for foreach in (None, False):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        config = optimizer if foreach is None else optimizer | {"foreach": foreach}
        opt, _ = build_optimization(net.parameters(), config, None)
        assert opt.defaults["foreach"] is (True if foreach is None else foreach)
        gen = torch.Generator().manual_seed(1)
        for _ in range(30):
            loss = net(torch.randn(32, 5, generator=gen)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights[foreach] = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert torch.equal(weights[None], weights[False])


def test_a_fused_optimizer_is_built_as_asked():
    """``+optimizer.fused=true`` gets torch's fused kernel (no foreach added beside it)."""
    from mlplab.models.optimization import build_optimization

    net = torch.nn.Linear(3, 1)
    adam = {"_target_": "torch.optim.Adam", "lr": 0.1, "fused": True}
    opt, _ = build_optimization(net.parameters(), adam, None)
    assert opt.defaults["fused"] is True and not opt.defaults["foreach"]
