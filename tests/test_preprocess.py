"""Preprocessing of real tables: fitted on train only, unknown categories, missing values."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from mlplab.data import TabularDataModule
from mlplab.data.preprocess import MISSING, Preprocessor
from mlplab.data.sources import SOURCES
from mlplab.data.spec import TableSpec
from mlplab.errors import ConfigError

SPEC = TableSpec(target="y", task="multiclass", numeric=("age",), categorical=("city",))
TRAIN = pd.DataFrame(
    {
        "age": [20.0, np.nan, 40.0, 60.0],
        "city": ["Boston", "Denver", None, "Boston"],
        "y": ["a", "b", "c", "a"],
    }
)


def test_numeric_missing_gets_the_train_median_and_an_indicator():
    pre = Preprocessor.fit(TRAIN, SPEC)
    assert pre.median == [40.0] and pre.indicators == ["age"]
    x = pre.features(pd.DataFrame({"age": [np.nan, 40.0], "city": ["Boston", "Boston"]}))
    # column 0: standardized age (the median is also the mean here → 0); column 1: missing flag
    assert x[:, 0].tolist() == pytest.approx([0.0, 0.0])
    assert x[:, 1].tolist() == [1.0, 0.0]


def test_one_hot_has_an_unknown_slot_for_unseen_categories():
    pre = Preprocessor.fit(TRAIN, SPEC)
    assert pre.categories == [sorted(["Boston", "Denver", MISSING])]
    assert pre.feature_names[-1] == "city=<unknown>"
    x = pre.features(pd.DataFrame({"age": [30.0, 30.0, 30.0], "city": ["Denver", "Paris", None]}))
    one_hot = x[:, 2:]  # after age and its missing flag
    assert one_hot.sum(dim=1).tolist() == [1.0, 1.0, 1.0]
    assert one_hot[0, pre.categories[0].index("Denver")] == 1
    assert one_hot[1, -1] == 1  # Paris was never seen: the unknown slot, no crash
    assert one_hot[2, pre.categories[0].index(MISSING)] == 1  # missing was seen in training


def test_a_column_complete_in_training_gets_no_indicator_but_still_imputes():
    spec = TableSpec(target="y", task="binary", numeric=("a",))
    pre = Preprocessor.fit(pd.DataFrame({"a": [1.0, 3.0], "y": [0, 1]}), spec)
    assert pre.indicators == [] and pre.n_features == 1
    x = pre.features(pd.DataFrame({"a": [np.nan]}))
    assert torch.isfinite(x).all() and x.shape == (1, 1)


def test_text_in_a_numeric_column_is_named_with_its_1_based_row():
    pre = Preprocessor.fit(TRAIN, SPEC)
    bad = pd.DataFrame({"age": ["31", "thirty"], "city": ["Boston", "Boston"]})
    with pytest.raises(ConfigError, match=r"column 'age' has non-numeric value 'thirty' \(row 2\)"):
        pre.features(bad)
    # a split frame keeps the loaded table's index labels: row = label + 1
    with pytest.raises(ConfigError, match=r"'thirty' \(row 11\)"):
        pre.features(bad.set_axis([4, 10]))


def test_unseen_target_class_and_empty_target_are_errors():
    pre = Preprocessor.fit(TRAIN, SPEC)
    rows = pd.DataFrame({"age": [1.0], "city": ["Boston"], "y": ["z"]})
    with pytest.raises(ConfigError, match=r"classes the model never saw: \['z'\]"):
        pre.targets(rows)
    with pytest.raises(ConfigError, match=r"1 empty value\(s\)"):
        pre.targets(rows.assign(y=[None]))


def test_class_weights_are_inverse_frequency():
    pre = Preprocessor.fit(TRAIN, SPEC)  # a: 2, b: 1, c: 1
    assert pre.class_weights() == pytest.approx([4 / 6, 4 / 3, 4 / 3])
    binary = TableSpec(target="y", task="binary", numeric=("age",))
    pre = Preprocessor.fit(pd.DataFrame({"age": [1.0] * 4, "y": [0, 0, 0, 1]}), binary)
    assert pre.class_weights() == [3.0]  # BCE pos_weight = n_neg / n_pos


def test_nothing_is_fitted_on_val_or_test(monkeypatch):
    """Categories and statistics that exist only outside the train split stay unknown."""
    rng = np.random.default_rng(0)
    n = 300
    split = np.array(["train"] * 200 + ["val"] * 50 + ["test"] * 50)
    df = pd.DataFrame(
        {
            "x": np.where(split == "train", rng.normal(0, 1, n), rng.normal(100, 10, n)),
            "shop": np.where(split == "train", "A", "B"),  # B never appears in training
            "y": rng.integers(0, 2, n),
            "split": split,
        }
    )
    spec = TableSpec(
        target="y", task="binary", numeric=("x",), categorical=("shop",), split_by="split"
    )
    monkeypatch.setitem(SOURCES, "leak_check", lambda: (df, spec))
    dm = TabularDataModule("leak_check")
    dm.setup()
    assert dm.preprocessor.categories == [["A"]]
    assert abs(dm.preprocessor.mean[0]) < 0.3  # the train mean, not pulled toward 100
    x_test = dm.tensors["test"][0]
    assert x_test[:, -1].sum() == 50  # every test row in the unknown slot
    assert len(dm.tensors["train"][0]) == 200  # the split column decides, not fractions


def test_datamodule_state_restores_categorical_preprocessing():
    dm = TabularDataModule("penguins", batch_size=16, seed=3)
    dm.setup()
    state = torch.load(_saved(dm.state_dict()), weights_only=True)
    fresh = TabularDataModule("penguins", batch_size=16, seed=3)
    fresh.load_state_dict(state)
    fresh.setup()
    for split in ("train", "val", "test"):
        assert torch.equal(dm.tensors[split][0], fresh.tensors[split][0])
    assert fresh.in_features == dm.in_features == len(dm.preprocessor.feature_names)


def _saved(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf
