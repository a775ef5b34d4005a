"""Population training end to end: every member is the run ``mlplab-train`` would have made,
its run dir and checkpoint included; what a population can't honour is refused in one line."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch

from mlplab.config import compose_config, compose_run
from mlplab.errors import ConfigError
from mlplab.evaluate import evaluate
from mlplab.population.engine import train_population
from mlplab.population.module import PopulationModule
from mlplab.train import main as train_main
from mlplab.train import train

BASE = [
    "data=moons",
    "data.options.n_samples=300",
    "trainer.max_epochs=6",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
]


def _overrides(values: dict) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def _alone(tmp_path, name: str, *overrides: str, base=BASE) -> tuple[dict, int]:
    """A stand-alone run: its metrics and the epoch of its best checkpoint."""
    run_dir = tmp_path / name
    metrics = train(compose_run(run_dir, *base, *overrides))
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]
    return metrics, best


def _population(tmp_path, *members: dict, base=BASE, shared=(), **kwargs) -> pd.DataFrame:
    cfg = compose_run(tmp_path / "pop", *base, *shared)
    return train_population(cfg, list(members), tmp_path / "pop", **kwargs)


def _same(member: dict, alone: dict) -> None:
    """Every metric the stand-alone run reports, with the same name and value."""
    assert {k for k in member if "/" in k and k != "run_dir"} == set(alone)
    for key in alone:
        assert member[key] == pytest.approx(alone[key], abs=1e-5), key


SGD = ["optimizer=sgd"]


def test_members_equal_their_stand_alone_runs(tmp_path):
    """Seeds (weights, split, shuffle), learning rates, optimizer numbers, L1, dropout (its
    masks too) and the activation differ per member; each member's numbers are its own run's."""
    members = [
        {"seed": 1, "optimizer.lr": 0.3},
        {"seed": 2, "optimizer.lr": 0.05, "optimizer.momentum": 0.9},
        {"seed": 3, "optimizer.lr": 0.1, "optimizer.weight_decay": 0.01},
        {"seed": 4, "optimizer.lr": 0.2, "model.l1": 0.001, "model.dropout": 0.3},
        {"seed": 5, "optimizer.lr": 0.2, "model.dropout": 0.5, "model.activation": "tanh"},
    ]
    summary = _population(tmp_path, *members, shared=SGD)
    assert list(summary.status) == ["ok"] * 5
    for k, values in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *SGD, *_overrides(values))
        row = summary.iloc[k].to_dict()
        _same(row, alone)
        assert row["best_epoch"] == best_epoch
        saved = json.loads((tmp_path / "pop" / f"member_{k:03d}" / "metrics.json").read_text())
        assert saved["test/acc"] == row["test/acc"]
    assert list(summary["optimizer.lr"]) == [0.3, 0.05, 0.1, 0.2, 0.2]
    assert list(summary["data.seed"]) == [1, 2, 3, 4, 5]  # what follows seed varies with it
    history = pd.read_csv(tmp_path / "pop" / "metrics.csv")
    assert set(history.member) == {0, 1, 2, 3, 4} and history.epoch.max() == 5


@pytest.mark.parametrize(
    "data",
    [
        ["data=grades", "data.options.n_samples=300"],  # regression: metrics in target units
        ["data=wine"],  # multiclass: macro F1
    ],
)
def test_members_equal_their_stand_alone_runs_for_every_task(tmp_path, data):
    members = [
        {"seed": 1, "optimizer.lr": 0.05},
        {"seed": 2, "optimizer.lr": 0.02, "optimizer.momentum": 0.5},
    ]
    base = [*BASE[2:], *data, *SGD]  # not moons' options
    summary = _population(tmp_path, *members, base=base)
    for k, values in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *_overrides(values), base=base)
        _same(summary.iloc[k].to_dict(), alone)
        assert summary.iloc[k].best_epoch == best_epoch


@pytest.mark.parametrize("data", [["data=moons", "data.options.n_samples=300"], ["data=grades"]])
def test_each_members_checkpoint_is_its_own_runs(tmp_path, data):
    """Member k's best.ckpt holds member k's hyperparameters (a regression member: its own
    target mean and std) and fitted data, as its stand-alone run's checkpoint does, and
    ``mlplab-eval`` scores it as the population did. Dropout and the activation change a net's
    modules: member 1's checkpoint has its own."""
    own = {"model.dropout": 0.3, "model.activation": "tanh"}
    members = [{"seed": 5, "optimizer.lr": 0.05}, {"seed": 6, "optimizer.lr": 0.1, **own}]
    base = [*BASE[2:], *data, *SGD]
    summary = _population(tmp_path, *members, base=base)
    for k, values in enumerate(members):
        _alone(tmp_path, f"alone{k}", *_overrides(values), base=base)
        ours = torch.load(
            tmp_path / "pop" / f"member_{k:03d}" / "checkpoints" / "best.ckpt", weights_only=True
        )
        theirs = torch.load(tmp_path / f"alone{k}" / "checkpoints" / "best.ckpt", weights_only=True)
        assert ours["hyper_parameters"] == theirs["hyper_parameters"]
        assert ours["datamodule_hyper_parameters"] == theirs["datamodule_hyper_parameters"]
        assert ours["mlplab"]["data_state"] == theirs["mlplab"]["data_state"]
        assert ours["epoch"] == theirs["epoch"]
        assert list(ours["state_dict"]) == list(theirs["state_dict"])
        for key, value in theirs["state_dict"].items():
            if key.startswith("net."):
                torch.testing.assert_close(ours["state_dict"][key], value, atol=1e-5, rtol=0)
        ckpt = tmp_path / "pop" / f"member_{k:03d}" / "checkpoints" / "best.ckpt"
        scored = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "accelerator=cpu"]))
        assert scored["test/loss"] == pytest.approx(summary.iloc[k]["test/loss"], abs=1e-6)
        config = (tmp_path / "pop" / f"member_{k:03d}" / "config.yaml").read_text()
        assert f"seed: {5 + k}" in config and "seeds: null" in config
    hps = [
        torch.load(tmp_path / "pop" / f"member_{k:03d}" / "checkpoints" / "best.ckpt")[
            "hyper_parameters"
        ]
        for k in (0, 1)
    ]
    assert hps[0]["optimizer"]["lr"] != hps[1]["optimizer"]["lr"]


def test_on_epoch_sees_every_active_member_and_prunes(tmp_path):
    """The hook gets each epoch's rows of the members still training; a member it returns
    stops there (status ``pruned``) and keeps its results so far."""
    seen: list[tuple[int, list[int]]] = []

    def on_epoch(epoch, rows):
        seen.append((epoch, [r["member"] for r in rows]))
        assert all({"val/loss", "val/acc", "train/acc"} <= set(r) for r in rows)
        return [1] if epoch == 1 else []

    summary = _population(tmp_path, {"seed": 1}, {"seed": 2}, on_epoch=on_epoch)
    assert seen[:3] == [(0, [0, 1]), (1, [0, 1]), (2, [0])]
    assert list(summary.status) == ["ok", "pruned"] and summary.iloc[1].stopped_epoch == 1
    pruned = json.loads((tmp_path / "pop" / "member_001" / "metrics.json").read_text())
    history = pd.read_csv(tmp_path / "pop" / "metrics.csv")
    assert history[history.member == 1].epoch.max() == 1
    assert pruned["train/loss"] == pytest.approx(
        history[history.member == 1]["train/loss"].iloc[-1]
    )
    with pytest.raises(ValueError, match=r"stops members \[7\]: training now are \[0, 1\]"):
        _population(tmp_path / "bad", {"seed": 1}, {"seed": 2}, on_epoch=lambda e, rows: [7])


def test_early_stopping_is_per_member_and_a_stopped_member_stays_put(tmp_path):
    stop = ["regularization=early_stopping", "trainer.max_epochs=30"]
    summary = _population(
        tmp_path,
        {"callbacks.early_stopping.patience": 1},
        {"callbacks.early_stopping.patience": 1000},
        shared=[*stop, "seed=1", "optimizer.lr=0.05"],
    )
    stopped, patient = summary.iloc[0], summary.iloc[1]
    assert stopped.status == "stopped" and stopped.stopped_epoch < 29
    assert patient.status == "ok" and pd.isna(patient.stopped_epoch)
    alone, best_epoch = _alone(
        tmp_path,
        "alone",
        *stop,
        "seed=1",
        "callbacks.early_stopping.patience=1",
        "optimizer.lr=0.05",
    )
    _same(stopped.to_dict(), alone)
    assert stopped.best_epoch == best_epoch


@pytest.mark.parametrize(
    "settings",
    [
        # the best checkpoint and early stopping watch val/acc, up: the members too
        [
            "regularization=early_stopping",
            "callbacks.early_stopping.monitor=val/acc",
            "callbacks.early_stopping.mode=max",
            "callbacks.early_stopping.patience=2",
            "callbacks.model_checkpoint.monitor=val/acc",
            "callbacks.model_checkpoint.mode=max",
            "trainer.max_epochs=15",
        ],
        # each member's first two mini-batches of every epoch, as Lightning limits one run
        ["+trainer.limit_train_batches=2"],
        ["+trainer.limit_train_batches=0.5", "trainer.min_epochs=3"],
        # validation every second epoch: the best and the scheduler see those epochs only
        ["trainer.check_val_every_n_epoch=2", "scheduler=plateau", "scheduler.patience=0"],
    ],
    ids=["monitor-mode", "limit-count", "limit-fraction", "val-every-2"],
)
def test_trainer_and_callback_settings_mean_what_they_mean_alone(tmp_path, settings):
    members = [{"seed": 1, "optimizer.lr": 0.3}, {"seed": 2, "optimizer.lr": 0.1}]
    summary = _population(tmp_path, *members, shared=[*SGD, *settings])
    for k, values in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *SGD, *settings, *_overrides(values))
        _same(summary.iloc[k].to_dict(), alone)
        assert summary.iloc[k].best_epoch == best_epoch


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("+trainer.max_steps=5", "trainer.max_steps=5 can't be used with a population"),
        ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches=2"),
        ("trainer.precision=64", "trainer.precision="),
        ("trainer.devices=2", "trainer.devices=2"),
        (
            "+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
            "callbacks.lr='lightning.pytorch.callbacks.LearningRateMonitor'",
        ),
        ("callbacks.model_checkpoint.save_top_k=3", "callbacks.model_checkpoint.save_top_k=3"),
        (
            "+callbacks.model_checkpoint.every_n_epochs=2",
            "callbacks.model_checkpoint.every_n_epochs=2",
        ),
    ],
)
def test_settings_a_population_cant_honour_are_refused_by_name(tmp_path, setting, named):
    with pytest.raises(ConfigError, match="^" + named.replace("[", r"\[").replace("$", r"\$")):
        _population(tmp_path, {"seed": 1}, {"seed": 2}, shared=[setting])
    assert not (tmp_path / "pop").exists()


def test_a_member_diverging_late_keeps_its_best_checkpoint(tmp_path, monkeypatch):
    """Like a stand-alone run, which stops and keeps its last good checkpoint."""
    modules = []
    original = PopulationModule.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        modules.append(self)

    monkeypatch.setattr(PopulationModule, "__init__", init)

    def blow_up(epoch, rows):  # member 1's weights go bad after two good epochs
        if epoch == 1:
            with torch.no_grad():
                modules[0].net.flat[1].fill_(float("inf"))
        return []

    summary = _population(
        tmp_path,
        {"optimizer.lr": 0.1},
        {"optimizer.lr": 0.1 + 1e-9},
        shared=[*SGD, "seed=1"],
        on_epoch=blow_up,
    )
    assert list(summary.status) == ["ok", "diverged"]
    assert summary.iloc[1].best_epoch == 1 and summary.iloc[1].stopped_epoch == 2
    member = tmp_path / "pop" / "member_001"
    assert torch.load(member / "checkpoints" / "best.ckpt", weights_only=True)["epoch"] == 1
    assert "epoch 2" in (member / "error.txt").read_text()


def test_a_diverging_member_fails_alone(tmp_path):
    shared = [*SGD, "seed=3"]
    summary = _population(tmp_path, {"optimizer.lr": 0.1}, {"optimizer.lr": 1e30}, shared=shared)
    assert list(summary.status) == ["ok", "diverged"]
    assert "diverged" in (tmp_path / "pop" / "member_001" / "error.txt").read_text()
    assert not (tmp_path / "pop" / "member_001" / "metrics.json").exists()
    alone, _ = _alone(tmp_path, "alone", *shared, "optimizer.lr=0.1")
    _same(summary.iloc[0].to_dict(), alone)


@pytest.mark.parametrize(
    "schedules",
    [
        [{"scheduler.step_size": 2}, {"scheduler.step_size": 3, "scheduler.gamma": 0.1}],
        [{}, {"scheduler.eta_min": 0.01}],
        [{"scheduler.patience": 0}, {"scheduler.patience": 1, "scheduler.factor": 0.2}],
    ],
    ids=["step", "cosine", "plateau"],
)
def test_members_schedule_their_learning_rates_like_stand_alone_runs(tmp_path, request, schedules):
    scheduler = f"scheduler={request.node.callspec.id}"
    members = [
        {"seed": 1, "optimizer.lr": 0.3, **schedules[0]},
        {"seed": 2, "optimizer.lr": 0.2, "optimizer.momentum": 0.5, **schedules[1]},
    ]
    summary = _population(tmp_path, *members, shared=[*SGD, scheduler])
    for k, values in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *SGD, scheduler, *_overrides(values))
        _same(summary.iloc[k].to_dict(), alone)
        assert summary.iloc[k].best_epoch == best_epoch


def test_members_may_differ_in_their_scheduler_type(tmp_path):
    step = "torch.optim.lr_scheduler.StepLR"
    cosine = "torch.optim.lr_scheduler.CosineAnnealingLR"
    members = [
        {"seed": 1, "scheduler._target_": step, "scheduler.step_size": 2, "scheduler.gamma": 0.5},
        {"seed": 2, "scheduler._target_": cosine, "scheduler.T_max": 6, "scheduler.eta_min": 0.0},
        {"seed": 3},  # none: a constant learning rate
    ]
    summary = _population(tmp_path, *members, shared=[*SGD, "optimizer.lr=0.3"])
    alone = [
        ["seed=1", "scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5"],
        ["seed=2", "scheduler=cosine", "scheduler.T_max=6", "scheduler.eta_min=0.0"],
        ["seed=3"],
    ]
    for k, overrides in enumerate(alone):
        metrics, best_epoch = _alone(tmp_path, f"alone{k}", *SGD, "optimizer.lr=0.3", *overrides)
        _same(summary.iloc[k].to_dict(), metrics)
        assert summary.iloc[k].best_epoch == best_epoch


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_members_clip_gradients_like_stand_alone_runs(tmp_path, algorithm):
    """Per-member trainer.gradient_clip_val (0: none) with a large learning rate, so the
    clipping changes every member's path; each ends with its own run's numbers."""
    clips = [0.05, 0.0, 0.5] if algorithm == "norm" else [0.01, 0.0, 0.1]
    members = [{"seed": k, "trainer.gradient_clip_val": c} for k, c in enumerate(clips)]
    shared = [*SGD, "optimizer.lr=0.5", f"trainer.gradient_clip_algorithm={algorithm}"]
    summary = _population(tmp_path, *members, shared=shared)
    assert list(summary.status) == ["ok"] * 3
    unclipped = _population(tmp_path / "unclipped", *[{"seed": k} for k in range(3)], shared=shared)
    assert summary["test/loss"][0] != pytest.approx(unclipped["test/loss"][0], abs=1e-4)
    for k, values in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *shared, *_overrides(values))
        _same(summary.iloc[k].to_dict(), alone)
        assert summary.iloc[k]["best_epoch"] == best_epoch


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["seeds=0"], "seeds=0"),
        (["seeds=-2"], "seeds=-2"),
        (["seeds=abc"], "seeds='abc'"),
        (["seeds=true"], "seeds=True"),
        (["seeds=1.5"], "seeds=1.5"),
        (["seeds=2", "ckpt_path=x.ckpt"], "ckpt_path='x.ckpt' is invalid: not set with seeds="),
        # a bad member value is found while the members are built: still nothing written
        (["seeds=2", "optimizer.lr=-1"], "optimizer.lr=-1 is invalid"),
        (["seeds=2", "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
        (["cv=2", "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
        (["seeds=2", "+trainer.max_steps=3"], "trainer.max_steps=3 can't be used"),
        (["seeds=2", "+optimizer.fused=true"], "fused=True is invalid: not an option"),
        # a metric no member logs: no best weights would be kept, no member would stop
        (["seeds=2", "callbacks.model_checkpoint.monitor=val/los"], "model_checkpoint.monitor="),
        (
            ["seeds=2", "regularization=early_stopping", "callbacks.early_stopping.monitor=x"],
            "callbacks.early_stopping.monitor='x' is invalid",
        ),
        (["cv=2", "scheduler=plateau", "scheduler.monitor=val/r2"], "scheduler.monitor='val/r2'"),
    ],
)
def test_bad_seeds_is_one_error_line(args, named, tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    with pytest.raises(SystemExit) as exit_info:
        train_main([*BASE, "logger=csv", f"paths.log_dir={tmp_path}", *args])
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1, err[-1500:]
    assert named in errors[0], errors[0]
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").rglob("*.json"))


def test_seeds_cli_reports_mean_and_std(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    args = [*BASE, "logger=csv", f"paths.log_dir={tmp_path}", "run_name=pop", "seeds=3"]
    train_main([*args, "trainer.enable_progress_bar=false"])
    out = capsys.readouterr().out
    assert "population: 3 of 3 seeds trained (42..44)" in out
    run_dir = tmp_path / "train" / "pop"
    summary = pd.read_csv(run_dir / "summary.csv")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(summary.seed) == [42, 43, 44] and list(summary["data.seed"]) == [42, 43, 44]
    config = (run_dir / "config.yaml").read_text()
    assert "seeds: 3" in config and "seed: ${seed}" in config  # rerun=<dir> repeats it
    assert metrics["test/acc"] == pytest.approx(summary["test/acc"].mean(), abs=1e-9)
    assert metrics["test/acc.std"] == pytest.approx(summary["test/acc"].std(), abs=1e-9)


def test_a_model_that_cant_be_stacked_trains_its_members_one_after_another(
    tmp_path, monkeypatch, capsys
):
    """A user's own LightningModule with seeds=: each member a stand-alone run in its member
    dir, the same summary and mean ± std."""
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    args = [*BASE, "logger=csv", f"paths.log_dir={tmp_path}", "run_name=pop", "model=example"]
    train_main([*args, "seeds=2", "trainer.max_epochs=3", "trainer.enable_progress_bar=false"])
    run_dir = tmp_path / "train" / "pop"
    summary = pd.read_csv(run_dir / "summary.csv")
    assert list(summary.seed) == [42, 43] and list(summary.status) == ["ok", "ok"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/loss"] == pytest.approx(summary["test/loss"].mean(), abs=1e-9)
    alone = train(
        compose_run(tmp_path / "alone", *BASE, "model=example", "seed=43", "trainer.max_epochs=3")
    )
    assert summary["test/loss"][1] == pytest.approx(alone["test/loss"], abs=1e-6)
    member = run_dir / "member_001"
    assert (member / "checkpoints" / "best.ckpt").is_file()
    assert "seed: 43" in (member / "config.yaml").read_text()
    history = pd.read_csv(run_dir / "metrics.csv")
    assert set(history.member) == {0, 1}


def test_members_are_built_as_build_model_builds_them(tmp_path):
    """Members after the first skip building a LightningModule: their hyperparameters and
    initial weights must still be exactly ``build_model``'s."""
    import lightning as L

    from mlplab.population.engine import MemberConfigs, _Chunk
    from mlplab.population.settings import population_settings
    from mlplab.run import build

    cfg = compose_run(tmp_path, *BASE, "optimizer=adam")
    members = [
        {"seed": 1},
        {"seed": 2, "model.dropout": 0.3, "optimizer.lr": 0.02},
        {"seed": 3, "model.l1": 0.01, "optimizer.betas": [0.8, 0.99]},
    ]
    configs = MemberConfigs(cfg, members)
    chunk = _Chunk(cfg, [configs[k] for k in range(3)], [tmp_path] * 3, population_settings(cfg))
    chunk.build(None)
    for k, values in enumerate(members):
        alone = compose_run(tmp_path, *BASE, "optimizer=adam", *_overrides(values))
        L.seed_everything(alone.seed, verbose=False)
        dm = build.build_datamodule(alone)
        dm.setup("fit")
        model = build.build_model(alone, dm)
        assert chunk.hparams[k] == dict(model.hparams)
        assert torch.equal(chunk.net.member(k).net[0][0].weight, model.net.net[0][0].weight)
        for key, value in model.net.state_dict().items():
            assert torch.equal(chunk.net.member(k).state_dict()[key], value), key


def test_member_seeding_leaves_the_random_state_of_seeding_each_and_refuses_bad_seeds(tmp_path):
    """Members before the last seed only torch's CPU generator (what their build draws from):
    afterwards Python's, numpy's and torch's generators are where seeding every member with
    ``seed_everything`` leaves them, and a seed out of its bounds is still its error."""
    import random

    import lightning as L
    import numpy as np

    from mlplab.population.engine import MemberConfigs, _Chunk
    from mlplab.population.settings import population_settings
    from mlplab.run import build

    cfg = compose_run(tmp_path, *BASE)
    configs = MemberConfigs(cfg, [{"seed": s} for s in (5, 6, 7)])
    chunk = _Chunk(cfg, [configs[k] for k in range(3)], [tmp_path] * 3, population_settings(cfg))
    chunk.build(None)
    after = (random.random(), float(np.random.rand()), torch.rand(1).item())
    for seed in (5, 6, 7):  # what the build did before: a full seeding per member
        alone = compose_run(tmp_path, *BASE, f"seed={seed}")
        L.seed_everything(seed, verbose=False)
        dm = build.build_datamodule(alone)
        dm.setup("fit")
        build.build_model(alone, dm)
    assert after == (random.random(), float(np.random.rand()), torch.rand(1).item())
    configs = MemberConfigs(cfg, [{"seed": 5}, {"seed": 2**33}, {"seed": 7}])
    chunk = _Chunk(cfg, [configs[k] for k in range(3)], [tmp_path] * 3, population_settings(cfg))
    with pytest.raises(ValueError, match="not in bounds"):
        chunk.build(None)


def test_bad_member_values_are_one_error_and_write_nothing(tmp_path):
    adam = ["optimizer=adam"]
    with pytest.raises(ConfigError, match="lr"):
        _population(tmp_path, {"optimizer.lr": 0.01}, {"optimizer.lr": -1.0}, shared=adam)
    assert not (tmp_path / "pop").exists()
    with pytest.raises(ConfigError, match=r"^trainer.gradient_clip_val=-1.0 is invalid"):
        _population(
            tmp_path, {"trainer.gradient_clip_val": 0.5}, {"trainer.gradient_clip_val": -1.0}
        )
    assert not (tmp_path / "pop").exists()
    with pytest.raises(ConfigError, match=r"^seed='abc' is invalid"):
        _population(tmp_path, {"seed": 1}, {"seed": "abc"})
    assert not (tmp_path / "pop").exists()
