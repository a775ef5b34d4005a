"""Preprocessing of real tables: fitted on train only, unknown categories, missing values."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
import torch

from mlplab.data import TabularDataModule
from mlplab.data.cells import MISSING, NA_STRINGS, canonical
from mlplab.data.io import read_table, write_table
from mlplab.data.preprocess import Preprocessor
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


def test_missing_numbers_get_the_training_median_not_the_mean_on_a_skewed_column():
    """Incomes: a long right tail, so median (2.5) and mean (26.5) are far apart; a missing
    value becomes the median of the training rows only, then is scaled like the others."""
    spec = TableSpec(target="y", task="binary", numeric=("income",))
    train = pd.DataFrame({"income": [1.0, 2.0, 3.0, 100.0, np.nan], "y": [0, 1, 0, 1, 0]})
    pre = Preprocessor.fit(train, spec)
    assert pre.median == [2.5] and pre.mean[0] == pytest.approx(26.5)
    other = pd.DataFrame({"income": [np.nan, 1000.0, np.nan]})  # not what it was fitted on
    x = pre.features(other)
    scaled_median = (2.5 - pre.mean[0]) / pre.std[0]
    assert x[:, 0].tolist() == pytest.approx(
        [scaled_median, (1000 - pre.mean[0]) / pre.std[0], scaled_median]
    )
    assert x[:, 1].tolist() == [1.0, 0.0, 1.0]  # the missing flag
    assert scaled_median < -0.4  # the mean would have given 0


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


# --- one canonical category key for training and serving ------------------------------------

KINDS = {  # value kind → (values, their canonical keys)
    "int-coded with blanks": ([1.0, 2.0, np.nan, 3.0], ["1", "2", MISSING, "3"]),
    "ints": (np.array([1, 2, 3, 3]), ["1", "2", "3", "3"]),
    "numeric strings": (["1", "2.0", "03", None], ["1", "2", "3", MISSING]),
    "numbers in text": (["1", "two", "3.0", ""], ["1", "two", "3", MISSING]),
    "bools": (np.array([True, False, True, False]), ["True", "False", "True", "False"]),
    "bools with blanks": ([True, False, None, True], ["True", "False", MISSING, "True"]),
    "bool strings": (["True", "true", "TRUE", "false"], ["True", "True", "True", "False"]),
    "mixed case": (["Red", "red", "RED", None], ["Red", "red", "RED", MISSING]),
    "padded and NA text": ([" Red", "Red ", "n/a", "NA"], ["Red", "Red", MISSING, MISSING]),
    "missing kinds": ([None, np.nan, pd.NA, "x"], [MISSING, MISSING, MISSING, "x"]),
    "floats": ([0.1, 2.5, np.nan, 1e20], ["0.1", "2.5", MISSING, "1e+20"]),
    "float32": (np.array([0.1, 2.5, 3.0, 7.0], dtype=np.float32), ["0.1", "2.5", "3", "7"]),
}


def _round_trip(values, suffix: str, tmp_path) -> pd.Series:
    """``values`` written by write_table and read back by read_table (what eval/predict see).
    An id column keeps a row whose only value is blank from becoming a skipped blank line."""
    path = tmp_path / f"t{suffix}"
    write_table(pd.DataFrame({"id": range(len(values)), "v": pd.Series(values)}), path)
    return read_table(path)["v"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_canonical_keys_survive_csv_and_parquet_round_trips(kind, suffix, tmp_path):
    values, keys = KINDS[kind]
    assert canonical(pd.Series(values)).tolist() == keys
    assert canonical(_round_trip(values, suffix, tmp_path)).tolist() == keys
    # what a loader leaves in its frame (keys, NaN for missing) round-trips to the same keys
    finished = canonical(pd.Series(values), missing=np.nan)
    assert canonical(_round_trip(finished, suffix, tmp_path)).tolist() == keys
    assert canonical(pd.Series(finished)).tolist() == keys  # idempotent


def test_na_strings_are_what_read_csv_reads_as_missing():
    from pandas._libs.parsers import STR_NA_VALUES

    assert set(STR_NA_VALUES) == NA_STRINGS


def test_true_and_one_stay_apart_in_a_mixed_column():
    # they hash and compare equal, so a naive factorize would merge them
    assert canonical(pd.Series([True, 1, "1", 1.0], dtype=object)).tolist() == [
        "True",
        "1",
        "1",
        "1",
    ]


def test_serving_frame_read_from_csv_encodes_like_the_training_frame(tmp_path):
    """The skew bug: "3" at training time, 3.0 from a CSV with blanks → the same one-hot."""
    spec = TableSpec(target="y", task="binary", categorical=("code",))
    train = pd.DataFrame({"code": ["1", "3", np.nan, "3"], "y": [0, 1, 0, 1]}, dtype=object)
    pre = Preprocessor.fit(train, spec)
    served = _round_trip(train["code"], ".csv", tmp_path).to_frame("code")
    assert served["code"].dtype == np.float64  # 1.0, 3.0, NaN, 3.0 as read back
    assert torch.equal(pre.features(served), pre.features(train))
    assert pre.features(served)[:, -1].sum() == 0  # nothing in the unknown slot


@pytest.mark.parametrize(
    ("train_y", "served_y"),
    [
        ([str(d) for d in range(10)], list(range(10))),  # digits: "0".."9" → ints from a CSV
        ([str(d) for d in range(10)], [float(d) for d in range(10)]),
        ([False, True] * 5, ["false", "TRUE"] * 5),
        (["no", "yes"] * 5, [" no", "yes "] * 5),
    ],
    ids=["digit-strings-vs-ints", "digit-strings-vs-floats", "bools-vs-text", "padded"],
)
def test_target_classes_match_canonically_but_stay_readable(train_y, served_y):
    task = "binary" if len(set(train_y)) == 2 else "multiclass"
    spec = TableSpec(target="y", task=task, numeric=("x",))
    pre = Preprocessor.fit(pd.DataFrame({"x": np.arange(10.0), "y": train_y}), spec)
    assert pre.classes == sorted(set(train_y))  # the labels predictions print
    served = pd.DataFrame({"x": np.arange(10.0), "y": served_y})
    assert torch.equal(pre.targets(served), pre.targets(pd.DataFrame({"y": train_y, "x": 0.0})))


def test_one_class_per_canonical_key_in_training():
    spec = TableSpec(target="y", task="binary", numeric=("x",))
    y = pd.Series(["3", 3.0, 3, "4", 4.0], dtype=object)
    pre = Preprocessor.fit(pd.DataFrame({"x": np.zeros(5), "y": y}), spec)
    assert len(pre.classes) == 2 and pre.class_counts == [3, 2]


# --- finite numbers -------------------------------------------------------------------------

NUM_SPEC = TableSpec(target="y", task="regression", numeric=("a", "b"))


def _table(a, y=None, index=None) -> pd.DataFrame:
    n = len(a)
    y = np.arange(n, dtype=np.float64) if y is None else y
    return pd.DataFrame({"a": a, "b": np.ones(n), "y": y}, index=index)


@pytest.mark.parametrize(
    ("frame", "needles"),
    [
        (_table([1.0, np.inf, 3.0]), ["column 'a'", "non-finite value inf", "(row 2)"]),
        (_table([1.0, 2.0, -np.inf], index=[7, 8, 9]), ["'a'", "-inf", "(row 10)"]),
        (_table(["1", "2", "inf"]), ["'a'", "'inf'", "(row 3)"]),
        (_table([1.0, 1e308, 1.5e308]), ["'a'", "1.5e+308", "(row 3)", "overflows"]),
        (_table([1.0, 2.0, 3.0], y=[1.0, np.inf, 0.0]), ["'y' (the target)", "inf", "(row 2)"]),
        (_table([1.0, 2.0, 3.0], y=[1e308, -1e308, 0.0]), ["'y'", "1e+308", "(row 1)"]),
    ],
    ids=["inf", "-inf-index-labels", "inf-text", "mean-overflow", "target-inf", "target-std"],
)
def test_non_finite_or_overflowing_training_values_are_named(frame, needles):
    with pytest.raises(ConfigError) as err:
        Preprocessor.fit(frame, NUM_SPEC)
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize(
    ("cell", "needle"), [("inf", "non-finite value inf"), ("1e308", "value 1e+308")]
)
def test_training_on_a_file_with_a_huge_cell_names_its_row(cell, needle, tmp_path, capsys):
    lines = ["a,y,part"] + [f"{i},{i % 2},train" for i in range(5)] + ["1,0,val", "2,1,test"]
    lines[4] = lines[4].replace("3,", f"{cell},", 1)  # data row 4 (the header is no row)
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    options = {"path": str(tmp_path / "t.csv"), "target": "y", "split_by": "part"}
    dm = TabularDataModule("csv", options)
    with pytest.raises(ConfigError, match=rf"column 'a' has {re.escape(needle)} \(row 4\)"):
        dm.setup()


def test_non_finite_values_at_eval_and_predict_time_name_the_file_row(tmp_path):
    pre = Preprocessor.fit(_table([1.0, 2.0, 3.0, 4.0]), NUM_SPEC)
    (tmp_path / "new.csv").write_text("a,b,y\n1,1,1\n2,1,2\ninf,1,3\n")
    with pytest.raises(ConfigError, match=r"column 'a' has non-finite value inf \(row 3\)"):
        pre.features(read_table(tmp_path / "new.csv"))
    (tmp_path / "new.csv").write_text("a,b,y\n1,1,1\n2,1,-inf\n")
    with pytest.raises(ConfigError, match=r"'y' \(the target\) has non-finite value -inf \(row 2"):
        pre.targets(read_table(tmp_path / "new.csv"))
    # finite, but (x − mean) / std doesn't fit in float32: an error, not an inf input
    with pytest.raises(ConfigError, match=r"'a' has value 1e\+300 \(row 2\).*overflows float32"):
        pre.features(_table([1.0, 1e300]))
    with pytest.raises(ConfigError, match=r"'y' has value 1e\+300 \(row 1\).*overflows float32"):
        pre.targets(_table([1.0], y=[1e300]))


def test_float32_training_columns_encode_like_their_file_round_trip(tmp_path):
    """A file shows float32 0.1 as "0.1", which reads back as float64 0.1 ≠ float32 0.1."""
    train = pd.DataFrame({"a": np.float32([0.1, 0.7, 2.3]), "b": 1.0, "y": [0.0, 1.0, 2.0]})
    pre = Preprocessor.fit(train, NUM_SPEC)
    assert pre.float32 == ["a"]
    write_table(train, tmp_path / "t.csv")
    served = read_table(tmp_path / "t.csv")
    assert served["a"].dtype == np.float64 and served["a"][0] == 0.1
    assert torch.equal(pre.features(served), pre.features(train))
    with pytest.raises(ConfigError, match=r"'a' has value 1e\+39 \(row 1\).*float32"):
        pre.features(served.assign(a=[1e39, 0.0, 0.0]))


def test_large_but_safe_values_still_train():
    pre = Preprocessor.fit(_table([1e150, -1e150, 0.0]), NUM_SPEC)
    assert torch.isfinite(pre.features(_table([1e150, 0.0]))).all()


# --- lenient numeric columns ----------------------------------------------------------------


def test_lenient_columns_read_text_as_missing_and_persist(tmp_path):
    from mlplab.data.spec import TableSpec

    spec = TableSpec(target="y", task="regression", numeric=("a", "b"), lenient=("a",))
    pre = Preprocessor.fit(_table([1.0, "?", 3.0]), spec)
    assert pre.lenient == ["a"] and pre.indicators == ["a"] and pre.median[0] == 2.0
    state = torch.load(_saved(pre.state_dict()), weights_only=True)
    served = Preprocessor.from_state_dict(state).features(_table(["12,5", 3.0]))
    assert served[:, 2].tolist() == [1.0, 0.0]  # a_missing: the typo is a missing value
    strict = Preprocessor.fit(_table([1.0, 2.0, 3.0]), NUM_SPEC)
    with pytest.raises(ConfigError, match=r"non-numeric value '12,5' \(row 1\)"):
        strict.features(_table(["12,5", 3.0]))


def test_state_without_newer_fields_still_loads():
    """A checkpoint written before ``lenient`` existed."""
    state = Preprocessor.fit(TRAIN, SPEC).state_dict()
    del state["lenient"], state["float32"]
    pre = Preprocessor.from_state_dict(state)
    assert pre.lenient == [] and pre.float32 == []
    assert torch.equal(pre.features(TRAIN), Preprocessor.fit(TRAIN, SPEC).features(TRAIN))
