"""Train/serve parity: a run's own test rows, written to CSV or Parquet and scored with
``mlplab-eval input=FILE``, give exactly the training run's test metrics, and
``mlplab-predict`` gives exactly the model's test predictions.

Every packaged dataset, plus a user CSV with the values that used to encode differently when
read back from a file (integer codes with blanks, booleans with blanks, mixed case, numbers
as text, a numeric column with a typo). Each run trains one epoch on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from mlplab.config import CONF_DIR, compose_config
from mlplab.data.io import write_table
from mlplab.evaluate import evaluate
from mlplab.predict import predict, predict_frame, with_predictions
from mlplab.run.checkpoint import load_checkpoint
from mlplab.train import train
from tests.conftest import ROOT, compose_cfg, run_cli

DATASETS = sorted(
    p.stem for p in (Path(CONF_DIR) / "data").glob("*.yaml") if p.stem != "csv"
)  # csv: the user file below
SMALL = {  # options that keep a run to a few seconds
    "synthetic": ["data.options.n_samples=600"],
    "flights": ["data.options.sample=0.02"],
}
FAST = [
    "trainer.max_epochs=1",
    "callbacks.decision_boundary=null",  # figures cost time and prove nothing here
    "callbacks.learning_curves=null",
]


def entry_cfg(name: str, *overrides: str):
    return compose_config(name, overrides)


def train_run(out: Path, *overrides: str) -> dict:
    """Train, then rebuild the run's data (same config and seed: deterministic)."""
    cfg = compose_cfg(out, *FAST, *overrides)
    metrics = train(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    return {
        "ckpt": out / "checkpoints" / "best.ckpt",
        "test_metrics": {k: v for k, v in metrics.items() if k.startswith("test/")},
        "dm": datamodule,
        "batch_size": datamodule.hparams.eval_batch_size,  # same batches → same float sums
    }


def assert_parity(run: dict, rows: pd.DataFrame, path: Path) -> None:
    """``rows`` written to ``path`` score and predict exactly like the run's test split."""
    ckpt, dm, batch_size = run["ckpt"], run["dm"], run["batch_size"]
    model, restored = load_checkpoint(ckpt)
    pre = restored.preprocessor
    assert pre.state_dict() == dm.preprocessor.state_dict()  # the rebuild fits the same state
    write_table(rows, path)
    served = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    x_test, y_test = dm.tensors["test"]  # what the training run's test phase saw
    assert torch.equal(pre.features(served), x_test)
    assert torch.equal(pre.targets(served), y_test)

    # eval's default batch size is the training run's eval batch size: no argument needed
    result = evaluate(entry_cfg("eval", f"ckpt_path={ckpt}", f"input={path}"))
    assert run["test_metrics"] and result == run["test_metrics"]  # exactly, not approximately

    out_path = path.with_name(f"pred-{path.stem}.parquet")
    got = predict(
        entry_cfg(
            "predict",
            f"ckpt_path={ckpt}",
            f"input={path}",
            f"output={out_path}",
            f"batch_size={batch_size}",
        )
    )
    want = with_predictions(
        rows, predict_frame(model, x_test, batch_size, pre), pre.task, pre.classes
    )
    columns = [c for c in want.columns if c == "prediction" or c.startswith("prob_")]
    assert columns and len(got) == len(rows)
    pd.testing.assert_frame_equal(
        got[columns].reset_index(drop=True), want[columns].reset_index(drop=True), check_exact=True
    )


@pytest.mark.parametrize("data", DATASETS)
def test_eval_and_predict_on_the_test_rows_as_a_file_reproduce_the_run(data, tmp_path):
    run = train_run(tmp_path / "run", f"data={data}", *SMALL.get(data, []))
    test = run["dm"].frames["test"]
    for suffix in (".csv", ".parquet"):
        assert_parity(run, test, tmp_path / f"test{suffix}")


def test_every_packaged_dataset_is_covered():
    packaged = "pass_fail grades moons circles spiral xor synthetic flights penguins"
    packaged += " breast_cancer wine digits diabetes cars"
    assert set(packaged.split()) <= set(DATASETS)


# --- a user's CSV: the values that used to encode differently at eval time ------------------


def user_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Integer codes with blanks (1.0/2.0/3.0/empty), booleans with blanks, mixed-case text,
    numbers as text, an income column with two typos, a boolean target, a split column."""
    rng = np.random.default_rng(seed)
    code = rng.choice([1.0, 2.0, 3.0, np.nan], n)
    flag = rng.choice(np.array([True, False, None], dtype=object), n)
    color = rng.choice(["Red", "red", "Blue", "BLUE"], n)
    level = rng.choice(["1", "1.0", "02", "two"], n)
    income = np.round(rng.normal(50, 10, n), 2).astype(object)
    income[[7, 300]] = ["12,5", "?"]
    signal = (code == 3.0) | ((color == "red") & (level != "two"))  # the codes matter
    split = rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2])
    split[[7, 300]] = ["train", "test"]  # a typo in each: fitted on, and served
    return pd.DataFrame(
        {
            "code": code,
            "flag": flag,
            "color": color,
            "level": level,
            "income": income,
            "x": rng.normal(0, 1, n),
            "bought": signal,
            "split": split,
        }
    )


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("user")
    path = root / "shop.csv"
    user_table().to_csv(path, index=False)
    run = train_run(
        root / "run",
        "data=csv",
        f"data.options.path={path}",
        "data.options.target=bought",
        "data.options.categorical=[code,flag,color,level]",
        "data.options.split_by=split",
        "trainer.max_epochs=2",
    )
    return {**run, "path": path, "root": root}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("rows", ["frame", "raw"])
def test_user_csv_test_rows_reproduce_the_run(user_run, rows, suffix, tmp_path):
    """``frame``: the loaded test split; ``raw``: the original file's test lines, untouched."""
    if rows == "frame":
        test = user_run["dm"].frames["test"]
    else:
        raw = pd.read_csv(user_run["path"])
        test = raw[raw["split"] == "test"]
    assert_parity(user_run, test, tmp_path / f"{rows}{suffix}")


def test_user_csv_keys_are_canonical_and_the_typo_column_lenient(user_run):
    pre = user_run["dm"].preprocessor
    categories = dict(zip(pre.categorical, pre.categories, strict=True))
    assert categories["code"] == ["1", "2", "3", "<missing>"]
    assert categories["flag"] == ["<missing>", "False", "True"]
    assert categories["color"] == ["BLUE", "Blue", "Red", "red"]  # case kept
    assert categories["level"] == ["1", "2", "two"]  # "1" = "1.0", "02" = 2
    assert pre.lenient == ["income"] and "income" in pre.indicators
    assert user_run["dm"].frames["test"]["income"].isna().any()  # the "?" typo, served
    assert pre.classes == ["False", "True"]
    # the model learned something, so a mismatch in the unknown slot would move the metrics
    assert user_run["test_metrics"]["test/acc"] > 0.6


@pytest.mark.slow
def test_the_eval_cli_on_the_raw_test_lines_prints_the_run_metrics(user_run, tmp_path):
    raw = pd.read_csv(user_run["path"])
    raw[raw["split"] == "test"].to_csv(tmp_path / "test.csv", index=False)
    out = run_cli(
        f"ckpt_path={user_run['ckpt']}",
        f"input={tmp_path / 'test.csv'}",
        f"batch_size={user_run['batch_size']}",
        f"output={tmp_path / 'metrics.json'}",
        cwd=ROOT,
        module="mlplab.evaluate",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == user_run["test_metrics"]
