"""A user's own CSV through the CLIs: train → eval → predict, and the bad-input messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplab.config import compose_config
from mlplab.evaluate import evaluation
from tests.conftest import ROOT, run_cli

QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.max_epochs=3"]


def people(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    city = rng.choice(["Boston", "Denver", "Austin"], n)
    income = np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 15, n))
    buys = (age / 80 + (city == "Boston") * 0.5 + rng.normal(0, 0.3, n) > 0.9).astype(int)
    return pd.DataFrame({"age": age, "city": city, "income": income, "buys": buys})


def test_csv_train_eval_predict_with_unknown_category(tmp_path, capsys):
    people(400).to_csv(tmp_path / "train.csv", index=False)
    out = run_cli(
        "data=csv",
        f"data.options.path={tmp_path / 'train.csv'}",
        "data.options.target=buys",
        *QUIET,
        f"paths.log_dir={tmp_path}",
        "run_name=mine",
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "task=binary" in out.stdout and "categorical=[city]" in out.stdout.replace("'", "")
    ckpt = tmp_path / "train" / "mine" / "checkpoints" / "best.ckpt"

    evaluated = run_cli(f"ckpt_path={ckpt}", cwd=tmp_path, module="mlplab.evaluate")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    test_acc = next(line for line in out.stdout.splitlines() if "test/acc" in line)
    value = test_acc.split("│")[2].strip()  # the same number as the training run's test phase
    assert f"│ test/acc   │ {value} │" in evaluated.stdout

    new = people(20, seed=1).drop(columns="buys")
    new.loc[0, "city"] = "Paris"  # never seen in training
    new.to_parquet(tmp_path / "new.parquet")
    predicted = run_cli(
        f"ckpt_path={ckpt}",
        f"input={tmp_path / 'new.parquet'}",
        f"output={tmp_path / 'pred.csv'}",
        cwd=tmp_path,
        module="mlplab.predict",
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert len(pred) == 20 and set(pred["prediction"]) <= {0, 1}
    assert pred[["prob_0", "prob_1"]].notna().all().all()
    note = "note: categories never seen in training, scored as unknown: city: 1 in 1 row ('Paris')"
    assert note in predicted.stderr.splitlines()

    # mlplab-eval on a file says the same, and names the file and its rows
    scored = people(30, seed=2)
    scored.loc[[3, 5], "city"] = ["Paris", "Lyon"]
    scored.to_csv(tmp_path / "scored.csv", index=False)
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", f"input={tmp_path / 'scored.csv'}"])
    _, about = evaluation(cfg)
    assert about == f"metrics on {tmp_path / 'scored.csv'} (30 rows)"
    note = "scored as unknown: city: 2 in 2 rows ('Lyon', 'Paris')"
    assert note in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        (None, [], "not found"),
        ("", [], "is empty"),
        ("a,b,buys\n1,2,x\n3,4,y\n", ["data.options.target=label"], "'label'"),
        ("age,buys\n31,1\nabc,0\n", ["data.options.numeric=[age]"], "'abc'"),
        ("age,buys\n31,1\n40,\n", [], "1 missing values"),
        ("age,buys\n31,1\n40,1\n50,1\n60,1\n70,1\n", ["data.options.task=binary"], "1 classes"),
        ("age,buys\n31,a\n40,b\n", ["data.options.task=regression"], "needs a numeric target"),
    ],
    ids=[
        "missing",
        "empty",
        "no-target",
        "text-in-numeric",
        "nan-target",
        "one-class",
        "text-regression",
    ],
)
def test_bad_csv_is_one_clear_line(content, options, message, tmp_path):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    target = [] if any("target" in o for o in options) else ["data.options.target=buys"]
    out = run_cli(
        "data=csv",
        f"data.options.path={path}",
        *target,
        *options,
        *QUIET,
        f"paths.log_dir={tmp_path / 'logs'}",
        cwd=ROOT,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]


def test_unknown_file_type(tmp_path):
    (tmp_path / "data.xlsx").write_text("x")
    out = run_cli(
        "data=csv",
        f"data.options.path={tmp_path / 'data.xlsx'}",
        "data.options.target=y",
        *QUIET,
        f"paths.log_dir={tmp_path}",
        cwd=ROOT,
    )
    assert out.returncode == 2 and "file type one of" in out.stderr
