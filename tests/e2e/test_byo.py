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
    """The README's my_model.py is models/example.py's class with the same imports (the
    README's blocks themselves run in tests/e2e/test_readme.py)."""
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "src" / "mlplab" / "models" / "example.py").read_text()
    code = re.search(r"```python\n# file: my_model.py\n(.*?)```", readme, flags=re.S)
    assert code
    imports, _, body = code.group(1).partition("\n\n\nclass LitMLP")
    assert f"class LitMLP{body}" in source
    for line in imports.strip().splitlines():
        assert line in source.splitlines(), line
    assert len([ln for ln in body.splitlines() if ln.strip()]) <= 40


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


def test_a_target_given_alone_leaves_out_the_model_group_keys_it_doesnt_take(make_cfg, capsys):
    """``model._target_=...`` keeps model=mlp's hidden_sizes, activation, ...: the class takes
    none of them, so they are left out with a note; a key of one's own it doesn't take is an
    error naming it."""
    from mlplab.errors import ConfigError
    from mlplab.train import train

    target = "model._target_=mlplab.models.example.LitMLP"
    metrics = train(make_cfg(target, "data=moons", "trainer.max_epochs=1"))
    out = capsys.readouterr().out
    assert (
        "note: LitMLP takes no hidden_sizes, activation, dropout, layer, l1, group_batches" in out
    )
    assert "test/loss" in metrics
    with pytest.raises(ConfigError, match=r"model.hiden=3 is invalid: not an argument of"):
        train(make_cfg(target, "+model.hiden=3", "trainer.max_epochs=1", name="typo"))
    with pytest.raises(ConfigError, match=r"model.hidden_sizes=\[8\] is invalid: not an argument"):
        train(make_cfg(target, "model.hidden_sizes=[8]", "trainer.max_epochs=1", name="set"))


def test_a_model_module_that_fails_to_import_says_why(make_cfg, tmp_path, monkeypatch):
    from mlplab.errors import ConfigError
    from mlplab.train import train

    (tmp_path / "broken_model.py").write_text("class LitMLP(L.LightningModule):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"NameError: name 'L' is not defined"):
        train(make_cfg("model._target_=broken_model.LitMLP"))
    with pytest.raises(ConfigError, match=r"No module named 'nowhere' \(a module of your own"):
        train(make_cfg("model._target_=nowhere.LitMLP", name="run-2"))
