"""Tests of ``mlplab.population.optim``: stacked optimizers against ``torch.optim``, per member.

A population of K=4 members with different hyperparameters is trained N steps on a real loss;
each member is also trained alone by ``torch.optim`` (single-tensor code path) on a copy of its
slices, and the two must agree to 1e-6. Frozen members must not move at all.

    .venv/bin/python -m pytest tests/population/test_optim.py -q
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from mlplab.errors import ConfigError
from mlplab.population.optim import OPTIMIZERS, StackedSGD, build_stacked_optimizer

K, N = 4, 25
CONF = Path(__file__).resolve().parents[2] / "src" / "mlplab" / "conf" / "optimizer"

# Per-member configs as in conf/optimizer/*.yaml; every case mixes values across members.
CASES = {
    "sgd": (
        "torch.optim.SGD",
        {
            "lr": [0.1, 0.05, 0.2, 0.01],
            "momentum": [0.0, 0.9, 0.5, 0.0],
            "dampening": [0.0, 0.0, 0.1, 0.3],
            "weight_decay": [0.0, 1e-2, 0.0, 0.1],
        },
    ),
    "nesterov": (
        "torch.optim.SGD",
        {
            "lr": [0.05, 0.1, 0.01, 0.2],
            "momentum": [0.9, 0.5, 0.99, 0.1],
            "weight_decay": [0.0, 1e-3, 0.1, 0.0],
            "nesterov": [True] * K,
        },
    ),
    "adam": (
        "torch.optim.Adam",
        {
            "lr": [1e-3, 1e-2, 5e-2, 1e-1],
            "betas": [[0.9, 0.999], [0.8, 0.99], [0.0, 0.9], [0.95, 0.5]],
            "eps": [1e-8, 1e-6, 1e-3, 1e-8],
            "weight_decay": [0.0, 1e-2, 0.0, 0.1],
        },
    ),
    "adamw": (
        "torch.optim.AdamW",
        {
            "lr": [1e-3, 1e-2, 5e-2, 1e-1],
            "betas": [[0.9, 0.999], [0.5, 0.9], [0.99, 0.999], [0.9, 0.95]],
            "eps": [1e-8, 1e-7, 1e-4, 1e-8],
            "weight_decay": [0.01, 0.0, 0.1, 0.5],
        },
    ),
    "adadelta": (
        "torch.optim.Adadelta",
        {
            "lr": [1.0, 0.5, 2.0, 0.1],
            "rho": [0.9, 0.95, 0.5, 0.99],
            "eps": [1e-6, 1e-5, 1e-4, 1e-6],
            "weight_decay": [0.0, 1e-2, 0.0, 0.1],
        },
    ),
    "adagrad": (
        "torch.optim.Adagrad",
        {
            "lr": [1e-2, 5e-2, 0.1, 1e-3],
            "lr_decay": [0.0, 0.01, 0.1, 0.0],
            "weight_decay": [0.0, 1e-2, 0.0, 0.1],
            "initial_accumulator_value": [0.0, 0.1, 1.0, 0.0],
            "eps": [1e-10, 1e-8, 1e-6, 1e-10],
        },
    ),
    "rmsprop": (
        "torch.optim.RMSprop",
        {
            "lr": [1e-3, 1e-2, 5e-3, 1e-2],
            "alpha": [0.99, 0.9, 0.5, 0.95],
            "eps": [1e-8, 1e-7, 1e-4, 1e-8],
            "weight_decay": [0.0, 1e-2, 0.0, 0.1],
            "momentum": [0.0, 0.9, 0.5, 0.0],
        },
    ),
    "rmsprop_centered": (
        "torch.optim.RMSprop",
        {
            "lr": [1e-3, 1e-2, 5e-3, 1e-2],
            "alpha": [0.99, 0.9, 0.5, 0.95],
            "momentum": [0.5, 0.0, 0.0, 0.9],
            "centered": [True] * K,
        },
    ),
}


def _members(case: str) -> tuple[str, list[dict]]:
    target, columns = CASES[case]
    return target, [{key: values[k] for key, values in columns.items()} for k in range(K)]


def _stacked_params(seed: int = 0) -> list[torch.Tensor]:
    """Random float32 weights (K, 5, 3) and biases (K, 1, 3), as leaves."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(K, *shape, generator=gen) for shape in [(5, 3), (1, 3)]]
    return [p.requires_grad_() for p in params]


_gen = torch.Generator().manual_seed(1)
X, Y = torch.randn(8, 5, generator=_gen), torch.randn(8, 3, generator=_gen)


def _loss(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One member's loss: a one-layer tanh net's squared error (grads differ per member)."""
    return ((torch.tanh(X @ w + b) - Y) ** 2).mean()


def _backward(params: list[torch.Tensor], frozen: tuple[int, ...] = ()) -> None:
    """Σ_k J_k backward: member k's gradient is its own loss's. Frozen members get NaN grads."""
    for p in params:
        p.grad = None
    w, b = params
    sum(_loss(w[k], b[k]) for k in range(K)).backward()
    for p in params:
        p.grad[list(frozen)] = math.nan


def _run_stacked(opt, params, steps: int, frozen: tuple[int, ...] = ()) -> None:
    for _ in range(steps):
        _backward(params, frozen)
        opt.step()


def _torch_member(target: str, member: dict, params: list[torch.Tensor], k: int):
    """Member k alone: a copy of its slices and ``torch.optim`` on them (single-tensor path)."""
    own = [p[k].detach().clone().requires_grad_() for p in params]
    cls = getattr(torch.optim, target.rsplit(".", 1)[1])
    return own, cls(own, **member, foreach=False)


def _run_torch(opt, own: list[torch.Tensor], steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        _loss(*own).backward()
        opt.step()


def _max_diff(stacked: list[torch.Tensor], own: list[torch.Tensor], k: int) -> float:
    return max((p[k] - q).abs().max().item() for p, q in zip(stacked, own, strict=True))


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_member_by_member(case):
    target, members = _members(case)
    params = _stacked_params()
    refs = [_torch_member(target, members[k], params, k) for k in range(K)]
    start = params[0].detach().clone()
    opt = build_stacked_optimizer(params, target, members)
    _run_stacked(opt, params, N)
    assert (params[0] != start).flatten(1).any(1).all()  # every member moved: no vacuous match
    for k, (own, ref) in enumerate(refs):
        _run_torch(ref, own, N)
        assert _max_diff(params, own, k) <= 1e-6, f"member {k}"
        # torch's state under torch's names (SGD/RMSprop keep no buffer when momentum is 0)
        for p, q in zip(params, own, strict=True):
            ours, theirs = opt.state[p], ref.state[q]
            assert ours["step"][k].item() == (theirs["step"].item() if "step" in theirs else N)
            for name, value in theirs.items():
                if name != "step":
                    torch.testing.assert_close(ours[name][k], value, msg=f"{name}[{k}]")


@pytest.mark.parametrize("case", CASES)
def test_frozen_members_do_not_move(case):
    """Members 1 and 3 are frozen for 5 of 15 steps (with NaN grads, as after divergence)."""
    target, members = _members(case)
    params = _stacked_params()
    refs = [_torch_member(target, members[k], params, k) for k in range(K)]
    opt = build_stacked_optimizer(params, target, members)
    _run_stacked(opt, params, 5)
    before = [p.detach().clone() for p in params]
    state_before = {
        i: {n: v.clone() for n, v in opt.state[p].items()} for i, p in enumerate(params)
    }
    opt.set_active(torch.tensor([True, False, True, False]))
    _run_stacked(opt, params, 5, frozen=(1, 3))
    for i, p in enumerate(params):
        for k in (1, 3):
            assert torch.equal(p[k], before[i][k])
            for name, value in opt.state[p].items():
                assert torch.equal(value[k], state_before[i][name][k]), name
    opt.set_active([True] * K)  # thawed members go on as if never paused (own step count)
    _run_stacked(opt, params, 5)
    for k, (own, ref) in enumerate(refs):
        _run_torch(ref, own, 15 if k in (0, 2) else 10)
        assert _max_diff(params, own, k) <= 1e-6, f"member {k}"


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip_is_exact(case):
    """Save after 10 steps, load into a fresh optimizer, go on 10 = 20 steps uninterrupted."""
    target, members = _members(case)
    mask = [True, True, False, True]  # the mask is saved too
    params = _stacked_params()
    opt = build_stacked_optimizer(params, target, members)
    opt.set_active(mask)
    _run_stacked(opt, params, 10)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # plain numbers and tensors: loads with weights_only
    resumed = [p.detach().clone().requires_grad_() for p in params]
    _run_stacked(opt, params, 10)

    fresh = build_stacked_optimizer(resumed, target, members)
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert fresh.active.tolist() == mask
    _run_stacked(fresh, resumed, 10)
    for p, q in zip(params, resumed, strict=True):
        assert torch.equal(p, q)
        assert all(torch.equal(v, fresh.state[q][n]) for n, v in opt.state[p].items())


def test_set_lr_is_a_per_member_schedule():
    """Halving member 2's lr after 5 steps = torch.optim with its group lr halved there."""
    target, members = _members("sgd")
    params = _stacked_params()
    refs = [_torch_member(target, members[k], params, k) for k in range(K)]
    opt = build_stacked_optimizer(params, target, members)
    _run_stacked(opt, params, 5)
    lr = opt.lr * torch.tensor([1.0, 1.0, 0.5, 1.0], dtype=torch.float64)
    opt.set_lr(lr)
    assert torch.equal(opt.lr, lr)
    _run_stacked(opt, params, 5)
    for k, (own, ref) in enumerate(refs):
        _run_torch(ref, own, 5)
        ref.param_groups[0]["lr"] = float(lr[k])
        _run_torch(ref, own, 5)
        assert _max_diff(params, own, k) <= 1e-6
    with pytest.raises(ConfigError, match=r"^lr=.* is invalid: a finite number >= 0$"):
        opt.set_lr([0.1, -0.1, 0.1, 0.1])


def test_direct_constructor_fills_torch_defaults():
    w = torch.zeros(2, 3, requires_grad=True)
    opt = StackedSGD([w], lr=[0.1, 0.2])
    assert opt.members == 2
    assert opt.param_groups[0]["momentum"] == [0.0, 0.0]
    assert opt.param_groups[0]["nesterov"] is False
    w.grad = torch.ones(2, 3)
    opt.step()
    assert torch.allclose(w, torch.tensor([[-0.1] * 3, [-0.2] * 3]))


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_optimizer_config_builds(path):
    cfg = OmegaConf.load(path)
    cfg = cfg.optimizer if "optimizer" in cfg else cfg  # gd.yaml is a _global_ package
    params = _stacked_params()
    opt = build_stacked_optimizer(params, cfg._target_, [cfg] * K)
    before = params[0].detach().clone()
    _run_stacked(opt, params, 1)
    assert not torch.equal(params[0], before)


@pytest.mark.parametrize(
    ("target", "member", "message"),
    [
        ("torch.optim.LBFGS", {}, r"optimizer._target_='torch.optim.LBFGS' is invalid: one of \["),
        ("torch.optim.Adam", {"momentum": 0.9}, r"members\[1\].momentum=0.9 is invalid: not an"),
        ("torch.optim.SGD", {"lr": -1}, r"members\[1\].lr=-1 is invalid: a finite number >= 0"),
        ("torch.optim.SGD", {"lr": math.nan}, r"members\[1\].lr=nan is invalid"),
        ("torch.optim.Adam", {"lr": math.inf}, r"members\[1\].lr=inf is invalid"),
        ("torch.optim.Adam", {"lr": "1e-3"}, r"members\[1\].lr='1e-3' is invalid"),
        ("torch.optim.Adam", {"betas": [0.9, 1.0]}, r"members\[1\].betas\[1\]=1.0 is invalid"),
        ("torch.optim.Adam", {"betas": 0.9}, r"members\[1\].betas=0.9 is invalid: a list of two"),
        ("torch.optim.SGD", {"nesterov": True}, r"nesterov=\[False, True\] is invalid: the same"),
        ("torch.optim.Adam", {"_target_": "torch.optim.SGD"}, r"members\[1\]._target_='torch"),
        # the fused kernel rounds its own way: members could not equal their runs
        ("torch.optim.Adam", {"fused": True}, r"members\[1\].fused=True is invalid: not an"),
    ],
)
def test_config_errors_are_one_line(target, member, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_stacked_optimizer(_stacked_params()[:1], target, [{"lr": 0.1}, member])
    assert "\n" not in str(err.value)


def test_nesterov_needs_momentum_and_members_match_params():
    with pytest.raises(ConfigError, match=r"^momentum=\[0.9, 0.0\] is invalid: > 0"):
        members = [{"momentum": 0.9, "nesterov": True}, {"momentum": 0.0, "nesterov": True}]
        build_stacked_optimizer([torch.zeros(2, 3)], "torch.optim.SGD", members)
    with pytest.raises(
        ConfigError, match=r"^param.shape=\(4, 5, 3\) is invalid: \(2, ...\), member"
    ):
        build_stacked_optimizer(_stacked_params()[:1], "torch.optim.SGD", [{"lr": 0.1}] * 2)
    assert set(OPTIMIZERS) >= {f"torch.optim.{n}" for n in ["SGD", "Adam", "AdamW", "RMSprop"]}


def test_nesterov_with_dampening_is_refused_as_torch_refuses_it():
    """A member's stand-alone run fails in torch.optim.SGD: its population must not train it."""
    bad = {"momentum": 0.9, "dampening": 0.1, "nesterov": True}
    with pytest.raises(ValueError, match="dampening"):
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, **bad)
    members = [{"momentum": 0.9, "nesterov": True}, bad]
    with pytest.raises(ConfigError, match=r"^dampening=\[0.0, 0.1\] is invalid: 0 for nesterov"):
        build_stacked_optimizer([torch.zeros(2, 3)], "torch.optim.SGD", members)


def test_step_with_closure_returns_the_loss():
    """Lightning's automatic optimization calls ``step(closure)``: the closure runs with grad."""
    target, members = _members("adam")
    params = _stacked_params()
    refs = [_torch_member(target, members[k], params, k) for k in range(K)]
    opt = build_stacked_optimizer(params, target, members)

    def closure():
        _backward(params)
        return params[0].sum()

    assert opt.step(closure) is not None
    for k, (own, ref) in enumerate(refs):
        _run_torch(ref, own, 1)
        assert _max_diff(params, own, k) <= 1e-6


class _Population(L.LightningModule):
    """Manual optimization as a population module does it: freeze member 1 after 3 steps."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.automatic_optimization = False
        self.w, self.b = (torch.nn.Parameter(p.detach()) for p in _stacked_params(seed))

    def configure_optimizers(self):
        return build_stacked_optimizer([self.w, self.b], *_members("rmsprop"))

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        if self.global_step == 3:
            opt.optimizer.set_active([True, False, True, True])
        opt.zero_grad()
        self.manual_backward(sum(_loss(self.w[k], self.b[k]) for k in range(K)))
        opt.step()


def _trainer(tmp_path, steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_lightning_manual_optimization_and_resume(tmp_path):
    """8 steps in a Trainer = 4, checkpoint, resume for 4 = the optimizer run by hand."""
    data = torch.utils.data.DataLoader(torch.zeros(4, 1), batch_size=1)  # an epoch = 4 steps
    first = _Population()
    trainer = _trainer(tmp_path, 4)
    trainer.fit(first, data)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = _Population(seed=1)  # weights, optimizer state and mask come from the checkpoint
    _trainer(tmp_path, 8).fit(resumed, data, ckpt_path=tmp_path / "half.ckpt")

    params = _stacked_params()
    opt = build_stacked_optimizer(params, *_members("rmsprop"))
    _run_stacked(opt, params, 3)
    opt.set_active([True, False, True, True])
    _run_stacked(opt, params, 5)
    assert torch.equal(resumed.w, params[0]) and torch.equal(resumed.b, params[1])
    assert resumed.optimizers().optimizer.active.tolist() == [True, False, True, True]
