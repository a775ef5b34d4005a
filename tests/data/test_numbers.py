"""Every number the data and model code computes, checked against an independent formula.

Split sizes per class, shuffle seeding and DDP shards, the toy generators' formulas, init
bounds, losses with class weights, the L1 penalty, predictions and metric targets in real
units, metric values, the epoch-mean train loss, eval loss over several batches, gradient
clipping, scheduler stepping, and the best/stopped epochs of ``LearningCurves``. Expected
values are written out by hand or computed with plain torch (``torch.nn.functional``, a
hand-written SGD loop), never by calling the code under test a second time.

    .venv/bin/python -m pytest tests/data/test_numbers.py -q
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from mlplab.data import BatchIterator, TableSpec, TabularDataModule, toy
from mlplab.data.splits import _allocate, split_indices
from mlplab.figures.callbacks import LearningCurves
from mlplab.models import ACTIVATIONS, Dense, MLPModule
from mlplab.models.module import make_metrics
from mlplab.train import train

CPU = torch.device("cpu")


def _ids(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and a target that are the row id, so batches show which rows they hold."""
    ids = torch.arange(n, dtype=torch.float32)
    return ids[:, None].repeat(1, 2), ids


def _rows(loader) -> list[int]:
    """Row ids in the order a loader yields them (groups flattened); x and y stay aligned."""
    out = []
    for item in loader:
        for x, y in item if isinstance(item, list) else [item]:
            assert torch.equal(x[:, 0], y)
            out += y.long().tolist()
    return out


def _placed(
    dm: TabularDataModule, rank: int = 0, world: int = 1, overfit: int = 0, module=None, **limits
):
    """Give the DataModule a stand-in trainer: its device, DDP rank/world, overfit flag, the
    module it trains and the step-counting limits (Lightning's defaults unless given)."""
    dm.trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=CPU),
        global_rank=rank,
        world_size=world,
        overfit_batches=overfit,
        lightning_module=module,
        **{"limit_train_batches": 1.0, "max_steps": -1, "val_check_interval": 1.0, **limits},
    )
    return dm


def _ids_dm(n_train: int = 0, **kwargs) -> TabularDataModule:
    """A set-up moons DataModule, its train tensors replaced by n_train row ids if given."""
    dm = TabularDataModule("moons", options={"n_samples": 200}, **kwargs)
    dm.setup()
    if n_train:
        dm.tensors["train"] = _ids(n_train)
        dm._on_device.clear()
    return dm


# ---- split: largest remainder, rounded sizes -----------------------------------------------
@pytest.mark.parametrize(
    ("total", "counts", "expected"),
    [
        (7, [10, 3, 7], [4, 1, 2]),  # raw 3.5, 1.05, 2.45: the spare row goes to the .5
        (3, [2, 5, 3], [1, 1, 1]),  # raw .6, 1.5, .9: spares to .9 and .6, not to the .5
        (15, [60, 25, 15], [9, 4, 2]),  # raw 9, 3.75, 2.25
        (10, [1, 1, 1], [4, 3, 3]),  # a tie goes to the first class
        (6, [2, 2, 2], [2, 2, 2]),  # exact shares, nothing to round
    ],
)
def test_allocate_gives_spare_rows_to_the_largest_remainders(total, counts, expected):
    got = _allocate(total, np.array(counts))
    assert got.tolist() == expected
    assert got.sum() == total


def test_split_counts_per_class_are_exact():
    # 100 rows: 60 / 25 / 15 per class. val 15 rows → 9, 4, 2; test 10 rows → 6, 3, 1.
    y = np.r_[np.zeros(60), np.ones(25), np.full(15, 2)].astype(int)
    df = pd.DataFrame({"a": np.arange(100.0), "y": np.random.default_rng(0).permutation(y)})
    spec = TableSpec(target="y", task="multiclass", numeric=("a",))
    parts = split_indices(df, spec, 0.15, 0.10, seed=3)
    counts = {s: np.bincount(df["y"].to_numpy()[parts[s]], minlength=3).tolist() for s in parts}
    assert counts == {"val": [9, 4, 2], "test": [6, 3, 1], "train": [45, 18, 12]}


def test_split_sizes_are_rounded_not_floored():
    df, spec = toy.make_grades(n_samples=999)  # regression: one group
    parts = split_indices(df, spec, 0.15, 0.10, seed=0)
    # round(149.85) = 150, round(99.9) = 100: int() would give 149 and 99.
    assert {s: len(p) for s, p in parts.items()} == {"train": 749, "val": 150, "test": 100}


# ---- BatchIterator: shuffle seeding and DDP shards -----------------------------------------
def _order(seed: int, epoch: int, n: int = 40, **kwargs) -> list[int]:
    it = BatchIterator(*_ids(n), batch_size=7, shuffle=True, seed=seed, **kwargs)
    it.set_epoch(epoch)
    return _rows(it)


def test_shuffle_is_a_function_of_seed_and_epoch_with_the_data_fixed():
    orders = {(s, e): _order(s, e) for s in (0, 1, 2) for e in (0, 1, 2)}
    assert all(sorted(o) == list(range(40)) for o in orders.values())
    # Nine (seed, epoch) pairs, nine different orders: the seed matters at every epoch and
    # neighbouring pairs such as (0, 1) and (1, 0) don't collide.
    assert len({tuple(o) for o in orders.values()}) == 9
    for (s, e), order in orders.items():
        assert _order(s, e) == order  # a fresh iterator, same (seed, epoch) → same order
    it = BatchIterator(*_ids(40), batch_size=7, shuffle=True, seed=1)
    it.set_epoch(2)
    it.set_epoch(0)  # going back (a resume) reproduces the epoch's order
    assert _rows(it) == orders[(1, 0)]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [12, 13, 14, 31])
def test_ddp_train_shards_are_one_shared_permutation_dealt_out(world, n):
    """Rows are dealt from one (seed, epoch) permutation, padded by wrapping around: so shards
    are disjoint except for the < world padding rows, and together cover every row."""
    per_rank = math.ceil(n / world)
    shards = [_order(5, 1, n=n, rank=r, world_size=world) for r in range(world)]
    assert [len(s) for s in shards] == [per_rank] * world
    dealt = [shards[i % world][i // world] for i in range(per_rank * world)]  # round robin
    assert sorted(dealt[:n]) == list(range(n))  # the first n dealt rows: each row once
    assert dealt[n:] == dealt[: len(dealt) - n]  # padding repeats the permutation's start
    assert _order(5, 2, n=n, rank=0, world_size=world) != shards[0]  # reshuffled per epoch


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [12, 13, 14, 31])
def test_ddp_eval_shards_are_contiguous_blocks(world, n):
    for rank in range(world):
        it = BatchIterator(*_ids(n), batch_size=4, rank=rank, world_size=world)
        block = list(range(rank * n // world, (rank + 1) * n // world))
        assert _rows(it) == block
        assert it.rows == len(block)
        sizes = [len(y) for _, y in it]  # batches of 4, the last one smaller
        assert sizes[:-1] == [4] * (len(sizes) - 1) and 1 <= sizes[-1] <= 4


# ---- DataModule → loaders ------------------------------------------------------------------
def test_train_loader_shuffles_with_the_data_seed():
    dm = _ids_dm(n_train=50, seed=5, batch_size=8)
    loader = dm.train_dataloader()
    for epoch in (0, 3):
        loader.set_epoch(epoch)
        assert _rows(loader) == _order(5, epoch, n=50), epoch  # batch size doesn't matter
    assert _rows(loader) != _order(6, 3, n=50)


def test_auto_group_size():
    # About 32768 rows per training_step on one device, one mini-batch per step under DDP.
    mlp = _module()

    def group(batch_size: int, module=mlp, world: int = 1, **limits):
        dm = _placed(_ids_dm(batch_size=batch_size), world=world, module=module, **limits)
        return dm.train_dataloader().group

    assert group(16) == 2048 and group(100) == 327 and group(40_000) == 1
    assert group(16, module=_module(group_batches=3)) == 3
    assert group(16, world=2) == 1
    # Groups are the module's choice; and off whenever Lightning counts training steps.
    assert group(16, module=torch.nn.Linear(2, 1)) is None
    assert group(16, limit_train_batches=2) is None and group(16, max_steps=10) is None
    assert group(16, val_check_interval=0.5) is None


def test_full_batch_is_one_batch_per_rank():
    for world in (1, 2, 3):
        shards = []
        for rank in range(world):
            dm = _placed(_ids_dm(n_train=101, batch_size="full"), rank=rank, world=world)
            loader = dm.train_dataloader()
            assert len(loader) == 1 and len(list(loader)) == 1
            shards.append(_rows(loader))
        assert [len(s) for s in shards] == [math.ceil(101 / world)] * world
        assert set().union(*shards) == set(range(101))


def test_overfit_batches_keeps_the_batches_fixed():
    assert _placed(_ids_dm(n_train=30), overfit=1).train_dataloader().shuffle is False
    assert _placed(_ids_dm(n_train=30), overfit=0).train_dataloader().shuffle is True


def test_eval_loaders_use_eval_batch_size_and_shard_under_ddp():
    dm = _ids_dm(batch_size=64, eval_batch_size=7)
    n_val = len(dm.tensors["val"][1])  # 40
    sizes = [len(y) for _, y in dm.val_dataloader()]
    assert sizes == [7] * (n_val // 7) + [n_val % 7]
    assert sum(len(y) for _, y in dm.test_dataloader()) == len(dm.tensors["test"][1])

    dm.tensors["val"] = _ids(n_val)
    dm._on_device.clear()
    halves = [_rows(_placed(dm, rank=r, world=2).val_dataloader()) for r in (0, 1)]
    assert halves == [list(range(20)), list(range(20, 40))]


def test_class_weights_only_with_balance_classes():
    assert _ids_dm().class_weights is None
    balanced = _ids_dm(balance_classes=True)
    y = balanced.tensors["train"][1]
    n_pos = int(y.sum())
    assert balanced.class_weights == pytest.approx([(len(y) - n_pos) / n_pos])  # BCE pos_weight
    grades = TabularDataModule("grades", options={"n_samples": 100}, balance_classes=True)
    grades.setup()
    assert grades.class_weights is None  # regression has no classes


# ---- toy generators: their documented formulas, noise off ----------------------------------
def test_moons_lie_on_their_half_circles():
    df, _ = toy.make_moons(n_samples=101, noise=0.0, seed=1)
    x1, x2, green = df["x1"].to_numpy(), df["x2"].to_numpy(), df["green"].to_numpy()
    assert len(df) == 101 and (green == 0).sum() == 50 and (green == 1).sum() == 51
    red, grn = green == 0, green == 1
    np.testing.assert_allclose(x1[red] ** 2 + x2[red] ** 2, 1.0)  # unit circle, upper half
    assert (x2[red] >= 0).all()
    np.testing.assert_allclose((x1[grn] - 1) ** 2 + (x2[grn] - 0.5) ** 2, 1.0)  # shifted, lower
    assert (x2[grn] <= 0.5).all()


def test_circles_green_disc_inside_red_ring():
    df, _ = toy.make_circles(n_samples=101, noise=0.0, factor=0.3, seed=1)
    radius = np.hypot(df["x1"], df["x2"]).to_numpy()
    green = df["green"].to_numpy()
    assert (green == 0).sum() == 50 and (green == 1).sum() == 51
    np.testing.assert_allclose(radius[green == 0], 1.0)
    np.testing.assert_allclose(radius[green == 1], 0.3)


def test_spiral_arms_are_half_a_turn_apart():
    turns = 1.5
    df, _ = toy.make_spiral(n_samples=201, noise=0.0, turns=turns, seed=1)
    x1, x2, green = df["x1"].to_numpy(), df["x2"].to_numpy(), df["green"].to_numpy()
    r = np.hypot(x1, x2)  # = t / (turns·2π): radius grows linearly with the angle t
    t = r * turns * 2 * np.pi
    angle = t + np.pi * green
    np.testing.assert_allclose(x1, r * np.cos(angle), atol=1e-12)
    np.testing.assert_allclose(x2, r * np.sin(angle), atol=1e-12)
    assert (green == 0).sum() == 100 and (green == 1).sum() == 101


def test_xor_is_green_where_x1_times_x2_is_positive():
    df, _ = toy.make_xor(n_samples=500, noise=0.0, seed=1)
    expected = (df["x1"] * df["x2"] > 0).astype(int)
    assert (df["green"] == expected).all()
    assert 0.3 < expected.mean() < 0.7


def test_pass_fail_follows_the_study_score():
    with np.errstate(over="ignore"):  # σ of a huge logit: exp overflows to exactly 0 or 1
        df, _ = toy.make_pass_fail(n_samples=2000, noise=1e-3, seed=1)
    lectures, hours = df["lectures"].to_numpy(), df["hours"].to_numpy()
    assert sorted(set(lectures)) == list(range(13))  # 0..12 lectures attended
    assert hours.min() >= 0 and 20 < hours.max() <= 30  # a long tail, clipped at 30 h
    score = 0.5 * lectures + 0.4 * hours - 5.0
    sure = np.abs(score) > 0.02  # noise → 0: a step function away from the boundary
    assert (df["passed"].to_numpy()[sure] == (score[sure] > 0)).all()


def test_grades_formula():
    df, _ = toy.make_grades(n_samples=500, noise=0.0, seed=1)
    lectures, hours = df["lectures"].to_numpy(), df["hours"].to_numpy()
    expected = np.clip(25 + 3 * lectures + 35 * (1 - np.exp(-hours / 6)), 0, 100)
    np.testing.assert_allclose(df["grade"].to_numpy(), expected)


def test_synthetic_classes_are_balanced():
    df, _ = toy.make_synthetic(n_samples=1000, n_features=3, seed=2)
    assert df["label"].sum() == 500  # split at the median score


# ---- the dense layer ------------------------------------------------------------------------
def test_dense_init_is_uniform_within_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    layer = Dense(100, 50)
    bound = 1 / math.sqrt(100)
    for p in (layer.W, layer.b):  # every entry ~ U(−1/√in, 1/√in), biases too
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.9 * bound
    assert layer.b.abs().mean() > 0.3 * bound


def test_scratch_activations_are_the_lecture_functions():
    z = torch.tensor([-2.0, 0.0, math.log(3)])
    torch.testing.assert_close(ACTIVATIONS["sigmoid"](z), 1 / (1 + torch.exp(-z)))
    assert ACTIVATIONS["sigmoid"](z)[2].item() == pytest.approx(0.75)
    assert ACTIVATIONS["tanh"](z)[2].item() == pytest.approx(0.8)  # (3 − 1/3) / (3 + 1/3)
    assert ACTIVATIONS["relu"](z).tolist() == pytest.approx([0.0, 0.0, math.log(3)])
    assert torch.equal(ACTIVATIONS["identity"](z), z)


# ---- losses, penalty, predictions -----------------------------------------------------------
def _module(**kwargs) -> MLPModule:
    return MLPModule(**{"in_features": 2, "out_features": 1, "task": "binary", **kwargs})


@pytest.mark.parametrize("layer", ["torch", "scratch"])
def test_l1_penalty_counts_weights_not_biases(layer):
    module = _module(hidden_sizes=[3], layer=layer)
    with torch.no_grad():
        for name, p in module.net.named_parameters():  # nn.Linear: weight, bias; Dense: W, b
            p.fill_(-0.5 if name.endswith(("weight", "W")) else 2.0)
    # |−0.5| · (2·3 + 3·1) weight entries = 4.5; the 3 + 1 biases don't count.
    assert module.l1_penalty().item() == pytest.approx(4.5)


def test_binary_loss_uses_pos_weight():
    module = _module(class_weights=[3.0])
    out, y = torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, 0.0])
    # Positives weigh 3: (3·(−log σ(0)) + (−log(1 − σ(2)))) / 2.
    expected = (3 * math.log(2) + math.log(1 + math.exp(2))) / 2
    assert module.loss(out, y).item() == pytest.approx(expected, rel=1e-6)


def test_multiclass_loss_uses_class_weights():
    module = _module(out_features=3, task="multiclass", class_weights=[1.0, 2.0, 0.5])
    out = torch.tensor([[0.0, math.log(3), 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([1, 2])
    # −log softmax: −log(3/5) for row 1 (class 1, weight 2), log 3 for row 2 (weight 1/2);
    # the weighted mean divides by the weights' sum.
    expected = (2 * -math.log(3 / 5) + 0.5 * math.log(3)) / (2 + 0.5)
    assert module.loss(out, y).item() == pytest.approx(expected, rel=1e-6)


def test_balance_classes_weights_the_multiclass_test_loss(make_cfg):
    cfg = make_cfg("data=wine", "data.balance_classes=true", "trainer.max_epochs=2")
    metrics = train(cfg)
    dm = instantiate(cfg.data)  # the same seeded split and preprocessing
    dm.setup()
    counts = torch.bincount(dm.tensors["train"][1], minlength=3).double()
    weights = (counts.sum() / (3 * counts)).float()  # n / (k · n_c) on the train split
    best = MLPModule.load_from_checkpoint(
        Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt", weights_only=True
    )
    x, y = dm.tensors["test"]
    with torch.no_grad():
        out = best(x)
    expected = F.cross_entropy(out, y, weight=weights).item()
    assert metrics["test/loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - F.cross_entropy(out, y).item()) > 1e-3  # the weights matter here


def test_predictions_and_metric_targets():
    binary = _module()
    z = torch.tensor([[0.0], [math.log(3)]])
    assert binary.predictions(z).tolist() == pytest.approx([0.5, 0.75])  # σ(z), shape (B,)
    target = binary._metric_target(torch.tensor([0.0, 1.0]))
    assert target.dtype == torch.long and target.tolist() == [0, 1]

    multi = _module(out_features=3, task="multiclass")
    out = torch.tensor([[0.0, math.log(3), 0.0], [math.log(2), 0.0, 0.0]])
    probs = multi.predictions(out)  # softmax over the classes of each row
    assert probs.tolist()[0] == pytest.approx([0.2, 0.6, 0.2])
    assert probs.tolist()[1] == pytest.approx([0.5, 0.25, 0.25])

    reg = _module(task="regression", target_mean=50.0, target_std=10.0)
    assert reg.predictions(torch.tensor([[1.5], [-2.0]])).tolist() == pytest.approx([65, 30])
    assert reg._metric_target(torch.tensor([-1.0, 0.5])).tolist() == pytest.approx([40, 55])


# ---- metrics: names and values ---------------------------------------------------------------
def _computed(task: str, stage: str, preds, target, num_classes: int = 1) -> dict[str, float]:
    metrics = make_metrics(task, num_classes, stage)
    metrics.update(torch.tensor(preds), torch.tensor(target))
    return {k: float(v) for k, v in metrics.compute().items()}


def test_binary_metrics():
    preds, target = [0.9, 0.4, 0.6, 0.2, 0.7], [1, 1, 0, 0, 1]
    # Predicted 1, 0, 1, 0, 1: TP 2, FP 1, FN 1 → acc 3/5, F1 = 2·2 / (2·2 + 1 + 1) = 2/3.
    # AUROC: 5 of the 3·2 (positive, negative) score pairs are ordered right.
    assert _computed("binary", "val", preds, target) == pytest.approx(
        {"val/acc": 3 / 5, "val/f1": 2 / 3, "val/auroc": 5 / 6}
    )
    assert _computed("binary", "train", preds, target) == pytest.approx({"train/acc": 3 / 5})


def test_multiclass_metrics():
    onehot = torch.eye(3)[[0, 0, 0, 1, 2, 2]] * 0.8 + 0.2 / 3  # predicted 0 0 0 1 2 2
    target = [0, 0, 0, 0, 1, 2]
    # acc counts rows: 4/6 right (not the 0.58 mean of per-class recalls 3/4, 0, 1).
    # Macro F1: class 0 (TP 3, FN 1) 6/7, class 1 (FP 1, FN 1) 0, class 2 (TP 1, FP 1) 2/3.
    got = _computed("multiclass", "test", onehot.tolist(), target, num_classes=3)
    assert got == pytest.approx({"test/acc": 4 / 6, "test/f1": (6 / 7 + 0 + 2 / 3) / 3})


def test_regression_metrics():
    preds, target = [3.0, 5.0, 1.0], [2.0, 5.0, 4.0]
    # errors 1, 0, −3: MSE 10/3, MAE 4/3; R² = 1 − 10 / Σ(y − 11/3)² = 1 − 10 / (14/3).
    assert _computed("regression", "val", preds, target) == pytest.approx(
        {"val/mse": 10 / 3, "val/mae": 4 / 3, "val/r2": 1 - 30 / 14}
    )
    assert _computed("regression", "train", preds, target) == pytest.approx({"train/mse": 10 / 3})


# ---- training against a hand-written loop --------------------------------------------------
class Record(L.Callback):
    """Each epoch's logged train/val numbers (read after the module logged them)."""

    def __init__(self) -> None:
        self.train: list[tuple[float, float]] = []
        self.val: list[tuple[float, float]] = []

    def _take_train(self, trainer) -> None:
        m = trainer.callback_metrics
        if "train/loss" in m:
            self.train.append((float(m["train/loss"]), float(m["train/acc"])))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self._take_train(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._take_train(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        self.val.append((float(m["val/loss"]), float(m["val/acc"])))


def _fit(dm, module, epochs: int, callbacks=(), **kwargs) -> None:
    trainer = L.Trainer(
        **kwargs,
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule=dm)


def _reference(net: nn.Module, dm, epochs: int, lr: float, gamma: float, l1: float, clip):
    """Plain torch: mini-batch SGD over the same batches, StepLR(step_size=1, gamma) per epoch.

    Returns per-epoch (train loss, train acc), (val loss, val acc): the train numbers are
    row-weighted means over the epoch's batches, taken before each step.
    """
    x, y = dm.tensors["train"]
    xv, yv = dm.tensors["val"]
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Linear)]
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    train, val = [], []
    for epoch in range(epochs):
        batches = BatchIterator(x, y, dm.hparams.batch_size, shuffle=True, seed=dm.hparams.seed)
        batches.set_epoch(epoch)
        loss_sum, right, rows = 0.0, 0, 0
        for xb, yb in batches:
            z = net(xb).squeeze(-1)
            loss = F.binary_cross_entropy_with_logits(z, yb)
            loss = loss + l1 * sum(w.abs().sum() for w in weights)
            opt.zero_grad()
            loss.backward()
            if clip == "norm":
                nn.utils.clip_grad_norm_(net.parameters(), 0.05)
            elif clip == "value":
                nn.utils.clip_grad_value_(net.parameters(), 0.01)
            opt.step()
            loss_sum += loss.item() * len(yb)
            right += int(((z > 0).float() == yb).sum())
            rows += len(yb)
        train.append((loss_sum / rows, right / rows))
        with torch.no_grad():
            zv = net(xv).squeeze(-1)
            val_loss = F.binary_cross_entropy_with_logits(zv, yv).item()
            val.append((val_loss, ((zv > 0).float() == yv).float().mean().item()))
        for group in opt.param_groups:
            group["lr"] *= gamma
    return train, val


@pytest.mark.parametrize(
    ("group", "l1", "clip"),
    [
        ("auto", 0.0, None),  # a whole epoch in one training_step
        (1, 0.0, "norm"),
        (2, 0.0, "value"),
        ("auto", 0.01, None),
    ],
)
def test_training_matches_a_hand_written_sgd_loop(group, l1, clip):
    # 117 train rows in batches of 50: 50, 50, 17, so a mean of batch means ≠ the row mean;
    # 39 val rows in eval batches of 16: 16, 16, 7.
    dm = TabularDataModule(
        "moons",
        options={"n_samples": 195, "noise": 0.3},
        batch_size=50,
        seed=3,
        eval_batch_size=16,
    )
    dm.setup()
    torch.manual_seed(0)
    module = MLPModule(
        in_features=2,
        out_features=1,
        task="binary",
        hidden_sizes=[8],
        l1=l1,
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.5},
        scheduler={"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1, "gamma": 0.5},
        gradient_clip_val=0.0 if clip is None else (0.05 if clip == "norm" else 0.01),
        gradient_clip_algorithm=clip or "norm",
        group_batches=group,
    )
    net = copy.deepcopy(module.net)
    record = Record()
    _fit(dm, module, epochs=3, callbacks=[record])
    want_train, want_val = _reference(net, dm, epochs=3, lr=0.5, gamma=0.5, l1=l1, clip=clip)

    np.testing.assert_allclose(record.train, want_train, rtol=1e-5)  # (loss, acc) per epoch
    np.testing.assert_allclose(record.val, want_val, rtol=1e-5)
    for got, want in zip(module.net.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # The check has teeth: the loss moved between epochs.
    assert abs(want_train[0][0] - want_train[2][0]) > 1e-3


class GraphProbe(L.Callback):
    """After each training_step: does the module's running epoch-loss sum require grad?"""

    def __init__(self) -> None:
        self.keeps_graph: list[bool] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        total = pl_module._loss_sum
        self.keeps_graph.append(isinstance(total, torch.Tensor) and total.requires_grad)


def test_epoch_loss_sum_keeps_no_autograd_graph():
    """A sum of undetached losses would chain every step's graph until the epoch ends."""
    dm = TabularDataModule("moons", options={"n_samples": 100}, batch_size=16)
    dm.setup()
    probe = GraphProbe()
    _fit(dm, _module(hidden_sizes=[4], group_batches=1), epochs=2, callbacks=[probe])
    assert len(probe.keeps_graph) == 2 * 4  # 60 train rows: 4 steps an epoch
    assert not any(probe.keeps_graph), "the epoch's loss sum holds an autograd graph"


# ---- ReduceLROnPlateau: what it watches ------------------------------------------------------
PLATEAU = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "factor": 0.5, "patience": 0}


class EpochMetrics(L.Callback):
    """Per epoch: the logged metrics at its end, and the lr in force after it."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []
        self.lr: list[float] = []
        self.validated: list[int] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self.validated.append(trainer.current_epoch)

    def _take(self, trainer) -> None:
        self.metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.lr.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self._take(trainer)  # the previous epoch ended: its scheduler step is done

    def on_train_end(self, trainer, pl_module) -> None:
        self._take(trainer)


def _plateau(values: list[float], mode: str, lr: float) -> list[float]:
    """ReduceLROnPlateau(factor=0.5, patience=0), written out: the lr after each value."""
    best, lrs = (math.inf if mode == "min" else -math.inf), []
    for v in values:
        better = v < best * (1 - 1e-4) if mode == "min" else v > best * (1 + 1e-4)
        best, lr = (v, lr) if better else (best, lr * 0.5)
        lrs.append(lr)
    return lrs


def _plateau_run(scheduler: dict, epochs: int = 8, **trainer_kwargs) -> EpochMetrics:
    dm = TabularDataModule("moons", options={"n_samples": 200, "noise": 0.3}, batch_size=16)
    dm.setup()
    torch.manual_seed(0)
    module = _module(
        hidden_sizes=[8],
        optimizer={"_target_": "torch.optim.SGD", "lr": 2.0},  # large: val/loss bounces
        scheduler=scheduler,
    )
    record = EpochMetrics()
    _fit(dm, module, epochs=epochs, callbacks=[record], **trainer_kwargs)
    return record


@pytest.mark.parametrize(
    ("config", "watched", "mode", "others"),
    [
        ({"monitor": "val/acc", "mode": "max"}, "val/acc", "max", ["val/loss", "-val/acc"]),
        ({"mode": "min"}, "val/loss", "min", ["train/loss"]),  # monitor defaults to val/loss
    ],
)
def test_plateau_scheduler_steps_on_its_monitor(config, watched, mode, others):
    record = _plateau_run({**PLATEAU, **config})

    def series(key: str) -> list[float]:
        sign = -1 if key.startswith("-") else 1
        return [sign * m[key.lstrip("-")] for m in record.metrics]

    expected = _plateau(series(watched), mode, lr=2.0)
    assert record.lr == expected
    assert expected[-1] < 2.0  # the lr did come down
    for other in others:  # and watching something else would have changed it differently
        assert _plateau(series(other), mode, lr=2.0) != expected, other


def test_plateau_scheduler_waits_for_the_first_validation():
    record = _plateau_run({**PLATEAU, "mode": "min"}, epochs=2, check_val_every_n_epoch=2)
    assert "val/loss" not in record.metrics[0]  # epoch 0: no validation, nothing to react to
    assert record.lr == [2.0, 2.0]  # epoch 1's val/loss is the first: an improvement


# ---- LearningCurves: best and stopped epochs -------------------------------------------------
def _curves_end(tmp_path, val: dict[int, float], stopped: int | None) -> LearningCurves:
    curves = LearningCurves()
    curves._val = dict(val)
    curves._train = {e: 1.0 for e in val}
    stopper = None if stopped is None else SimpleNamespace(stopped_epoch=stopped)
    trainer = SimpleNamespace(
        is_global_zero=True,
        early_stopping_callback=stopper,
        default_root_dir=str(tmp_path),
        loggers=[],
    )
    curves.on_fit_end(trainer, SimpleNamespace(hparams={}))
    return curves


def test_best_epoch_is_the_first_finite_minimum(tmp_path):
    val = {0: math.nan, 1: 0.5, 2: 0.3, 3: 0.3, 4: math.inf, 5: 0.35}
    assert _curves_end(tmp_path, val, stopped=None).best_epoch == 2
    assert _curves_end(tmp_path, {0: math.nan, 1: math.nan}, stopped=None).best_epoch is None


def test_stopped_epoch_is_none_unless_early_stopping_stopped(tmp_path):
    val = {0: 0.5, 1: 0.4}
    assert _curves_end(tmp_path, val, stopped=None).stopped_epoch is None
    assert _curves_end(tmp_path, val, stopped=0).stopped_epoch is None  # EarlyStopping: never
    assert _curves_end(tmp_path, val, stopped=7).stopped_epoch == 7


# ---- two bugs these tests found (fixed in b0aa18a) -------------------------------------------
def test_weighted_multiclass_val_loss_does_not_depend_on_eval_batch_size():
    """Class-weighted cross-entropy divides by Σ w_y, so batch means must pool by Σ w_y, not
    by rows, to give the split's loss (and the same number under DDP sharding)."""
    got = []
    for eval_batch_size in (8, 4096):
        dm = TabularDataModule(
            "wine", balance_classes=True, eval_batch_size=eval_batch_size, seed=0
        )
        dm.setup()
        torch.manual_seed(0)
        module = MLPModule(
            dm.in_features,
            dm.out_features,
            dm.task,
            hidden_sizes=[8],
            class_weights=dm.class_weights,
        )
        trainer = L.Trainer(
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        got.append(trainer.validate(module, datamodule=dm, verbose=False)[0]["val/loss"])
        x, y = dm.tensors["val"]
        with torch.no_grad():
            weights = torch.tensor(dm.class_weights)
            expected = F.cross_entropy(module(x), y, weight=weights).item()
    assert got[1] == pytest.approx(expected, rel=1e-6)  # one batch: the whole split's loss
    assert got[0] == pytest.approx(expected, rel=1e-6)  # 8 rows a batch: should be the same


def test_plateau_scheduler_only_reacts_to_epochs_with_validation():
    """trainer.callback_metrics keeps the last val/loss: in an epoch without validation
    (check_val_every_n_epoch=2) stepping on it again would count a bad epoch."""
    record = _plateau_run({**PLATEAU, "mode": "min"}, epochs=6, check_val_every_n_epoch=2)
    assert record.validated == [1, 3, 5]
    after = _plateau([record.metrics[e]["val/loss"] for e in (1, 3, 5)], "min", lr=2.0)
    assert record.lr == [2.0, after[0], after[0], after[1], after[1], after[2]]
