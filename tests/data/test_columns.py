"""A population's DataModules read one shared table's parse (``data.columns``): every split's
tensors and the fitted preprocessing equal a DataModule's that parses its own frames, on
shipped datasets and on hostile files, and errors are the same errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mlplab.data.datamodule import TabularDataModule
from mlplab.data.sources import _PARSED, shared_sources
from mlplab.errors import ConfigError


def _built(shared: bool, **kwargs) -> list[TabularDataModule]:
    """DataModules of seeds 0, 1, 2 (and folds where asked), built inside shared_sources or not."""

    def build():
        out = []
        for seed in (0, 1, 2):
            dm = TabularDataModule(seed=seed, **kwargs)
            dm.setup("fit")
            out.append(dm)
        return out

    if not shared:
        return build()
    with shared_sources():
        dms = build()
        assert _PARSED, "the shared table was parsed once for all"
    assert not _PARSED  # let go with the block
    return dms


def _assert_same(a: TabularDataModule, b: TabularDataModule) -> None:
    assert a.preprocessor.state_dict() == b.preprocessor.state_dict()
    for name in ("train", "val", "test"):
        for x, y in zip(a.tensors[name], b.tensors[name], strict=True):
            assert x.dtype == y.dtype and torch.equal(x, y), name


@pytest.mark.parametrize(
    "source, options",
    [
        ("moons", {}),
        ("breast_cancer", {}),
        ("penguins", {}),  # missing cells, categorical columns, multiclass
        ("diabetes", {}),  # regression
        ("flights", {"sample": 0.02}),  # split by date, categoricals, missing weather
    ],
)
def test_shared_parse_equals_each_datamodules_own(source, options):
    own = _built(False, source=source, options=options)
    shared = _built(True, source=source, options=options)
    for a, b in zip(own, shared, strict=True):
        _assert_same(a, b)


def _hostile(tmp_path, n: int = 120):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "f32": rng.normal(size=n).astype(np.float32),
            "typo": [str(v) for v in rng.normal(size=n).round(3)],
            "color": rng.choice(["red", "Red", " red", "NA", "3", "3.0", None], size=n),
            "flag": rng.choice([True, False, None], size=n),
            "y": rng.choice(["yes", "no", "3", 3.0], size=n),
        }
    )
    df.loc[[5, 50], "typo"] = ["12,5", "?"]  # a lenient column: two cells aren't numbers
    df.loc[7, "x"] = np.nan
    return df


def test_hostile_table_parses_as_each_split_parses_itself(tmp_path):
    df = _hostile(tmp_path)
    path = tmp_path / "hostile.csv"
    df.to_csv(path, index=False)
    options = {"path": str(path), "target": "y"}
    for a, b in zip(
        _built(False, source="csv", options=options),
        _built(True, source="csv", options=options),
        strict=True,
    ):
        _assert_same(a, b)
    for a, b in zip(  # K-fold splits too
        _built(False, source="csv", options=options, cv_folds=3, cv_fold=1),
        _built(True, source="csv", options=options, cv_folds=3, cv_fold=1),
        strict=True,
    ):
        _assert_same(a, b)


def test_a_bad_cell_is_the_same_error_from_the_same_split(tmp_path):
    df = _hostile(tmp_path).drop(columns=["typo"])
    df["x"] = df["x"].astype(object)
    df.loc[df.index[-1], "x"] = "inf"  # a non-finite number: an error, wherever it sits
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    options = {"path": str(path), "target": "y", "numeric": ["x"]}
    errors = []
    for shared in (False, True):
        with pytest.raises(ConfigError) as err:
            _built(shared, source="csv", options=options)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and "non-finite" in errors[0] and "'x'" in errors[0]
