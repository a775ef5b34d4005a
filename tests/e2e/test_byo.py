"""Bring your own model: the README's LightningModule (automatic optimization, plain ``(x, y)``
batches, its own optimizer) trains, evaluates, predicts and sweeps with the template."""

from __future__ import annotations

import json
import re
import sys

import lightning as L
import pandas as pd
import pytest
import torch
from torch import nn

from mlplab.config import compose_config
from mlplab.evaluate import evaluate
from mlplab.models import example
from mlplab.predict import predict
from mlplab.run import build
from mlplab.run.checkpoint import load_checkpoint
from mlplab.sweep.cli import sweep
from mlplab.train import main as train_main
from tests.conftest import QUIET, ROOT

RUN = [*QUIET, "model=example", "trainer.max_epochs=3"]


def _train(tmp_path, monkeypatch, *overrides: str) -> tuple[dict, str]:
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    train_main([*RUN, f"paths.log_dir={tmp_path}", "run_name=byo", *overrides])
    run_dir = tmp_path / "train" / "byo"
    return json.loads((run_dir / "metrics.json").read_text()), str(run_dir)


def test_readme_shows_exactly_the_shipped_module():
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "src" / "mlplab" / "models" / "example.py").read_text()
    config = (ROOT / "src" / "mlplab" / "conf" / "model" / "example.yaml").read_text()
    code = re.search(r"```python\n(class LitMLP.*?)```", readme, flags=re.S)
    assert code and code.group(1) in source
    lines = [ln for ln in code.group(1).splitlines() if ln.strip()]
    assert len(lines) <= 40
    yaml_block = re.search(r"```yaml\n# conf/model/example.yaml\n(.*?)```", readme, flags=re.S)
    assert yaml_block and yaml_block.group(1) in config


@pytest.mark.parametrize(("data", "metric"), [("moons", "test/loss"), ("grades", "test/loss")])
def test_trains_evaluates_and_predicts(data, metric, tmp_path, monkeypatch, capsys):
    metrics, run_dir = _train(tmp_path, monkeypatch, f"data={data}", "data.options.n_samples=300")
    out = capsys.readouterr().out
    assert "model LitMLP" in out and "note: LitMLP takes no optimizer argument" in out
    assert {"train/loss", "val/loss", metric} <= set(metrics)
    ckpt = f"{run_dir}/checkpoints/best.ckpt"
    model, datamodule = load_checkpoint(ckpt)
    assert type(model) is example.LitMLP and model.hparams.hidden == 32
    # mlplab-eval rebuilds the recorded class and reproduces the run's test phase
    scored = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "accelerator=cpu"]))
    assert scored[metric] == pytest.approx(metrics[metric], abs=1e-6)
    # mlplab-predict: the task's rule turns the module's raw output into predictions
    datamodule.setup("test")
    test_rows = datamodule.frames["test"]
    rows = tmp_path / "rows.csv"
    test_rows.to_csv(rows, index=False)
    out_path = tmp_path / "pred.csv"
    predict(compose_config("predict", [f"ckpt_path={ckpt}", f"input={rows}", f"output={out_path}"]))
    got = pd.read_csv(out_path)
    pre = datamodule.preprocessor
    with torch.no_grad():
        raw = model(pre.features(test_rows)).squeeze(-1)
    if pre.task == "binary":
        assert got[f"prob_{pre.classes[1]}"].to_numpy() == pytest.approx(
            torch.sigmoid(raw).numpy(), abs=1e-6
        )
    else:  # a value in the target's own units, not the standardized one the model learned
        want = raw * pre.target_std + pre.target_mean
        assert got["prediction"].to_numpy() == pytest.approx(want.numpy(), rel=1e-5)
        assert abs(got["prediction"].mean() - test_rows[pre.target].mean()) < 3 * pre.target_std


def test_decision_boundary_is_drawn_for_a_module_without_predictions(tmp_path, monkeypatch):
    _, run_dir = _train(tmp_path, monkeypatch, "data=moons", "data.options.n_samples=200")
    png = tmp_path / "train" / "byo" / "decision_boundary.png"
    assert png.is_file() and png.stat().st_size > 1000 and run_dir.endswith("byo")


def test_gradient_clipping_stays_with_the_trainer_for_automatic_optimization(make_cfg):
    cfg = make_cfg("model=example", "trainer.gradient_clip_val=0.5", "data=moons")
    datamodule = build.build_datamodule(cfg)
    datamodule.setup("fit")
    model = build.build_model(cfg, datamodule)
    assert model.automatic_optimization
    trainer = build.build_trainer(cfg, [], [], model)
    assert trainer.gradient_clip_val == 0.5
    mlp_cfg = make_cfg("trainer.gradient_clip_val=0.5", "data=moons", name="mlp")
    mlp = build.build_model(mlp_cfg, datamodule)  # manual optimization: the module clips
    assert build.build_trainer(mlp_cfg, [], [], mlp).gradient_clip_val is None
    assert mlp.hparams.gradient_clip_val == 0.5


class _NoTest(L.LightningModule):
    """Only what training needs; accepts **kwargs (so it is given every argument)."""

    def __init__(self, in_features: int, out_features: int, **kwargs) -> None:
        super().__init__()
        self.save_hyperparameters("in_features", "out_features")
        self.given = sorted(kwargs)
        self.net = nn.Linear(in_features, out_features)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self.net(x).squeeze(-1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_var_keyword_modules_get_every_argument_and_missing_steps_are_skipped(
    tmp_path, monkeypatch, capsys
):
    cfg_target = f"model._target_={__name__}._NoTest"
    overrides = ["data=moons", "~model.hidden", "~model.lr", "callbacks=none", cfg_target]
    metrics, _ = _train(tmp_path, monkeypatch, *overrides)
    out = capsys.readouterr().out
    assert "test: skipped, _NoTest has no test_step" in out
    assert not any(k.startswith("test/") for k in metrics)


def test_a_target_that_is_not_a_lightning_module_is_one_error(make_cfg):
    datamodule = build.build_datamodule(make_cfg("data=moons"))
    datamodule.setup("fit")
    with pytest.raises(Exception, match=r"model\._target_='torch\.nn\.Linear'.*LightningModule"):
        build.build_model(make_cfg("model._target_=torch.nn.Linear", "data=moons"), datamodule)
    with pytest.raises(Exception, match=r"model\._target_='mlplab\.models\.Nope' can't be"):
        build.build_model(make_cfg("model._target_=mlplab.models.Nope", "data=moons"), datamodule)


def test_sweeps_over_the_modules_own_arguments(tmp_path, monkeypatch):
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    search = tmp_path / "byo.yaml"
    search.write_text(
        "metric: val/loss\ndirection: minimize\nn_trials: 2\nsampler: {name: random, seed: 1}\n"
        "overrides: [model=example, data=moons, data.options.n_samples=200]\n"
        "params:\n  model.lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n"
        "  model.hidden: {type: categorical, choices: [8, 16]}\n"
    )
    study = sweep([f"hparams_search={search}", f"sweep_dir={tmp_path / 'sw'}", *RUN])
    assert len(study.trials) == 2 and all(t.value is not None for t in study.trials)
    lrs = [t.params["model.lr"] for t in study.trials]
    assert lrs[0] != lrs[1]
