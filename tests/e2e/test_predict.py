"""mlplab-eval and mlplab-predict: a checkpoint alone reproduces metrics and predicts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from mlplab.config import compose_config
from mlplab.data.toy import make_grades, make_pass_fail
from mlplab.errors import ConfigError
from mlplab.evaluate import evaluate
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
    result = evaluate(entry_cfg("eval", f"ckpt_path={ckpt}", f"input={tmp_path / 'new.csv'}"))
    assert 0.6 < result["test/acc"] <= 1.0 and 0.6 < result["test/auroc"] <= 1.0


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
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 10
    assert not list(Path(tmp_path).glob(".hydra"))  # prediction leaves no run dir behind


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
