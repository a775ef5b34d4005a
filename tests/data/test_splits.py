"""K-fold cross-validation: the folds (``mlplab.data.splits``), a fold as a normal run
(``data.cv_folds=K data.cv_fold=k``), and ``mlplab-train cv=K`` as one population whose
member k is that run."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from mlplab.config import compose_config, compose_run
from mlplab.data import TabularDataModule
from mlplab.data.preprocess import Preprocessor
from mlplab.data.sources import load_source
from mlplab.data.spec import TableSpec
from mlplab.data.splits import assign_folds, cv_split, split_indices
from mlplab.errors import ConfigError
from mlplab.evaluate import evaluate
from mlplab.train import main as train_main
from mlplab.train import train

FAST = [
    "trainer.max_epochs=4",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
]
MOONS = ["data=moons", "data.options.n_samples=300"]
GRADES = ["data=grades", "data.options.n_samples=301"]  # 301: folds with left-over rows


# ---- the folds ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("counts", "folds"),
    [
        ([120, 120], 3),  # K divides N: no left-overs
        ([50, 30, 21], 4),  # 101 rows: 1 left over
        ([100, 4], 3),  # a small class: it stays in every fold
        ([7, 4], 4),  # the small class has exactly K rows: it gives no left-over
        ([37], 5),  # regression: one group
    ],
)
def test_folds_partition_the_rows_stratified(counts, folds):
    codes = np.repeat(np.arange(len(counts)), counts)
    fold = assign_folds(codes, folds, seed=3)
    n = len(codes)
    held = [np.flatnonzero(fold == k) for k in range(folds)]
    leftover = np.flatnonzero(fold == -1)
    assert set(np.unique(fold)) <= {-1, *range(folds)}
    assert [len(h) for h in held] == [n // folds] * folds
    assert len(leftover) == n % folds
    assert sorted(np.concatenate([*held, leftover])) == list(range(n))  # disjoint, all rows
    for c, n_c in enumerate(counts):
        # the left-overs: a share of each class in proportion to its size (< 1 row off),
        # unless that would leave a fold without the class ...
        taken = int(np.sum(codes[leftover] == c))
        assert taken <= n_c - folds
        if all(m - folds >= n % folds for m in counts):  # no class near that limit
            assert abs(taken - (n % folds) * n_c / n) < 1
        # ... and every fold holds ⌊m/K⌋ or ⌈m/K⌉ of the class's m rows in the folds, so it is
        # within one row of the class's share of the fold, and never missing
        in_fold = [int(np.sum(codes[h] == c)) for h in held]
        assert max(in_fold) - min(in_fold) <= 1 and min(in_fold) >= 1
        assert all(abs(got - (n // folds) * n_c / n) <= 1 for got in in_fold), in_fold


def test_folds_are_seeded():
    codes = np.repeat([0, 1], [60, 41])
    first = assign_folds(codes, 4, seed=0)
    assert np.array_equal(first, assign_folds(codes, 4, seed=0))
    assert not np.array_equal(first, assign_folds(codes, 4, seed=1))


@pytest.mark.parametrize(
    ("source", "options", "folds"),
    [
        ("moons", {"n_samples": 301}, 4),
        ("wine", {}, 5),  # multiclass
        ("grades", {"n_samples": 301}, 4),  # regression
    ],
)
def test_each_fold_is_a_datamodule_with_the_same_test_rows(source, options, folds):
    """Fold k's val is fold k, its train every other train+val row; the test rows are those of
    the run without CV; the preprocessor is fitted on the fold's own training rows."""
    plain = TabularDataModule(source, options, seed=7)
    plain.setup()
    pool = set(plain.frames["train"].index) | set(plain.frames["val"].index)
    vals = []
    for k in range(folds):
        dm = TabularDataModule(source, options, seed=7, cv_folds=folds, cv_fold=k)
        dm.setup()
        train, val, test = (set(dm.frames[s].index) for s in ("train", "val", "test"))
        assert test == set(plain.frames["test"].index)
        assert len(val) == len(pool) // folds and train == pool - val
        assert len(dm.tensors["val"][0]) == len(val)
        _, spec = load_source(source, **options)
        fitted = Preprocessor.fit(dm.frames["train"], spec).state_dict()
        assert json.dumps(dm.preprocessor.state_dict(), default=str) == json.dumps(
            fitted, default=str
        )
        vals.append(val)
    assert set().union(*vals) <= pool and sum(len(v) for v in vals) == len(set().union(*vals))
    assert len(pool - set().union(*vals)) == len(pool) % folds  # the left-overs


def test_data_with_its_own_split_column_is_refused():
    df = pd.DataFrame({"x": range(30), "y": [0, 1] * 15, "split": ["train"] * 20 + ["val"] * 10})
    spec = TableSpec(target="y", task="binary", numeric=("x",), split_by="split")
    parts = split_indices(df, TableSpec(target="y", task="binary"), 0.2, 0.2, seed=0)
    with pytest.raises(ConfigError, match="data.cv_folds=3 .* own column 'split'"):
        cv_split(df, spec, parts, 3, 0, seed=0)


# ---- cv=K: member k is the stand-alone run of fold k -----------------------------------------
@pytest.mark.parametrize("data", [MOONS, GRADES], ids=["classification", "regression"])
def test_each_member_equals_its_stand_alone_fold_run(tmp_path, data):
    sgd = [*data, *FAST, "optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.5"]
    means = train(compose_run(tmp_path / "cv", *sgd, "cv=3"))
    summary = pd.read_csv(tmp_path / "cv" / "summary.csv")
    assert list(summary["data.cv_fold"]) == [0, 1, 2] and set(summary.status) == {"ok"}
    metrics = [c for c in summary.columns if "/" in c and c != "run_dir"]
    assert summary["val/loss"].nunique() == 3  # the folds really differ
    for k in range(3):
        fold = ["data.cv_folds=3", f"data.cv_fold={k}"]
        alone = train(compose_run(tmp_path / f"fold{k}", *sgd, *fold))
        assert set(metrics) == set(alone)
        for key in alone:  # rel: MSE in target units (~40 %²) is summed in another order
            got = summary.iloc[k][key]
            assert got == pytest.approx(alone[key], rel=1e-6, abs=1e-5), (k, key)
    for key in metrics:
        assert means[key] == pytest.approx(summary[key].mean(), abs=1e-9)
        assert means[f"{key}.std"] == pytest.approx(summary[key].std(ddof=1), abs=1e-9)


def _cli(tmp_path, monkeypatch, *args: str) -> None:
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    train_main([*FAST, "logger=csv", f"paths.log_dir={tmp_path}", *args])


def test_cv_cli_reports_mean_and_std(tmp_path, monkeypatch, capsys):
    _cli(tmp_path, monkeypatch, *MOONS, "run_name=cv", "cv=3", "trainer.enable_progress_bar=false")
    out = capsys.readouterr().out
    assert "cross-validation: 3 of 3 folds trained (80 held-out rows each;" in out
    assert "mean and std over 3 folds" in out and "val/acc.std" in out
    run_dir = tmp_path / "train" / "cv"
    summary = pd.read_csv(run_dir / "summary.csv")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(summary) == 3 and list(summary["data.cv_fold"]) == [0, 1, 2]
    assert metrics["val/acc"] == pytest.approx(summary["val/acc"].mean(), abs=1e-9)
    assert metrics["test/acc.std"] == pytest.approx(summary["test/acc"].std(), abs=1e-9)
    assert "cv: 3" in (run_dir / "config.yaml").read_text()  # rerun=<dir> repeats it
    member = (run_dir / "member_002" / "config.yaml").read_text()
    assert "cv_folds: 3" in member and "cv_fold: 2" in member and "cv: null" in member
    # a member's checkpoint is a normal run's: mlplab-eval scores it on the same test rows
    ckpt = run_dir / "member_002" / "checkpoints" / "best.ckpt"
    scored = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "accelerator=cpu"]))
    assert scored["test/acc"] == pytest.approx(summary["test/acc"][2], abs=1e-6)
    assert scored["test/loss"] == pytest.approx(summary["test/loss"][2], abs=1e-6)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([*MOONS, "cv=1"], "cv=1 is invalid: an integer >= 2"),
        ([*MOONS, "cv=0"], "cv=0 is invalid"),
        ([*MOONS, "cv=-2"], "cv=-2 is invalid"),
        ([*MOONS, "cv=abc"], "cv='abc' is invalid"),
        ([*MOONS, "cv=2.5"], "cv=2.5 is invalid"),
        ([*MOONS, "cv=true"], "cv=True is invalid"),
        ([*MOONS, "cv=200"], "cv=200 is invalid: class 0 of 'green' has 120 rows"),
        (["data=moons", "cv=5000"], "cv=5000 is invalid: class 0 of 'green' has 400 rows"),
        (["data=grades", "data.options.n_samples=20", "cv=30"], "cv=30 is invalid: 16 rows"),
        ([*MOONS, "cv=3", "seeds=2"], "cv=3 and seeds=2 can't be combined"),
        ([*MOONS, "cv=3", "ckpt_path=x.ckpt"], "ckpt_path='x.ckpt' is invalid: not set with cv="),
        ([*MOONS, "cv=3", "data.cv_fold=1"], "data.cv_fold=1 is invalid: null with cv=3"),
        ([*MOONS, "cv=11", "data.balance_classes=true"], "data.balance_classes=True is invalid"),
        ([*MOONS, "data.cv_fold=1"], "data.cv_fold=1 is invalid: needs data.cv_folds"),
        ([*MOONS, "data.cv_folds=3"], "data.cv_fold=None is invalid: the held-out fold"),
        ([*MOONS, "data.cv_folds=3", "data.cv_fold=3"], "data.cv_fold=3 is invalid: the held"),
        ([*MOONS, "data.cv_folds=3", "data.cv_fold=-1"], "data.cv_fold=-1 is invalid"),
        ([*MOONS, "data.cv_folds=1", "data.cv_fold=0"], "data.cv_folds=1 is invalid"),
        ([*MOONS, "data.cv_folds=200", "data.cv_fold=0"], "data.cv_folds=200 is invalid"),
    ],
)
def test_bad_cv_is_one_error_line_and_writes_nothing(args, named, tmp_path, monkeypatch, capfd):
    with pytest.raises(SystemExit) as exit_info:
        _cli(tmp_path, monkeypatch, *args)
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1, err[-1500:]
    assert named in errors[0], errors[0]
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").rglob("*.*"))


@pytest.mark.parametrize("fold", [["cv=3"], ["data.cv_folds=3", "data.cv_fold=0"]])
def test_data_split_by_date_is_refused(fold, tmp_path_factory, tmp_path, monkeypatch, capfd):
    cache = tmp_path_factory.getbasetemp() / "flights_cache"  # built once for both cases
    flights = ["data=flights", "data.options.sample=0.01", f"data.options.cache_dir={cache}"]
    with pytest.raises(SystemExit) as exit_info:
        _cli(tmp_path, monkeypatch, *flights, *fold)
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1
    assert f"{fold[0]} is invalid: this data splits its rows by its own column" in errors[0]
    assert not any((tmp_path / "train").rglob("*.*"))
