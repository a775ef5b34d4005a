"""mlplab-eval and mlplab-predict: a checkpoint alone reproduces metrics and predicts."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
import torch

from mlplab.config import compose_config
from mlplab.data.preprocess import Preprocessor, unseen_note
from mlplab.data.spec import TableSpec
from mlplab.data.toy import make_grades, make_pass_fail
from mlplab.errors import ConfigError
from mlplab.evaluate import evaluate, evaluation
from mlplab.predict import predict
from mlplab.train import train
from tests.conftest import run_cli


def entry_cfg(name: str, *overrides: str):
    return compose_config(name, overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One binary and one regression run, shared by the tests of this file."""
    from tests.conftest import compose_cfg

    runs = {}
    for name, experiment in [("binary", "pass_fail"), ("regression", "grades")]:
        out = tmp_path_factory.mktemp(name)
        metrics = train(compose_cfg(out, f"experiment={experiment}", "trainer.max_epochs=5"))
        runs[name] = (out / "checkpoints" / "best.ckpt", metrics)
    return runs


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_eval_reproduces_the_training_test_metrics(task, trained):
    ckpt, metrics = trained[task]
    result = evaluate(entry_cfg("eval", f"ckpt_path={ckpt}"))
    expected = {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert result == pytest.approx(expected, rel=1e-6)


def test_eval_on_a_file_scores_every_row(trained, tmp_path):
    ckpt, _ = trained["binary"]
    df, _ = make_pass_fail(300, seed=7)
    df.to_csv(tmp_path / "new.csv", index=False)
    result, about = evaluation(
        entry_cfg("eval", f"ckpt_path={ckpt}", f"input={tmp_path / 'new.csv'}")
    )
    assert 0.6 < result["test/acc"] <= 1.0 and 0.6 < result["test/auroc"] <= 1.0
    assert about == f"metrics on {tmp_path / 'new.csv'} (300 rows)"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predict_round_trip_binary(suffix, trained, tmp_path):
    ckpt, _ = trained["binary"]
    df, _ = make_pass_fail(40, seed=5)
    features = df.drop(columns="passed")
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    features.to_csv(src, index=False) if suffix == ".csv" else features.to_parquet(src)
    predict(entry_cfg("predict", f"ckpt_path={ckpt}", f"input={src}", f"output={dst}"))
    out = pd.read_csv(dst) if suffix == ".csv" else pd.read_parquet(dst)
    assert list(out.columns) == ["lectures", "hours", "prediction", "prob_0", "prob_1"]
    pd.testing.assert_frame_equal(out[["lectures", "hours"]], features, check_dtype=False)
    assert ((out["prob_0"] + out["prob_1"] - 1).abs() < 1e-5).all()
    assert (out["prediction"] == (out["prob_1"] >= 0.5).astype(int)).all()
    # the same numbers as the model itself
    from mlplab.run.checkpoint import load_checkpoint

    model, dm = load_checkpoint(ckpt)
    with torch.no_grad():
        p1 = torch.sigmoid(model(dm.preprocessor.features(features))).squeeze(-1)
    assert torch.allclose(torch.tensor(out["prob_1"].to_numpy()).float(), p1, atol=1e-6)


def test_predict_regression_is_in_real_units(trained, tmp_path):
    ckpt, _ = trained["regression"]
    df, _ = make_grades(200, seed=9)
    df.drop(columns="grade").to_csv(tmp_path / "in.csv", index=False)
    predict(
        entry_cfg(
            "predict",
            f"ckpt_path={ckpt}",
            f"input={tmp_path / 'in.csv'}",
            f"output={tmp_path / 'out.csv'}",
        )
    )
    pred = pd.read_csv(tmp_path / "out.csv")["prediction"]
    assert 30 < pred.mean() < 90  # grades in %, not standardized units
    assert (pred - df["grade"]).abs().mean() < 15


def test_predict_refuses_a_checkpoint_from_other_columns(trained, tmp_path):
    ckpt, _ = trained["binary"]
    pd.DataFrame({"x1": [0.1], "x2": [0.2]}).to_csv(tmp_path / "points.csv", index=False)
    cfg = entry_cfg(
        "predict",
        f"ckpt_path={ckpt}",
        f"input={tmp_path / 'points.csv'}",
        f"output={tmp_path / 'out.csv'}",
    )
    with pytest.raises(ConfigError, match=r"missing column\(s\) \['lectures', 'hours'\]"):
        predict(cfg)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["ckpt_path=/nope.ckpt"], "ckpt_path='/nope.ckpt' is invalid: no such file"),
        (["input=/nope.csv"], "data file '/nope.csv' not found"),
        (["output=out.xlsx"], "output='out.xlsx' is invalid"),
    ],
)
def test_predict_bad_input(overrides, match, trained, tmp_path):
    ckpt, _ = trained["binary"]
    base = [f"ckpt_path={ckpt}", "input=/tmp/x.csv", f"output={tmp_path / 'o.csv'}"]
    keys = {o.split("=")[0] for o in overrides}
    cfg = entry_cfg("predict", *[b for b in base if b.split("=")[0] not in keys], *overrides)
    with pytest.raises(ConfigError, match=match):
        predict(cfg)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="damaged or truncated, or not a checkpoint at all"):
        evaluate(entry_cfg("eval", f"ckpt_path={bad}"))


def test_predict_cli(trained, tmp_path):
    ckpt, _ = trained["binary"]
    make_pass_fail(10, seed=1)[0].to_csv(tmp_path / "in.csv", index=False)
    out = run_cli(
        f"ckpt_path={ckpt}",
        f"input={tmp_path / 'in.csv'}",
        f"output={tmp_path / 'out.parquet'}",
        cwd=tmp_path,
        module="mlplab.predict",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "wrote 10 predictions" in out.stdout
    written = pd.read_parquet(tmp_path / "out.parquet")
    assert len(written) == 10
    assert not list(Path(tmp_path).glob(".hydra"))  # prediction leaves no run dir behind
    # without output=: the same table as CSV on stdout, alone (it pipes), nothing written
    before = sorted(tmp_path.iterdir())
    piped = run_cli(f"ckpt_path={ckpt}", "input=in.csv", cwd=tmp_path, module="mlplab.predict")
    assert piped.returncode == 0, piped.stderr[-2000:]
    shown = pd.read_csv(io.StringIO(piped.stdout))
    pd.testing.assert_frame_equal(shown, written, check_dtype=False, atol=1e-6)
    assert sorted(tmp_path.iterdir()) == before


def test_eval_on_a_data_config_splits_with_the_checkpoints_seed(tmp_path):
    """``mlplab-eval data=NAME`` must rebuild the run's own split (its seed, not eval's
    default), or training rows would land in the evaluated test split."""
    from tests.conftest import compose_cfg

    data = ["data=moons", "data.options.n_samples=300"]
    cfg = compose_cfg(tmp_path / "run", *data, "seed=7", "trainer.max_epochs=2")
    metrics = train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    result = evaluate(entry_cfg("eval", f"ckpt_path={ckpt}", *data, "accelerator=cpu"))
    assert result == {k: v for k, v in metrics.items() if k.startswith("test/")}
    other = evaluate(entry_cfg("eval", f"ckpt_path={ckpt}", *data, "seed=8", "accelerator=cpu"))
    assert other != result  # an explicit seed is honoured: another split, other numbers


def test_unseen_categories_are_counted_per_column():
    train = pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0, 4.0],
            "city": ["A", "B", "A", "B"],
            "n": [3, 4, 3, 4],
            "y": [0, 1] * 2,
        }
    )
    pre = Preprocessor.fit(train, TableSpec("y", "binary", ("x",), ("city", "n")))
    new = pd.DataFrame(
        {"x": [0.0] * 5, "city": ["A", "C", "D", "C", None], "n": ["3", 3.0, "4.0", "5", 4]}
    )
    unseen = pre.unseen_categories(new)  # "3", 3.0 and "4.0" are the categories 3 and 4
    assert unseen == {"city": (["<missing>", "C", "D"], 4), "n": (["5"], 1)}
    assert unseen_note(unseen) == (
        "note: categories never seen in training, scored as unknown: "
        "city: 3 in 4 rows ('<missing>', 'C', 'D'); n: 1 in 1 row ('5')"
    )
    assert pre.unseen_categories(train) == {} and unseen_note({}) is None
    # each of them in the unknown slot of its column
    names = pre.feature_names
    x = pre.features(new)
    assert x[:, names.index("city=<unknown>")].tolist() == [0, 1, 1, 1, 1]
    assert x[:, names.index("n=<unknown>")].tolist() == [0, 0, 0, 1, 0]


def test_a_model_class_that_cant_be_imported_keeps_the_reason(trained, tmp_path):
    ckpt, _ = trained["binary"]
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw["mlplab"]["model_class"] = "my_model.LitMLP"  # the user's module, not on the path here
    torch.save(raw, tmp_path / "mine.ckpt")
    out = run_cli(f"ckpt_path={tmp_path / 'mine.ckpt'}", cwd=tmp_path, module="mlplab.evaluate")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    reason = "ModuleNotFoundError: No module named 'my_model' (a module of your own: run from"
    assert lines[0].startswith("error: ") and reason in lines[0], lines[0]
