"""Training in-process through ``train(cfg)``: experiments, checkpoints, resume, determinism."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import Precision

from mlplab.errors import ConfigError
from mlplab.models import MLPModule
from mlplab.models.grouped import QuietStep
from mlplab.run.build import build_model, build_trainer
from mlplab.train import train

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[2] / "conf" / "experiment").glob("*.yaml")
)
SHORT = ["trainer.max_epochs=2", "+trainer.limit_train_batches=2"]


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_a_few_steps(experiment, make_cfg):
    cfg = make_cfg(f"experiment={experiment}", *SHORT)
    options = cfg.data.options
    if "n_samples" in options:  # toy data: a small table
        options.n_samples = 200
    if "sample" in options:  # flights: 2% of the rows
        options.sample = 0.02
    metrics = train(cfg)
    assert "test/loss" in metrics and "val/loss" in metrics and "train/loss" in metrics
    run_dir = Path(cfg.paths.output_dir)
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() or math.isnan(metrics["val/loss"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_default_run_learns_pass_fail(make_cfg):
    metrics = train(make_cfg("trainer.max_epochs=15"))
    assert metrics["test/acc"] > 0.75  # Bayes accuracy ~0.86; chance is ~0.6
    assert 0.75 < metrics["test/auroc"] <= 1.0


def test_regression_metrics_are_in_real_units(make_cfg):
    metrics = train(make_cfg("experiment=grades", "trainer.max_epochs=20"))
    assert metrics["test/r2"] > 0.6
    # MSE in grade points² (noise σ = 6 → ≥ 36), while the loss is on the standardized target.
    assert metrics["test/mse"] > 20 and metrics["test/loss"] < 1


def test_relu_beats_identity_on_circles(make_cfg):
    identity = train(
        make_cfg("experiment=nonlinear_identity", "trainer.max_epochs=20", name="identity")
    )
    relu = train(make_cfg("experiment=nonlinear_relu", "trainer.max_epochs=20", name="relu"))
    assert identity["test/acc"] < 0.7 < 0.95 < relu["test/acc"]


def test_same_seed_same_metrics_and_seed_zero_is_honoured(make_cfg):
    runs = [
        train(make_cfg(f"seed={s}", "trainer.max_epochs=3", name=f"r{i}"))
        for i, s in enumerate([0, 0, 42])
    ]
    assert runs[0] == runs[1]
    assert runs[0]["val/loss"] != runs[2]["val/loss"]


def test_grouped_steps_equal_one_step_per_training_step(make_cfg):
    """Several mini-batches per Lightning step is a speed trick only: same math, same weights."""
    common = [
        "trainer.max_epochs=3",
        "trainer.gradient_clip_val=0.5",
        "scheduler=step",
        "scheduler.step_size=1",
    ]
    grouped = train(make_cfg(*common, "model.group_batches=auto", name="g"))
    single = train(make_cfg(*common, "model.group_batches=1", name="s"))
    assert grouped == pytest.approx(single, rel=1e-5, abs=1e-6)


def test_scheduler_steps_once_per_epoch(make_cfg):
    cfg = make_cfg(
        "trainer.max_epochs=3",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=0.5",
        "optimizer.lr=0.08",
    )
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.01)


def test_plateau_scheduler_runs(make_cfg):
    metrics = train(make_cfg("trainer.max_epochs=3", "scheduler=plateau"))
    assert math.isfinite(metrics["val/loss"])


def test_gd_uses_one_batch_per_epoch(make_cfg):
    cfg = make_cfg("optimizer=gd", "trainer.max_epochs=3")
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3  # full batch: one W ← W − η∇J per epoch


def test_single_sample_sgd_steps_once_per_row(make_cfg):
    cfg = make_cfg(
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "data.batch_size=1",
        "data.options.n_samples=100",
        "trainer.max_epochs=1",
    )
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 60  # 100 rows − 20 val − 20 test


def test_checkpoint_round_trip_weights_only(make_cfg):
    cfg = make_cfg("trainer.max_epochs=4")
    train(cfg)
    best = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    raw = torch.load(best, weights_only=True)  # only primitives and tensors inside
    assert raw["hyper_parameters"]["optimizer"]["_target_"] == "torch.optim.Adam"
    assert "TabularDataModule" in raw and "preprocessor" in raw["TabularDataModule"]

    model = MLPModule.load_from_checkpoint(best, weights_only=True)
    datamodule = instantiate(cfg.data)
    trainer = build_trainer(cfg, [], [])
    # validate(ckpt_path=best) restores weights and the datamodule's fitted preprocessing
    result = trainer.validate(
        model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False
    )[0]
    score = raw["callbacks"][next(k for k in raw["callbacks"] if "ModelCheckpoint" in k)]
    assert result["val/loss"] == pytest.approx(float(score["best_model_score"]), rel=1e-6)


def test_resume_reaches_the_same_metrics_as_one_run(make_cfg):
    whole = train(make_cfg("trainer.max_epochs=4", "test=false", name="whole"))
    first = make_cfg("trainer.max_epochs=2", "test=false", name="first")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = train(
        make_cfg("trainer.max_epochs=4", "test=false", f"ckpt_path={last}", name="resumed")
    )
    assert resumed == pytest.approx(whole, rel=1e-6)


def test_early_stopping_stops_and_tests_best(make_cfg):
    cfg = make_cfg(
        "experiment=overfit_regularized",
        "trainer.max_epochs=200",
        "callbacks.early_stopping.patience=3",
    )
    train(cfg)
    rows = csv_rows(Path(cfg.paths.output_dir))
    epochs = {int(r["epoch"]) for r in rows if r.get("val/loss")}
    assert max(epochs) < 199


def test_l1_penalty_shrinks_weights(make_cfg):
    cfg = make_cfg("trainer.max_epochs=10", "callbacks=none", name="a")
    dm = instantiate(cfg.data)
    dm.setup()
    norms = []
    for l1 in (0.0, 0.05):
        torch.manual_seed(0)
        cfg.model.l1 = l1
        model = build_model(cfg, dm)
        build_trainer(cfg, [], []).fit(model, datamodule=dm)
        norms.append(model.l1_penalty().item())
    assert norms[1] < 0.5 * norms[0]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.hidden_sizes=[16,0]", "model.hidden_sizes"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.batch_size=abc", "data.batch_size"),
        ("data.test_fraction=0.85", "data.val_fraction + data.test_fraction"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
        ("data.source=nope", "data.source"),
    ],
)
def test_bad_values_name_the_key_before_anything_is_written(override, key, make_cfg):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value).startswith(f"{key}=")
    assert not Path(cfg.paths.output_dir).exists()


@pytest.mark.parametrize("preset", ["fdr", "limit", "overfit"])
def test_debug_presets_run(preset, make_cfg):
    overrides = ["model.hidden_sizes=[64,64]", "optimizer.lr=0.01"] if preset == "overfit" else []
    metrics = train(make_cfg(f"debug={preset}", *overrides))
    assert math.isfinite(metrics["test/loss"])
    if preset == "overfit":  # one batch, memorised
        assert metrics["train/loss"] < 0.2


class CountBackward(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls += 1


def test_plain_backward_fast_path_is_exact_and_steps_aside_for_listeners(make_cfg):
    """Skipping manual_backward's hook dispatch is allowed only when nobody listens; either
    way the weights come out the same."""
    cfg = make_cfg("trainer.max_epochs=2", "callbacks=none")
    dm = instantiate(cfg.data)
    dm.setup()
    weights, flags = [], []
    counter = CountBackward()
    for callbacks in ([], [counter]):
        torch.manual_seed(0)
        model = build_model(cfg, dm)
        build_trainer(cfg, callbacks, []).fit(model, datamodule=dm)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        flags.append(model._plain_backward)
    assert flags == [True, False]
    n_train = len(dm.tensors["train"][0])
    assert counter.calls == 2 * -(-n_train // cfg.data.batch_size)  # every mini-batch seen
    assert torch.equal(weights[0], weights[1])


class CountOptimizerSteps(L.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls += 1


def test_quiet_optimizer_step_is_exact_counts_and_steps_aside_for_listeners(make_cfg, monkeypatch):
    """An optimizer step skips Lightning's on_before_optimizer_step dispatch only when nobody
    listens; either way every step is counted and the weights come out the same."""
    cfg = make_cfg("trainer.max_epochs=2", "callbacks=none")
    dm = instantiate(cfg.data)
    dm.setup()
    dispatched = []
    lightning_step = Precision.optimizer_step
    monkeypatch.setattr(
        Precision,
        "optimizer_step",
        lambda self, *args, **kwargs: dispatched.append(1) or lightning_step(self, *args, **kwargs),
    )
    weights, steps, counter = [], [], CountOptimizerSteps()
    for callbacks in ([], [counter]):
        torch.manual_seed(0)
        model = build_model(cfg, dm)
        trainer = build_trainer(cfg, callbacks, [], model)
        assert isinstance(trainer.strategy.precision_plugin, QuietStep)
        trainer.fit(model, datamodule=dm)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        steps.append((trainer.global_step, len(dispatched)))
        assert model._plain_backward  # the backward fast path still applies
    n_steps = 2 * -(-len(dm.tensors["train"][0]) // cfg.data.batch_size)
    assert steps == [(n_steps, 0), (n_steps, n_steps)]  # quiet; then dispatched for the hook
    assert counter.calls == n_steps
    assert torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("precision", ["64-true", "bf16-true", "bf16-mixed"])
def test_other_precisions_train_and_draw(precision, make_cfg):
    """The decision boundary figure is drawn in the model's dtype: float64 and bfloat16 weights
    train, test and draw like float32 ones."""
    cfg = make_cfg("trainer.max_epochs=2", f"trainer.precision={precision}")
    metrics = train(cfg)
    assert math.isfinite(metrics["test/loss"]) and 0.0 <= metrics["test/acc"] <= 1.0
    assert (Path(cfg.paths.output_dir) / "decision_boundary.png").is_file()


def test_wandb_gets_the_resolved_config_and_the_provenance(make_cfg, monkeypatch, wandb_sent):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_cfg("trainer.max_epochs=1", "logger=wandb")
    train(cfg)
    assert len(wandb_sent["init"]) == 1
    sent = [c for c in wandb_sent["config"] if "config" in c and "run_info" in c]
    assert len(sent) == 1
    assert sent[0]["config"]["data"]["_target_"] == "mlplab.data.TabularDataModule"
    assert sent[0]["config"]["optimizer"]["lr"] == cfg.optimizer.lr
    assert len(sent[0]["run_info"]["git"]["sha"]) == 40
    assert {"train/loss", "val/loss"} <= {key for row in wandb_sent["log"] for key in row}
