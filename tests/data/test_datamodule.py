"""Unit tests of the data path: toy generators, split, preprocessing, batches, DataModule.

.venv/bin/python -m pytest tests/data/test_datamodule.py -q
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pandas.testing import assert_frame_equal

from mlplab.data import SOURCES, BatchIterator, Preprocessor, TableSpec, TabularDataModule
from mlplab.data.splits import split_indices
from mlplab.errors import ConfigError
from mlplab.models import MLP

NAMES = sorted(n for n, f in SOURCES.items() if f.__module__ == "mlplab.data.toy")
POINT_SETS = ("moons", "circles", "spiral", "xor")
# Training accuracy (binary) or R² (regression) a small MLP must reach on each source.
LEARNABLE = {"pass_fail": 0.8, "grades": 0.7, **dict.fromkeys(POINT_SETS, 0.9)}


@pytest.fixture
def one_thread():
    """Run on one intra-op thread, restored afterwards: for tensors this small a second thread
    only adds synchronization, and on a busy 2-core machine it made training 100× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _table(name: str, n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, TableSpec]:
    return SOURCES[name](n_samples=n, seed=seed)


# ---- generators ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_generator_is_a_pure_function_of_its_seed(name):
    df, _ = _table(name, seed=3)
    assert_frame_equal(df, _table(name, seed=3)[0])
    other, _ = _table(name, seed=4)
    assert other.shape == df.shape
    with pytest.raises(AssertionError):
        assert_frame_equal(df, other)


@pytest.mark.parametrize("name", NAMES)
def test_generator_columns_match_spec(name):
    df, spec = _table(name)
    assert len(df) == 300
    assert list(df.columns) == [*spec.features, spec.target]
    assert spec.task in ("binary", "regression")
    assert not df.isna().any().any()
    assert all(pd.api.types.is_numeric_dtype(df[c]) for c in spec.features)


@pytest.mark.parametrize("name", NAMES)
def test_generator_targets(name):
    df, spec = _table(name, n=1000)
    y = df[spec.target]
    if spec.task == "regression":
        assert y.between(0, 100).all()  # grades in %
        assert y.std() > 5  # and not a constant
        return
    assert set(y.unique()) == {0, 1}
    assert pd.api.types.is_integer_dtype(y)
    rate = y.mean()
    if name == "pass_fail":
        assert 0.1 < rate < 0.9  # set by the logistic rule, not balanced by construction
    else:
        assert 0.45 <= rate <= 0.55  # the point sets are (roughly) half red, half green


def _train_metric(name: str) -> float:
    df, spec = _table(name, n=1000)
    pre = Preprocessor.fit(df, spec)
    x, y = pre.features(df), pre.targets(df)  # standardized features, encoded target
    torch.manual_seed(0)
    net = MLP(x.shape[1], [32, 32], 1, activation="relu")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = F.mse_loss if spec.task == "regression" else F.binary_cross_entropy_with_logits
    for _ in range(300):  # full-batch gradient descent
        loss = loss_fn(net(x).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net(x).squeeze(-1)
    if spec.task == "regression":
        return (1 - ((out - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()).item()  # R²
    return ((out > 0).float() == y).float().mean().item()  # accuracy


@pytest.mark.parametrize("name", NAMES)
def test_generator_is_learnable(name, one_thread):
    threshold = LEARNABLE.get(name, 0.9 if _table(name)[1].task == "binary" else 0.7)
    assert _train_metric(name) >= threshold


# ---- split ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "n", "val", "test"),
    [
        ("pass_fail", 1000, 0.2, 0.2),
        ("pass_fail", 999, 0.15, 0.1),
        ("moons", 501, 0.1, 0.3),
        ("xor", 333, 0.25, 0.25),
        ("grades", 1001, 0.15, 0.15),
    ],
)
def test_split_indices(name, n, val, test):
    df, spec = _table(name, n=n)
    parts = split_indices(df, spec, val, test, seed=0)
    assert set(parts) == {"train", "val", "test"}
    rows = [set(parts[s].tolist()) for s in ("train", "val", "test")]
    assert [len(r) for r in rows] == [len(parts[s]) for s in ("train", "val", "test")]  # no dups
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])  # disjoint
    assert set.union(*rows) == set(range(n))  # covers every row
    for split, fraction in (("train", 1 - val - test), ("val", val), ("test", test)):
        assert abs(len(parts[split]) - n * fraction) <= 1, split

    if spec.task != "regression":  # stratified: each split keeps the class ratio
        whole = df[spec.target].mean()
        for split in ("train", "val", "test"):
            assert abs(df[spec.target].iloc[parts[split]].mean() - whole) <= 0.05, split

    again = split_indices(df, spec, val, test, seed=0)
    other = split_indices(df, spec, val, test, seed=1)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(parts[split], again[split])
    assert not np.array_equal(parts["val"], other["val"])


def test_split_sizes_within_one_row_for_two_classes():
    df, spec = _table("moons", n=260)  # 130 per class; 130·0.15 = 19.5 rounds up in each class
    parts = split_indices(df, spec, 0.15, 0.15, seed=0)
    assert abs(len(parts["train"]) - 260 * 0.7) <= 1  # 180 rows, 182 requested


# ---- preprocessing -------------------------------------------------------------------------
def _shifted_table() -> tuple[pd.DataFrame, TableSpec, dict[str, np.ndarray]]:
    """A table whose val/test rows sit far from its train rows, so train and full stats differ."""
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.normal(5, 2, n), "y": np.arange(n) % 2})
    spec = TableSpec(target="y", task="binary", numeric=("a", "b"))
    parts = split_indices(df, spec, 0.2, 0.2, seed=0)  # depends on the target only
    held_out = np.r_[parts["val"], parts["test"]]
    df.loc[held_out, "a"] += 100.0
    df.loc[held_out, "b"] *= 10.0
    return df, spec, parts


def test_datamodule_fits_preprocessor_on_train_only(monkeypatch):
    df, spec, parts = _shifted_table()
    monkeypatch.setitem(SOURCES, "shifted", lambda: (df.copy(), spec))
    dm = TabularDataModule("shifted", val_fraction=0.2, test_fraction=0.2, seed=0)
    dm.setup()
    train = df.iloc[parts["train"]][["a", "b"]].to_numpy()
    full = df[["a", "b"]].to_numpy()
    pre = dm.preprocessor
    np.testing.assert_allclose(pre.mean, train.mean(axis=0))
    np.testing.assert_allclose(pre.std, train.std(axis=0))  # population std (ddof=0)
    assert abs(pre.mean[0] - full.mean(axis=0)[0]) > 30  # nowhere near the full table's
    assert abs(pre.std[1] - full.std(axis=0)[1]) > 5

    x_train, _ = dm.tensors["train"]
    torch.testing.assert_close(x_train.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_train.std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0)
    assert dm.tensors["val"][0][:, 0].mean() > 30  # held-out rows keep their shift


def _fitted(name: str = "pass_fail") -> tuple[pd.DataFrame, Preprocessor]:
    df, spec = _table(name)
    return df, Preprocessor.fit(df.iloc[:200], spec)


@pytest.mark.parametrize("name", ["pass_fail", "grades"])
def test_preprocessor_state_dict_round_trip(name, tmp_path):
    df, pre = _fitted(name)
    state = pre.state_dict()
    clone = Preprocessor.from_state_dict(state)
    assert torch.equal(clone.features(df), pre.features(df))
    assert torch.equal(clone.targets(df), pre.targets(df))

    torch.save(state, tmp_path / "pre.pt")
    loaded = torch.load(tmp_path / "pre.pt", weights_only=True)  # plain numbers only
    assert loaded == state
    reloaded = Preprocessor.from_state_dict(loaded)
    assert torch.equal(reloaded.features(df), pre.features(df))
    assert torch.equal(reloaded.targets(df), pre.targets(df))


def test_preprocessor_binary_target_needs_two_classes():
    df, spec = _table("pass_fail")
    one_class = df[df[spec.target] == 1]
    with pytest.raises(ConfigError, match=r"'passed' has 1 classes.*exactly 2"):
        Preprocessor.fit(one_class, spec)


def test_preprocessor_encodes_binary_target_as_float_classes():
    df, pre = _fitted("pass_fail")
    assert pre.classes == [0, 1]
    y = pre.targets(df)
    assert y.dtype == torch.float32
    assert torch.equal(y, torch.tensor(df["passed"].to_numpy(), dtype=torch.float32))


def test_regression_inverse_target_undoes_scaling():
    df, pre = _fitted("grades")
    train = df["grade"].iloc[:200].to_numpy()
    assert pre.target_mean == pytest.approx(train.mean())
    assert pre.target_std == pytest.approx(train.std())
    scaled = pre.targets(df)
    assert abs(scaled[:200].mean().item()) < 1e-5  # standardized on train
    back = pre.inverse_target(scaled)
    np.testing.assert_allclose(back.numpy(), df["grade"].to_numpy(), rtol=1e-5, atol=1e-4)


# ---- BatchIterator -------------------------------------------------------------------------
def _ids(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and a target that is the row id, so batches show which rows they hold."""
    ids = torch.arange(n, dtype=torch.float32)
    return ids[:, None].repeat(1, 2), ids


def _order(it: BatchIterator) -> list[int]:
    out = []
    for x, y in it:
        assert torch.equal(x[:, 0], y)  # x and y stay aligned
        out += y.long().tolist()
    return out


def test_shuffle_covers_every_row_once_per_epoch():
    x, y = _ids(103)
    it = BatchIterator(x, y, batch_size=10, shuffle=True, seed=7)
    epoch0 = _order(it)
    it.set_epoch(1)
    epoch1 = _order(it)
    assert sorted(epoch0) == sorted(epoch1) == list(range(103))
    assert epoch0 != epoch1  # reshuffled per epoch
    assert epoch0 != list(range(103))  # and actually shuffled

    twin = BatchIterator(x, y, batch_size=10, shuffle=True, seed=7)
    assert _order(twin) == epoch0  # same (seed, epoch) → same order
    twin.set_epoch(1)
    assert _order(twin) == epoch1
    assert _order(BatchIterator(x, y, batch_size=10, shuffle=True, seed=8)) != epoch0


def test_no_shuffle_keeps_row_order():
    x, y = _ids(25)
    it = BatchIterator(x, y, batch_size=4)
    it.set_epoch(3)
    assert _order(it) == list(range(25))


@pytest.mark.parametrize(
    ("n", "batch_size", "group"),
    [
        (10, 3, None),
        (10, 1, None),  # single-sample SGD
        (10, 10, None),  # full batch
        (10, 20, None),  # batch larger than the data
        (10, 3, 2),
        (10, 3, 4),
        (64, 8, 8),
        (65, 8, 8),
        (7, 1, 3),
    ],
)
def test_len_equals_yielded_items(n, batch_size, group):
    x, y = _ids(n)
    it = BatchIterator(x, y, batch_size, shuffle=True, group=group)
    items = list(it)
    assert len(it) == len(items)
    n_batches = math.ceil(n / batch_size)
    assert len(items) == math.ceil(n_batches / (group or 1))
    if group is None:
        assert all(isinstance(item, tuple) for item in items)
        batches = items
    else:
        assert all(isinstance(item, list) and 1 <= len(item) <= group for item in items)
        batches = [b for item in items for b in item]
    assert len(batches) == n_batches
    assert sum(len(b[1]) for b in batches) == n


def test_last_batch_is_smaller():
    x, y = _ids(10)
    sizes = [len(b[1]) for b in BatchIterator(x, y, batch_size=4, shuffle=True)]
    assert sizes == [4, 4, 2]


def test_bad_batch_size_and_mismatched_rows_raise():
    x, y = _ids(5)
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(x, y, batch_size=0)
    with pytest.raises(ValueError, match="5 rows but y has 4"):
        BatchIterator(x, y[:4], batch_size=2)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("n", [12, 13, 14, 31])
def test_ddp_train_shards_are_even_and_cover_every_row(world_size, n):
    x, y = _ids(n)
    shards = [
        BatchIterator(x, y, 4, shuffle=True, seed=1, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    orders = [_order(s) for s in shards]
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1  # same number of batches on every rank, or DDP hangs
    assert all(len(list(s)) == len(s) for s in shards)
    assert len({len(o) for o in orders}) == 1  # and the same number of rows
    everything = [i for o in orders for i in o]
    assert set(everything) == set(range(n))
    assert len(everything) - n <= world_size - 1  # padding only to even out the shards


def test_ddp_train_shards_even_when_fewer_rows_than_ranks():
    x, y = _ids(1)
    shards = [BatchIterator(x, y, 4, shuffle=True, rank=r, world_size=3) for r in range(3)]
    assert [len(list(s)) for s in shards] == [len(s) for s in shards] == [1, 1, 1]


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("n", [12, 13, 14, 31])
def test_ddp_eval_shards_are_disjoint_and_exact(world_size, n):
    x, y = _ids(n)
    shards = [BatchIterator(x, y, 4, rank=r, world_size=world_size) for r in range(world_size)]
    orders = [_order(s) for s in shards]
    assert all(len(list(s)) == len(s) for s in shards)
    assert sorted(i for o in orders for i in o) == list(range(n))  # every row exactly once
    assert max(map(len, orders)) - min(map(len, orders)) <= 1


# ---- TabularDataModule ---------------------------------------------------------------------
def _dm(**kwargs) -> TabularDataModule:
    kwargs = {"source": "moons", "options": {"n_samples": 500}, **kwargs}
    return TabularDataModule(**kwargs)


@pytest.mark.parametrize("batch_size", [0, -1, "abc", True, 2.5])
def test_bad_batch_size_raises(batch_size):
    with pytest.raises(ConfigError, match=r"^data\.batch_size=") as err:
        _dm(batch_size=batch_size)
    assert repr(batch_size) in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"val_fraction": 0}, "data.val_fraction"),
        ({"val_fraction": 1.2}, "data.val_fraction"),
        ({"test_fraction": 0}, "data.test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction"),
        ({"val_fraction": 0.7, "test_fraction": 0.4}, "data.val_fraction + data.test_fraction"),
        ({"eval_batch_size": 0}, "data.eval_batch_size"),
    ],
)
def test_bad_fractions_raise(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}="):
        _dm(**kwargs)


def test_unknown_source_lists_allowed_names():
    dm = TabularDataModule("mnist")
    with pytest.raises(ConfigError, match=r"^data\.source='mnist'") as err:
        dm.setup()
    assert all(name in str(err.value) for name in SOURCES)


def test_unknown_source_option_raises():
    dm = TabularDataModule("moons", options={"n_sample": 10})
    with pytest.raises(ConfigError, match=r"^data\.options=.*'moons'"):
        dm.setup()


def _flatten(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    items = list(loader)
    return [b for item in items for b in (item if isinstance(item, list) else [item])]


def test_full_batch_covers_the_train_split():
    dm = _dm(batch_size="full")
    dm.setup()
    x_train, y_train = dm.tensors["train"]
    loader = dm.train_dataloader()
    assert len(loader) == 1
    (batch,) = _flatten(loader)
    xb, yb = batch
    assert xb.shape == x_train.shape
    torch.testing.assert_close(xb[:, 0].sort().values, x_train[:, 0].sort().values)
    assert yb.sum() == y_train.sum()


def _stub_trainer(module, **counting):
    """The Trainer attributes the DataModule reads: placement and the step-counting knobs."""
    settings = {"limit_train_batches": 1.0, "max_steps": -1, "val_check_interval": 1.0}
    settings |= {"overfit_batches": 0, **counting}
    strategy = SimpleNamespace(root_device=torch.device("cpu"))
    return SimpleNamespace(
        lightning_module=module, strategy=strategy, global_rank=0, world_size=1, **settings
    )


class _Asks:
    """A module that opts into grouped mini-batches of 3."""

    def batches_per_step(self, batch_size, world_size):
        return 3


def test_groups_only_for_a_module_that_asks_for_them():
    dm = _dm(batch_size=16)
    dm.setup()
    n_train = len(dm.tensors["train"][0])
    plain = list(dm.train_dataloader())  # no trainer, no module: plain (x, y) batches
    assert plain and all(isinstance(b, tuple) and len(b) == 2 for b in plain)
    dm.trainer = _stub_trainer(object())  # a module without batches_per_step
    assert all(isinstance(b, tuple) for b in dm.train_dataloader())
    dm.trainer = _stub_trainer(_Asks())
    items = list(dm.train_dataloader())
    assert items and all(isinstance(item, list) for item in items)
    assert [len(item) for item in items[:-1]] == [3] * (len(items) - 1)
    assert all(isinstance(b, tuple) and len(b[1]) <= 16 for item in items for b in item)
    assert sum(len(b[1]) for item in items for b in item) == n_train
    # Lightning counts steps: groups would change what these settings mean.
    for counting in ({"limit_train_batches": 5}, {"max_steps": 7}, {"val_check_interval": 3}):
        dm.trainer = _stub_trainer(_Asks(), **counting)
        assert all(isinstance(b, tuple) for b in dm.train_dataloader()), counting


@pytest.mark.parametrize(
    ("source", "in_features", "out_features", "task"),
    [("moons", 2, 1, "binary"), ("grades", 2, 1, "regression"), ("pass_fail", 2, 1, "binary")],
)
def test_sizes_and_task_match_the_data(source, in_features, out_features, task):
    dm = TabularDataModule(source, options={"n_samples": 200}, batch_size=8)
    with pytest.raises(RuntimeError, match="setup"):
        _ = dm.in_features
    dm.setup()
    assert (dm.in_features, dm.out_features, dm.task) == (in_features, out_features, task)
    x, y = dm.tensors["train"]
    assert x.shape[1] == dm.in_features and x.dtype == y.dtype == torch.float32
    assert sum(len(dm.tensors[s][0]) for s in ("train", "val", "test")) == 200
    val = list(dm.val_dataloader())
    assert sum(len(b[1]) for b in val) == len(dm.tensors["val"][1])


def test_state_dict_restores_identical_tensors(tmp_path):
    dm = _dm(seed=0)
    dm.setup()
    torch.save(dm.state_dict(), tmp_path / "dm.pt")
    state = torch.load(tmp_path / "dm.pt", weights_only=True)
    assert state == dm.state_dict()

    fresh = _dm(seed=0)
    fresh.load_state_dict(state)
    fresh.setup()
    for split in ("train", "val", "test"):
        for got, want in zip(fresh.tensors[split], dm.tensors[split], strict=True):
            assert torch.equal(got, want)

    # The checkpoint's preprocessing wins over refitting, before or after setup().
    other = _dm(seed=1)
    other.setup()
    assert other.preprocessor.mean != dm.preprocessor.mean  # its own split fits differently
    other.load_state_dict(state)
    assert other.preprocessor == dm.preprocessor
    df = pd.concat(other.frames.values())
    expected = dm.preprocessor.features(df)
    assert torch.equal(torch.cat([other.tensors[s][0] for s in other.frames]), expected)
