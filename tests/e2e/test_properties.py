"""Property: any small table a user might hand us — random dtypes, blanks, inf, huge and tiny
numbers, unicode and dotted column names, 1–3 classes or a numeric target — either trains to
finite metrics (and its checkpoint serves its own rows) or stops with one clear error.

Examples are derandomized (the same ones every run, so CI is stable); the slow variant
explores many more.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import open_dict

from mlplab.errors import MlplabError
from mlplab.run.checkpoint import load_checkpoint
from mlplab.train import train
from tests.conftest import compose_cfg

NAMES = st.sampled_from(["x", "a.b", "é-col", "列", "x y", "1st", "Ω", "n_1", "weird,name"])
FLOATS = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308, 1e-300, 0.0, 5e-324]),
)
WORDS = st.sampled_from(["red", "Red", "grün", "", "NA", "True", "3", "3.0", "🙂", "a b"])


@st.composite
def column(draw, n: int) -> list:
    kind = draw(st.sampled_from(["float", "int", "bool", "text", "mixed", "blank"]))
    if kind == "float":
        return draw(st.lists(FLOATS, min_size=n, max_size=n))
    if kind == "int":
        return draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n))
    if kind == "bool":
        return draw(st.lists(st.sampled_from([True, False, None]), min_size=n, max_size=n))
    if kind == "text":
        return draw(st.lists(WORDS, min_size=n, max_size=n))
    if kind == "blank":
        return [None] * n
    return draw(st.lists(st.one_of(FLOATS, WORDS, st.none()), min_size=n, max_size=n))


@st.composite
def tables(draw) -> tuple[pd.DataFrame, str]:
    n = draw(st.integers(6, 40))
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    df = pd.DataFrame({name: draw(column(n)) for name in names})
    target = draw(st.sampled_from(["label", "y.value", "ÿ"]))
    kind = draw(st.sampled_from(["one", "two", "three", "numeric", "numeric-wild"]))
    if kind == "numeric":
        df[target] = draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=n, max_size=n))
    elif kind == "numeric-wild":
        df[target] = draw(st.lists(FLOATS, min_size=n, max_size=n))
    else:
        k = {"one": 1, "two": 2, "three": 3}[kind]
        labels = draw(st.sampled_from([["a", "b", "c"], [0, 1, 2], ["no", "yes", "maybe"]]))
        df[target] = draw(st.lists(st.sampled_from(labels[:k]), min_size=n, max_size=n))
    return df, target


def _train_on(df: pd.DataFrame, target: str, tmp_path) -> dict[str, float] | MlplabError:
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    cfg = compose_cfg(tmp_path / "run", "data=csv", "trainer.max_epochs=2", "data.batch_size=4")
    with open_dict(cfg):  # set directly: no command-line quoting of odd names
        cfg.data.options.path = str(path)
        cfg.data.options.target = target
    try:
        return train(cfg)
    except MlplabError as err:
        return err


def _check(df: pd.DataFrame, target: str, tmp_path) -> None:
    result = _train_on(df, target, tmp_path)
    if isinstance(result, MlplabError):
        message = str(result)
        assert message.strip() and "\n" not in message.strip(), message
        assert "Traceback" not in message
        return
    bad = {k: v for k, v in result.items() if not math.isfinite(v)}
    assert not bad, bad
    model, datamodule = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    rows = datamodule.preprocessor.features(df)  # every row of the file can be served
    assert rows.shape == (len(df), model.hparams.in_features)


SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(max_examples=12, **SETTINGS)
@given(tables())
def test_random_tables_train_or_fail_clearly(tmp_path_factory, table):
    df, target = table
    _check(df, target, tmp_path_factory.mktemp("t"))


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(tables())
def test_random_tables_train_or_fail_clearly_many(tmp_path_factory, table):
    df, target = table
    _check(df, target, tmp_path_factory.mktemp("t"))
