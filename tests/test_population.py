"""Population training end to end: every member is the run ``mlplab-train`` would have made."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch

from mlplab.config import compose_config, compose_run
from mlplab.errors import ConfigError
from mlplab.evaluate import evaluate
from mlplab.population.module import PopulationModule
from mlplab.population.run import check_stackable, train_population
from mlplab.train import main as train_main
from mlplab.train import train

BASE = [
    "data=moons",
    "data.options.n_samples=300",
    "trainer.max_epochs=6",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
]


def _alone(tmp_path, name: str, *overrides: str, base=BASE) -> tuple[dict, int]:
    """A stand-alone run: its metrics and the epoch of its best checkpoint."""
    run_dir = tmp_path / name
    metrics = train(compose_run(run_dir, *base, *overrides))
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["epoch"]
    return metrics, best


def _population(tmp_path, *members: list[str], base=BASE) -> pd.DataFrame:
    cfgs = [compose_run(tmp_path / "pop", *base, *m) for m in members]
    return train_population(cfgs, tmp_path / "pop")


def _same(member: dict, alone: dict) -> None:
    """Every metric the stand-alone run reports, with the same name and value."""
    assert {k for k in member if "/" in k and k != "run_dir"} == set(alone)
    for key in alone:
        assert member[key] == pytest.approx(alone[key], abs=1e-5), key


def test_members_equal_their_stand_alone_runs(tmp_path):
    """Seeds (weights, split, shuffle), learning rates, optimizer numbers and early-stopping
    patience differ per member; each member's numbers are its own run's."""
    members = [
        ["seed=1", "optimizer=sgd", "optimizer.lr=0.3"],
        ["seed=2", "optimizer=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9"],
        ["seed=3", "optimizer=sgd", "optimizer.lr=0.1", "optimizer.weight_decay=0.01"],
        ["seed=4", "optimizer=sgd", "optimizer.lr=0.2", "model.l1=0.001"],
    ]
    summary = _population(tmp_path, *members)
    assert list(summary.status) == ["ok", "ok", "ok", "ok"]
    for k, overrides in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *overrides)
        row = summary.iloc[k].to_dict()
        _same(row, alone)
        assert row["best_epoch"] == best_epoch
        saved = json.loads((tmp_path / "pop" / f"member_{k:03d}" / "metrics.json").read_text())
        assert saved["test/acc"] == row["test/acc"]
    assert set(summary["optimizer.lr"]) == {0.3, 0.05, 0.1, 0.2}
    history = pd.read_csv(tmp_path / "pop" / "metrics.csv")
    assert set(history.member) == {0, 1, 2, 3} and history.epoch.max() <= 5


@pytest.mark.parametrize(
    "data",
    [
        ["data=grades", "data.options.n_samples=300"],  # regression: metrics in target units
        ["data=wine"],  # multiclass: macro F1
    ],
)
def test_members_equal_their_stand_alone_runs_for_every_task(tmp_path, data):
    members = [
        [*data, "seed=1", "optimizer=sgd", "optimizer.lr=0.05"],
        [*data, "seed=2", "optimizer=sgd", "optimizer.lr=0.02", "optimizer.momentum=0.5"],
    ]
    base = BASE[2:]  # not moons' options
    summary = _population(tmp_path, *members, base=base)
    for k, overrides in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *overrides, base=base)
        _same(summary.iloc[k].to_dict(), alone)
        assert summary.iloc[k].best_epoch == best_epoch


def test_on_epoch_sees_every_active_member_and_prunes(tmp_path):
    """The hook gets each epoch's rows of the members still training; a member it returns
    stops there (status ``pruned``) and keeps its results so far."""
    seen: list[tuple[int, list[int]]] = []

    def on_epoch(epoch, rows):
        seen.append((epoch, [r["member"] for r in rows]))
        assert all({"val/loss", "val/acc", "train/acc"} <= set(r) for r in rows)
        return [1] if epoch == 1 else []

    cfgs = [compose_run(tmp_path / "pop", *BASE, f"seed={s}") for s in (1, 2)]
    summary = train_population(cfgs, tmp_path / "pop", on_epoch=on_epoch)
    assert seen[:3] == [(0, [0, 1]), (1, [0, 1]), (2, [0])]
    assert list(summary.status) == ["ok", "pruned"] and summary.iloc[1].stopped_epoch == 1
    pruned = json.loads((tmp_path / "pop" / "member_001" / "metrics.json").read_text())
    history = pd.read_csv(tmp_path / "pop" / "metrics.csv")
    assert history[history.member == 1].epoch.max() == 1
    assert pruned["train/loss"] == pytest.approx(
        history[history.member == 1]["train/loss"].iloc[-1]
    )


def test_a_member_checkpoint_is_a_normal_run_for_eval(tmp_path):
    summary = _population(tmp_path, ["seed=5"], ["seed=6"])
    for k in (0, 1):
        ckpt = tmp_path / "pop" / f"member_{k:03d}" / "checkpoints" / "best.ckpt"
        torch.load(ckpt, weights_only=True)  # loads like any run's
        scored = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "accelerator=cpu"]))
        assert scored["test/acc"] == pytest.approx(summary.iloc[k]["test/acc"], abs=1e-6)
        assert scored["test/loss"] == pytest.approx(summary.iloc[k]["test/loss"], abs=1e-6)
        config = (tmp_path / "pop" / f"member_{k:03d}" / "config.yaml").read_text()
        assert f"seed: {5 + k}" in config


def test_early_stopping_is_per_member_and_a_stopped_member_stays_put(tmp_path):
    stop = ["regularization=early_stopping", "trainer.max_epochs=30"]
    summary = _population(
        tmp_path,
        [*stop, "seed=1", "callbacks.early_stopping.patience=1", "optimizer.lr=0.05"],
        [*stop, "seed=1", "callbacks.early_stopping.patience=1000", "optimizer.lr=0.05"],
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


def test_a_member_diverging_late_keeps_its_best_checkpoint(tmp_path):
    """Like a stand-alone run, which stops and keeps its last good checkpoint."""
    cfgs = [
        compose_run(tmp_path / "pop", *BASE, "seed=1", "optimizer=sgd", f"optimizer.lr={lr}")
        for lr in (0.1, 0.1)
    ]

    def blow_up(epoch, rows):  # member 1's weights go bad after two good epochs
        if epoch == 1:
            with torch.no_grad():
                for p in module_ref[0].net.parameters():
                    p[1].fill_(float("inf"))
        return []

    module_ref = []
    original = PopulationModule.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        module_ref.append(self)

    PopulationModule.__init__ = init
    try:
        summary = train_population(cfgs, tmp_path / "pop", on_epoch=blow_up)
    finally:
        PopulationModule.__init__ = original
    assert list(summary.status) == ["ok", "diverged"]
    assert summary.iloc[1].best_epoch == 1 and summary.iloc[1].stopped_epoch == 2
    member = tmp_path / "pop" / "member_001"
    assert torch.load(member / "checkpoints" / "best.ckpt", weights_only=True)["epoch"] == 1
    assert "epoch 2" in (member / "error.txt").read_text()


def test_a_diverging_member_fails_alone(tmp_path):
    sgd = ["optimizer=sgd", "seed=3"]
    summary = _population(tmp_path, [*sgd, "optimizer.lr=0.1"], [*sgd, "optimizer.lr=1e30"])
    assert list(summary.status) == ["ok", "diverged"]
    assert "diverged" in (tmp_path / "pop" / "member_001" / "error.txt").read_text()
    assert not (tmp_path / "pop" / "member_001" / "metrics.json").exists()
    alone, _ = _alone(tmp_path, "alone", *sgd, "optimizer.lr=0.1")
    _same(summary.iloc[0].to_dict(), alone)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ("model.hidden_sizes=[8]", "differ in model.hidden_sizes"),
        ("optimizer=adam", "differ in optimizer._target_"),
        ("data.batch_size=8", "differ in data.batch_size"),
        ("trainer.gradient_clip_algorithm=value", "differ in trainer.gradient_clip_algorithm"),
    ],
)
def test_members_that_cant_be_stacked_are_refused(tmp_path, other, message):
    sgd = [*BASE, "optimizer=sgd"]
    cfgs = [compose_run(tmp_path, *sgd), compose_run(tmp_path, *sgd, other)]
    with pytest.raises(ConfigError, match=message):
        check_stackable(cfgs)


@pytest.mark.parametrize(
    "schedules",
    [
        [
            "scheduler=step scheduler.step_size=2",
            "scheduler=step scheduler.step_size=3 scheduler.gamma=0.1",
        ],
        ["scheduler=cosine", "scheduler=cosine scheduler.eta_min=0.01"],
        [
            "scheduler=plateau scheduler.patience=0",
            "scheduler=plateau scheduler.patience=1 scheduler.factor=0.2",
        ],
    ],
)
def test_members_schedule_their_learning_rates_like_stand_alone_runs(tmp_path, schedules):
    members = [
        ["seed=1", "optimizer=sgd", "optimizer.lr=0.3", *schedules[0].split()],
        [
            "seed=2",
            "optimizer=sgd",
            "optimizer.lr=0.2",
            "optimizer.momentum=0.5",
            *schedules[1].split(),
        ],
    ]
    summary = _population(tmp_path, *members)
    for k, overrides in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *overrides)
        _same(summary.iloc[k].to_dict(), alone)
        assert summary.iloc[k].best_epoch == best_epoch


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_members_clip_gradients_like_stand_alone_runs(tmp_path, algorithm):
    """Per-member trainer.gradient_clip_val (0: none) with a large learning rate, so the
    clipping changes every member's path; each ends with its own run's numbers."""
    clips = [0.05, 0.0, 0.5] if algorithm == "norm" else [0.01, 0.0, 0.1]
    members = [
        [f"seed={k}", "optimizer=sgd", "optimizer.lr=0.5", f"trainer.gradient_clip_val={c}"]
        for k, c in enumerate(clips)
    ]
    shared = [*BASE, f"trainer.gradient_clip_algorithm={algorithm}"]
    summary = _population(tmp_path, *members, base=shared)
    assert list(summary.status) == ["ok"] * 3
    unclipped = _population(tmp_path / "unclipped", *[m[:-1] for m in members], base=shared)
    assert summary["test/loss"][0] != pytest.approx(unclipped["test/loss"][0], abs=1e-4)
    for k, overrides in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *overrides, base=shared)
        _same(summary.iloc[k].to_dict(), alone)
        assert summary.iloc[k]["best_epoch"] == best_epoch


def test_members_must_share_the_scheduler_type_and_monitor(tmp_path):
    with pytest.raises(ConfigError, match="differ in scheduler._target_"):
        check_stackable(
            [compose_run(tmp_path, *BASE, s) for s in ("scheduler=step", "scheduler=cosine")]
        )
    plateau = "scheduler=plateau"
    with pytest.raises(ConfigError, match="differ in scheduler.monitor"):
        check_stackable(
            [
                compose_run(tmp_path, *BASE, plateau, m)
                for m in ("scheduler.monitor=val/acc", "scheduler.monitor=val/loss")
            ]
        )


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
    assert list(summary.seed) == [42, 43, 44]
    assert "seeds: 3" in (run_dir / "config.yaml").read_text()  # rerun=<dir> repeats it
    assert metrics["test/acc"] == pytest.approx(summary["test/acc"].mean(), abs=1e-9)
    assert metrics["test/acc.std"] == pytest.approx(summary["test/acc"].std(), abs=1e-9)


def test_members_are_built_as_build_model_builds_them(tmp_path):
    """Members after the first skip building a LightningModule: their hyperparameters and
    initial weights must still be exactly ``build_model``'s."""
    import lightning as L

    from mlplab.population.members import build_members as _build_members
    from mlplab.run import build

    members = [
        ["seed=1"],
        ["seed=2", "model.dropout=0.3", "optimizer=adam", "optimizer.lr=0.02"],
        ["seed=3", "model.l1=0.01", "optimizer=adam", "optimizer.betas=[0.8,0.99]"],
    ]
    cfgs = [compose_run(tmp_path, *BASE, "optimizer=adam", *m) for m in members]
    datamodules, nets, hparams, _ = _build_members(cfgs)
    for cfg, dm, net, hp in zip(cfgs, datamodules, nets, hparams, strict=True):
        L.seed_everything(cfg.seed, verbose=False)
        model = build.build_model(cfg, dm)
        assert hp == dict(model.hparams)
        for (name, a), (_, b) in zip(
            net.state_dict().items(), model.net.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name


def test_member_seeding_leaves_the_random_state_of_seeding_each_and_refuses_bad_seeds(tmp_path):
    """Members before the last seed only torch's CPU generator (what their build draws from):
    afterwards Python's, numpy's and torch's generators are where seeding every member with
    ``seed_everything`` leaves them, and a seed out of its bounds is still its error."""
    import random

    import lightning as L
    import numpy as np

    from mlplab.population.members import build_members as _build_members
    from mlplab.run import build

    cfgs = [compose_run(tmp_path, *BASE, f"seed={s}") for s in (5, 6, 7)]
    _build_members(cfgs)
    after = (random.random(), float(np.random.rand()), torch.rand(1).item())
    for cfg in cfgs:  # what the build did before: a full seeding per member
        L.seed_everything(cfg.seed, verbose=False)
        dm = build.build_datamodule(cfg)
        dm.setup("fit")
        build.build_model(cfg, dm)
    assert after == (random.random(), float(np.random.rand()), torch.rand(1).item())
    cfgs[1].seed = 2**33
    with pytest.raises(ValueError, match="not in bounds"):
        _build_members(cfgs)


def test_bad_member_optimizer_values_are_one_error(tmp_path):
    cfgs = [
        compose_run(tmp_path, *BASE, f"seed={s}", "optimizer=adam", f"optimizer.lr={lr}")
        for s, lr in ((1, 0.01), (2, -1.0))
    ]
    with pytest.raises(ConfigError, match="lr"):
        train_population(cfgs, tmp_path / "pop")
    assert not (tmp_path / "pop").exists()
    cfgs = [
        compose_run(tmp_path, *BASE, f"seed={s}", f"trainer.gradient_clip_val={clip}")
        for s, clip in ((1, 0.5), (2, -1.0))
    ]
    with pytest.raises(ConfigError, match=r"^trainer.gradient_clip_val=-1.0 is invalid"):
        train_population(cfgs, tmp_path / "pop")
    assert not (tmp_path / "pop").exists()


def test_compose_runs_equals_composing_each_member(tmp_path):
    """The fast path (compose per config-group set, then apply values) gives Hydra's configs,
    and a member whose override can't apply as a value gets Hydra's own error."""
    from omegaconf import OmegaConf

    from mlplab.composer import compose_runs

    members = [
        ["seed=3", "optimizer=adam", "optimizer.lr=0.01", "optimizer.betas=[0.8,0.99]"],
        ["optimizer=sgd", "seed=4", "optimizer.lr=0.1", "model.hidden_sizes=[8]", "data=wine"],
        [
            "seed=5",
            "optimizer=adam",
            "optimizer.lr=0.02",
            "data.batch_size=full",
            "optimizer.lr=0.03",
        ],
        ["seed=6", "optimizer=adam", "optimizer.lr=0.01", "model.dropout=0.5", "run_name=x"],
    ]
    common = ["trainer.max_epochs=3", "data.batch_size=16"]
    fast = compose_runs(tmp_path, [[*common, *m] for m in members])
    for cfg, m in zip(fast, members, strict=True):
        slow = compose_run(tmp_path, *common, *m)
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(slow)
    assert fast[2].optimizer.lr == 0.03 and fast[2].data.batch_size == "full"
    # each member is its own copy, with the schema's types and struct mode as Hydra gives them
    fast[0].optimizer.lr = 0.5
    assert fast[3].optimizer.lr == 0.01
    for cfg in (fast[0], compose_run(tmp_path, *common)):
        with pytest.raises(Exception, match="seed"):
            cfg.seed = "abc"
        with pytest.raises(Exception, match="nope"):
            cfg.nope = 1
    with pytest.raises(Exception, match="nope"):
        compose_runs(tmp_path, [["seed=1"], ["seed=2", "model.nope=1"]])
    with pytest.raises(Exception, match="seed"):
        compose_runs(tmp_path, [["seed=1"], ["seed=abc"]])
