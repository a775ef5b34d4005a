"""``StackedMLP`` against K stand-alone MLPs: init, forward, round trip, batches, losses, dropout,
and 20 SGD steps. References are plain ``MLP``s, ``MLPModule.loss`` and ``BatchIterator``.

    .venv/bin/python -m pytest tests/population/test_stacked.py -q
"""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mlplab.data import BatchIterator, toy
from mlplab.errors import ConfigError
from mlplab.models import MLP, MLPModule
from mlplab.population.stacked import StackedMLP, member_batches, member_losses

SEEDS = [3, 11, 42]


def _seeded(seed: int, *args, **kwargs) -> MLP:
    torch.manual_seed(seed)
    return MLP(*args, **kwargs)


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("hidden", [[], [5], [7, 3]])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity"])
def test_forward_equals_each_seeded_member_mlp(hidden, activation):
    refs = [_seeded(s, 4, hidden, 3, activation) for s in SEEDS]
    torch.manual_seed(0)
    state = torch.get_rng_state()
    stacked = StackedMLP(4, hidden, 3, activation, seeds=SEEDS)
    assert torch.equal(torch.get_rng_state(), state)  # building it leaves the caller's RNG alone
    x = torch.randn(len(SEEDS), 16, 4)  # (K, B, D)

    out = stacked(x)

    assert out.shape == (3, 16, 3)
    for k, ref in enumerate(refs):
        assert _max_diff(out[k], ref(x[k])) <= 1e-6
    shared = stacked(x[0])  # (B, D): one input for every member
    assert _max_diff(shared[2], refs[2](x[0])) <= 1e-6


def test_init_is_what_mlp_module_gets_after_seed_everything():
    stacked = StackedMLP(2, [8, 4], 1, "tanh", seeds=SEEDS)
    for k, seed in enumerate(SEEDS):
        L.seed_everything(seed, verbose=False)  # what mlplab.train does before building
        module = MLPModule(2, 1, "binary", hidden_sizes=[8, 4], activation="tanh")
        for (w, b), lin in zip(stacked.layers(), _linears(module.net), strict=True):
            assert torch.equal(w[k], lin.weight.T)
            assert torch.equal(b[k, 0], lin.bias)
    w0 = stacked.layers()[0][0]
    assert not torch.equal(w0[0], w0[1])


def test_one_parameter_member_first_and_layers_are_its_views():
    stacked = StackedMLP(4, [6, 5], 2, seeds=SEEDS)
    (flat,) = stacked.parameters()
    assert flat.shape == (3, 4 * 6 + 6 + 6 * 5 + 5 + 5 * 2 + 2) and flat.is_leaf
    shapes = [(tuple(w.shape), tuple(b.shape)) for w, b in stacked.layers()]
    assert shapes == [((3, 4, 6), (3, 1, 6)), ((3, 6, 5), (3, 1, 5)), ((3, 5, 2), (3, 1, 2))]
    with torch.no_grad():
        stacked.layers()[1][0][2].fill_(7.0)  # member 2's second weight matrix, through a view
    assert (flat[2, 30:60] == 7.0).all() and not (flat[1, 30:60] == 7.0).any()
    stacked.double()  # still one parameter, its views follow
    assert stacked.flat.dtype == torch.float64 and stacked.layers()[0][0].dtype == torch.float64
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    out = stacked(x)
    out.sum().backward()
    assert stacked.flat.grad.shape == stacked.flat.shape  # one gradient for every member


@pytest.mark.parametrize("hidden", [[], [6, 5]])
def test_from_members_and_member_round_trip_bit_exact(hidden):
    rates = [0.0, 0.3, 0.0]
    members = [
        _seeded(s, 4, hidden, 2, "relu", dropout=p) for s, p in zip(SEEDS, rates, strict=True)
    ]

    stacked = StackedMLP.from_members(members)

    # A perceptron has no hidden layer to drop: its MLP keeps no trace of the rate.
    assert stacked.dropout.tolist() == pytest.approx(rates if hidden else [0.0] * 3)
    for k, (member, p) in enumerate(zip(members, rates, strict=True)):
        back = stacked.member(k)
        want, got = member.state_dict(), back.state_dict()
        assert list(got) == list(want)  # same layout, dropout blocks included
        assert [m.p for m in back.modules() if isinstance(m, nn.Dropout)] == [
            m.p for m in member.modules() if isinstance(m, nn.Dropout)
        ]
        assert all(torch.equal(got[key], want[key]) for key in want)
        module = MLPModule(4, 2, "multiclass", hidden_sizes=hidden, dropout=p)
        module.net.load_state_dict(got)  # strict: a member is a normal checkpoint's net
        assert all(torch.equal(module.net.state_dict()[key], want[key]) for key in want)
    again = StackedMLP.from_members([stacked.member(k) for k in range(3)])
    assert torch.equal(again.flat, stacked.flat)
    # members' dtype kept; the stack holds copies, not the members' own tensors
    wide_members = [copy.deepcopy(m).double() for m in members]
    wide = StackedMLP.from_members(wide_members)
    assert wide.flat.dtype == torch.float64 and wide.flat.is_leaf
    before = wide.flat[0].clone()
    with torch.no_grad():
        next(wide_members[0].parameters()).add_(1.0)
    assert torch.equal(wide.flat[0], before)


@pytest.mark.parametrize("hidden", [[], [5], [7, 3]])
def test_members_with_their_own_activations_are_their_mlps(hidden):
    """Members that differ in activation (identity too, which has no module of its own): each
    member's outputs and gradients are those of a population of it alone and its MLP's (up to
    float32 rounding: vectorized kernels round by position), and ``member(k)`` is its MLP."""
    kinds = ["tanh", "relu", "identity", "sigmoid", "relu"]
    members = [_seeded(s, 4, hidden, 3, a) for s, a in zip(range(5), kinds, strict=True)]
    stacked = StackedMLP.from_members(members)
    x = torch.randn(5, 16, 4)
    out = stacked(x)
    (out * x.sum(-1, keepdim=True)).sum().backward()
    for k, member in enumerate(members):
        alone = StackedMLP.from_members([member])
        (alone(x[k : k + 1]) * x[k].sum(-1, keepdim=True)).sum().backward()
        assert _max_diff(out[k], alone(x[k : k + 1])[0]) <= 1e-6
        assert _max_diff(stacked.flat.grad[k], alone.flat.grad[0]) <= 1e-5
        assert _max_diff(out[k], member(x[k])) <= 1e-6
        back = stacked.member(k)
        assert list(back.state_dict()) == list(member.state_dict())  # identity: no Sequential
        assert all(torch.equal(v, member.state_dict()[key]) for key, v in back.state_dict().items())


def test_from_members_refuses_mixed_architectures_and_bad_values():
    with pytest.raises(ConfigError, match="one architecture"):
        StackedMLP.from_members([MLP(2, [4], 1, "relu"), MLP(2, [5], 1, "relu")])
    with pytest.raises(ConfigError, match="model.layer"):
        StackedMLP.from_members([MLP(2, [4], 1, layer="scratch")])
    with pytest.raises(ConfigError, match="model.dropout"):
        StackedMLP(2, [4], 1, dropout=[0.1, 1.0], seeds=[0, 1])
    with pytest.raises(ConfigError, match="model.dropout"):
        StackedMLP(2, [4], 1, dropout=[0.1], seeds=[0, 1])


def test_member_batches_are_each_seeds_batch_iterator_batches():
    n, batch_size = 23, 5  # 5, 5, 5, 5, 3: a partial last batch
    ids = torch.arange(n, dtype=torch.float32)
    seen = []
    for epoch in range(2):
        index = member_batches(n, batch_size, SEEDS, epoch)
        assert [tuple(b.shape) for b in index] == [(3, 5)] * 4 + [(3, 3)]
        assert all(b.dtype == torch.long for b in index)
        for k, seed in enumerate(SEEDS):
            it = BatchIterator(ids[:, None], ids, batch_size, shuffle=True, seed=seed)
            it.set_epoch(epoch)
            want = [yb.long() for _, yb in it]
            assert len(want) == len(index)
            assert all(torch.equal(b[k], w) for b, w in zip(index, want, strict=True))
        seen.append(torch.cat(index, dim=1))
    # Teeth: members and epochs get different orders, each a permutation of all rows.
    assert not torch.equal(seen[0][0], seen[0][1])
    assert not torch.equal(seen[0][0], seen[1][0])
    assert all(torch.equal(row.sort().values, torch.arange(n)) for row in seen[1])


@pytest.mark.parametrize(
    ("task", "out_features", "class_weights"),
    [
        ("binary", 1, None),
        ("binary", 1, [2.5]),
        ("multiclass", 3, None),
        ("multiclass", 3, [0.5, 2.0, 1.0]),
        ("regression", 1, None),
    ],
)
def test_member_losses_equal_mlp_module_loss(task, out_features, class_weights):
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(3, 10, out_features, generator=gen)
    if task == "multiclass":
        y = torch.randint(0, out_features, (3, 10), generator=gen)
    elif task == "binary":
        y = torch.randint(0, 2, (3, 10), generator=gen).float()
    else:
        y = torch.randn(3, 10, generator=gen)
    module = MLPModule(2, out_features, task, class_weights=class_weights)

    got = member_losses(out, y, task, class_weights)

    want = torch.stack([module.loss(out[k], y[k]) for k in range(3)])
    assert got.shape == (3,)
    assert _max_diff(got, want) <= 1e-6
    assert _max_diff(want, want[0]) > 1e-3  # members' losses differ: a mix-up would show


def test_penalties_per_member():
    stacked = StackedMLP(3, [4], 2, seeds=SEEDS)
    for k in range(3):
        module = MLPModule(3, 2, "multiclass", hidden_sizes=[4])
        module.net.load_state_dict(stacked.member(k).state_dict())
        assert _max_diff(stacked.l1_penalty()[k], module.l1_penalty()) <= 1e-5
        half_sq = sum(p.square().sum() for p in module.net.parameters()) / 2  # biases too
        assert _max_diff(stacked.l2_penalty()[k], half_sq) <= 1e-5
    assert stacked.l1_penalty().shape == stacked.l2_penalty().shape == (3,)


def test_dropout_zero_members_unaffected_and_eval_mode_drops_nothing():
    stacked = StackedMLP(4, [32, 32], 2, "tanh", dropout=[0.0, 0.5, 0.0], seeds=SEEDS)
    x = torch.randn(3, 64, 4)
    stacked.eval()
    plain = stacked(x)
    for k in range(3):
        assert _max_diff(plain[k], stacked.member(k).eval()(x[k])) <= 1e-6

    stacked.train()
    first, second = stacked(x), stacked(x)

    for k in (0, 2):
        assert torch.equal(first[k], plain[k])
    assert _max_diff(first[1], plain[1]) > 1e-2
    assert _max_diff(first[1], second[1]) > 1e-2  # a fresh mask every forward


def test_dropout_half_drops_half_the_units_and_scales_the_rest():
    width = 1000
    stacked = StackedMLP(3, [width], width, "sigmoid", dropout=[0.5, 0.2], seeds=[0, 1])
    with torch.no_grad():  # output layer = identity: the output is the dropped hidden layer
        w, b = stacked.layers()[1]
        w.copy_(torch.eye(width).expand(2, width, width))
        b.zero_()
    x = torch.randn(2, 20, 3)
    hidden = stacked.eval()(x)  # sigmoid: never exactly 0

    dropped = stacked.train()(x)

    for k, p in enumerate([0.5, 0.2]):
        kept = dropped[k] != 0
        assert (1 - kept.float().mean()).item() == pytest.approx(p, abs=0.02)  # 20k units
        torch.testing.assert_close(dropped[k][kept], hidden[k][kept] / (1 - p))


def _moons(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    df, _ = toy.make_moons(n, noise=0.2, seed=0)
    x = torch.tensor(df[["x1", "x2"]].to_numpy(), dtype=torch.float32)
    return x, torch.tensor(df["green"].to_numpy(), dtype=torch.float32)


def test_twenty_sgd_steps_equal_three_separately_trained_mlps():
    x, y = _moons(200)
    lr, batch_size, steps = 0.5, 32, 20  # 7 batches per epoch (the last one 8 rows): 3 epochs
    l1, weight_decay = [0.0, 1e-3, 0.0], [0.0, 0.0, 1e-2]
    refs = [_seeded(s, 2, [8], 1, "tanh") for s in SEEDS]
    start = copy.deepcopy(refs)
    stacked = StackedMLP.from_members(refs)
    for net, seed, lam, wd in zip(refs, SEEDS, l1, weight_decay, strict=True):
        opt = torch.optim.SGD(net.parameters(), lr=lr, weight_decay=wd)  # L2 as mlplab does it
        batches = [(e, b) for e in range(3) for b in range(7)][:steps]
        for epoch, i in batches:
            it = BatchIterator(x, y, batch_size, shuffle=True, seed=seed)
            it.set_epoch(epoch)
            xb, yb = list(it)[i]
            loss = F.binary_cross_entropy_with_logits(net(xb).squeeze(-1), yb)
            loss = loss + lam * sum(lin.weight.abs().sum() for lin in _linears(net))
            opt.zero_grad()
            loss.backward()
            opt.step()

    l1_k, wd_k = torch.tensor(l1), torch.tensor(weight_decay)
    index = [b for e in range(3) for b in member_batches(len(x), batch_size, SEEDS, e)][:steps]
    for rows in index:  # (K, B)
        losses = member_losses(stacked(x[rows]), y[rows], "binary")
        total = (losses + l1_k * stacked.l1_penalty() + wd_k * stacked.l2_penalty()).sum()
        stacked.zero_grad()
        total.backward()
        with torch.no_grad():
            stacked.flat -= lr * stacked.flat.grad  # W ← W − η ∂J_k/∂W_k, every member at once

    for k, (ref, before) in enumerate(zip(refs, start, strict=True)):
        got = stacked.member(k)
        for a, b, b0 in zip(got.parameters(), ref.parameters(), before.parameters(), strict=True):
            assert _max_diff(a, b) <= 1e-5
            assert _max_diff(b, b0) > 1e-2  # the weights moved


def test_members_draw_their_own_dropout_masks_from_generators_of_their_own():
    """Members with equal weights and inputs still drop different units (a mask shared by all
    members would make them equal); member k's masks are those ``nn.Dropout`` draws in its own
    stand-alone run (its generator starts where that run's is after building the model), and
    drawing them touches no other generator."""
    args = (3, [64, 32], 1, "relu")
    built = [_seeded_state(s, *args, dropout=p) for s, p in ((1, 0.5), (2, 0.5), (3, 0.0))]
    stacked = StackedMLP.from_members(
        [copy.deepcopy(built[0][0]) for _ in built], rng_states=[state for _, state in built]
    )
    stacked.rates[2] = 0.0  # member 2 keeps every unit (its MLP draws nothing)
    x = torch.randn(16, 3)  # one input for every member
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = stacked.train()(x)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is untouched
    assert _max_diff(first[0], first[1]) > 1e-3  # same weights, own masks
    for k in (0, 1):  # what member k's own run draws: its MLP after seeding, then a forward
        torch.manual_seed([1, 2][k])
        alone = MLP(*args, dropout=0.5, layer="torch")
        alone.load_state_dict(built[0][0].state_dict())
        torch.testing.assert_close(first[k], alone.train()(x), atol=1e-6, rtol=0)
    states = stacked.dropout_states()
    again = stacked(x)
    stacked.set_dropout_states(states)
    assert torch.equal(stacked(x), again)


def _seeded_state(seed: int, *args, dropout: float) -> tuple[MLP, torch.Tensor]:
    """An MLP built right after seeding, and the generator's state after it."""
    torch.manual_seed(seed)
    return MLP(*args, dropout=dropout), torch.get_rng_state()
