"""mlplab-sweep population=K: K trials asked at once, trained as one population, told one by one.

Real training throughout, on 200 moons points for a few epochs: what is tested is that each
trial's value, state and run dir are what the one-by-one sweep (and a stand-alone run) gives.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from mlplab.config import compose_config
from mlplab.errors import ConfigError
from mlplab.population import engine
from mlplab.sweep import cli, launch, objective, report, retry
from mlplab.sweep.cli import sweep
from mlplab.train import train
from tests.conftest import QUIET, logged_keys

FIGURES_OFF = ["callbacks.learning_curves=null", "callbacks.decision_boundary=null"]
SGD_SPACE = {
    "optimizer.lr": {"type": "float", "low": 1.0e-3, "high": 0.5, "log": True},
    "optimizer.momentum": {"type": "float", "low": 0.0, "high": 0.9},
}


def _search(tmp_path, params: dict, epochs: int = 3, name: str = "pop", **keys) -> str:
    """``hparams_search=<tmp>/<name>.yaml``: SGD on 200 moons points, one thread."""
    search = {
        "metric": "val/loss",
        "direction": "minimize",
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "overrides": [
            "data=moons",
            "data.options.n_samples=200",
            f"trainer.max_epochs={epochs}",
            "optimizer=sgd",
            "threads=1",
            *FIGURES_OFF,
        ],
        "params": params,
        **keys,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(search))
    return f"hparams_search={path}"


def _argv(tmp_path, search: str, *args: str) -> list[str]:
    return [search, f"sweep_dir={tmp_path / 'sw'}", *QUIET, *args]


def _study(tmp_path, name: str = "pop") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=launch.study_storage(tmp_path / "sw"))


@pytest.fixture
def no_plots(monkeypatch):
    monkeypatch.setattr(report, "_save_plots", lambda *args: None)


@pytest.fixture
def count_train(monkeypatch):
    """The one-by-one path's train(), counted."""
    calls: list[str] = []
    real_train = objective.train

    def counted(cfg):
        calls.append(cfg.run_name)
        return real_train(cfg)

    monkeypatch.setattr(objective, "train", counted)
    return calls


def _member_rows(tmp_path, trial) -> pd.DataFrame:
    """The trial's rows of its population's metrics.csv (epoch, member, losses)."""
    pop = tmp_path / "sw" / trial.user_attrs["population"]
    summary = pd.read_csv(pop / "summary.csv")
    member = summary.index[summary.run_dir.str.endswith(f"trial_{trial.number}")][0]
    history = pd.read_csv(pop / "metrics.csv")
    return history[history.member == member].sort_values("epoch")


def test_population_trials_are_the_trials_alone(tmp_path, no_plots, count_train):
    argv = _argv(tmp_path, _search(tmp_path, SGD_SPACE), "n_trials=8", "population=4")
    study = sweep(argv)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    assert count_train == []  # no trial went through train() one by one
    assert [t.user_attrs["population"] for t in trials] == ["population_0"] * 4 + [
        "population_4"
    ] * 4
    for t in trials:
        run_dir = tmp_path / "sw" / f"trial_{t.number}"
        rows = _member_rows(tmp_path, t)
        # What Optuna got each epoch is the member's val/loss; the value is the best epoch's.
        assert list(t.intermediate_values) == list(rows.epoch) == [0, 1, 2]
        assert list(t.intermediate_values.values()) == pytest.approx(list(rows["val/loss"]))
        assert t.value == min(t.intermediate_values.values())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["val/loss"] == pytest.approx(t.intermediate_values[2], abs=1e-6)
        assert (run_dir / "checkpoints" / "best.ckpt").is_file()
        info = json.loads((run_dir / "run_info.json").read_text())
        assert (info["run_name"], info["output_dir"]) == (f"trial_{t.number}", str(run_dir))
        assert OmegaConf.load(run_dir / "config.yaml").optimizer.lr == t.params["optimizer.lr"]
    assert len({tuple(t.params.values()) for t in trials}) == 8

    # Trial 5 trained alone (train() with its overrides) reaches the same numbers.
    t = trials[5]
    alone_dir = tmp_path / "alone"
    alone = train(
        compose_config("train", [*t.user_attrs["overrides"], f"paths.output_dir={alone_dir}"])
    )
    epochs = pd.read_csv(alone_dir / "csv" / "metrics.csv").dropna(subset=["val/loss"])
    assert min(epochs["val/loss"]) == pytest.approx(t.value, abs=1e-5)
    member = json.loads((tmp_path / "sw" / "trial_5" / "metrics.json").read_text())
    assert set(member) == set(alone)
    for key, value in alone.items():
        assert member[key] == pytest.approx(value, abs=1e-5), key


def test_population_gives_the_one_by_one_sweeps_trials(tmp_path, no_plots):
    """The same command with and without population=3: the same params, the same values."""
    search = _search(tmp_path, SGD_SPACE, epochs=2)
    one = sweep([search, f"sweep_dir={tmp_path / 'one'}", *QUIET, "n_trials=3"])
    pop = sweep([search, f"sweep_dir={tmp_path / 'pop'}", *QUIET, "n_trials=3", "population=3"])
    for a, b in zip(one.trials, pop.trials, strict=True):
        assert a.params == b.params
        assert b.value == pytest.approx(a.value, abs=1e-5)
        assert b.intermediate_values == pytest.approx(a.intermediate_values, abs=1e-5)


class PruneOddTrials(optuna.pruners.BasePruner):
    """Prunes trials with an odd number once they have reported epoch 1."""

    def prune(self, study, trial) -> bool:
        return trial.number % 2 == 1 and (trial.last_step or 0) >= 1


def test_pruned_members_are_pruned_trials(tmp_path, no_plots, monkeypatch):
    monkeypatch.setattr(cli, "make_pruner", lambda spec: PruneOddTrials())
    study = sweep(_argv(tmp_path, _search(tmp_path, SGD_SPACE), "n_trials=4", "population=4"))
    summary = pd.read_csv(tmp_path / "sw" / "population_0" / "summary.csv")
    for t in study.trials:
        if t.number % 2:
            assert t.state == TrialState.PRUNED
            assert list(t.intermediate_values) == [0, 1]  # it stopped training at epoch 1
            assert t.value == t.intermediate_values[1]  # Optuna: a pruned trial's last report
            assert summary.status[t.number] == "pruned" and summary.stopped_epoch[t.number] == 1
        else:
            assert t.state == TrialState.COMPLETE
            assert list(t.intermediate_values) == [0, 1, 2]
            assert summary.status[t.number] == "ok"


def test_a_median_pruner_prunes_members_of_a_later_population(tmp_path, no_plots):
    pruner = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    search = _search(tmp_path, SGD_SPACE, pruner=pruner)
    study = sweep(_argv(tmp_path, search, "n_trials=8", "population=4"))
    states = [t.state for t in study.trials]
    assert states[:4] == [TrialState.COMPLETE] * 4  # nothing finished to compare with yet
    assert TrialState.PRUNED in states[4:], states
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}


SHARED_SPACE = {  # members can't differ in these: a population samples them once
    "model.hidden_sizes": {"type": "categorical", "choices": ["[8]", "[16]"]},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
}


def test_a_population_samples_what_members_share_once_and_the_rest_per_member(
    tmp_path, no_plots, count_train
):
    """Architecture and optimizer type come from each population's first trial; the learning
    rate is sampled for every trial: full populations of K, each trial still its own run."""
    params = {
        **SHARED_SPACE,
        "optimizer.lr": {"type": "float", "low": 1.0e-3, "high": 0.1, "log": True},
    }
    search = _search(tmp_path, params, epochs=2, sampler={"name": "random", "seed": 3})
    study = sweep(_argv(tmp_path, search, "n_trials=8", "population=4"))
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8 and count_train == []
    for first in (0, 4):
        group = trials[first : first + 4]
        assert {t.user_attrs["population"] for t in group} == {f"population_{first}"}
        shared = {(t.params["model.hidden_sizes"], t.params["optimizer"]) for t in group}
        assert len(shared) == 1  # one architecture and optimizer per population
        assert len({t.params["optimizer.lr"] for t in group}) == 4  # its own lr each
        assert [t.user_attrs.get("leader") for t in group[1:]] == [first] * 3
        assert len(pd.read_csv(tmp_path / "sw" / f"population_{first}" / "summary.csv")) == 4
        for t in group:
            saved = OmegaConf.load(tmp_path / "sw" / f"trial_{t.number}" / "config.yaml")
            assert saved.optimizer.lr == t.params["optimizer.lr"]
            assert str(list(saved.model.hidden_sizes)).replace(" ", "") == str(
                t.params["model.hidden_sizes"]
            )
    table = pd.read_csv(tmp_path / "sw" / "trials.csv")
    assert list(table.population) == ["population_0"] * 4 + ["population_4"] * 4
    # a trial trained alone reaches its member's numbers
    t = trials[6]
    alone = train(
        compose_config("train", [*t.user_attrs["overrides"], f"paths.output_dir={tmp_path / 'a'}"])
    )
    member = json.loads((tmp_path / "sw" / "trial_6" / "metrics.json").read_text())
    for key, value in alone.items():
        assert member[key] == pytest.approx(value, abs=1e-5), key


def test_trials_that_cant_be_stacked_train_as_separate_populations(tmp_path, no_plots):
    """A space without member parameters: K trials are asked as they come, and those that
    differ in what members share train as separate populations."""
    study = sweep(
        _argv(tmp_path, _search(tmp_path, SHARED_SPACE, epochs=2), "n_trials=6", "population=6")
    )
    trials = study.trials
    assert [t.state for t in trials if "duplicate_of" not in t.user_attrs] == [
        TrialState.COMPLETE
    ] * len([t for t in trials if "duplicate_of" not in t.user_attrs])
    groups: dict[str, list] = {}
    for t in trials:
        if "duplicate_of" not in t.user_attrs:
            groups.setdefault(t.user_attrs["population"], []).append(t)
    kinds = {(t.params["model.hidden_sizes"], t.params["optimizer"]) for t in trials}
    assert len(groups) == len(kinds) > 1  # one population per architecture and optimizer
    for name, members in groups.items():
        assert len({(t.params["model.hidden_sizes"], t.params["optimizer"]) for t in members}) == 1
        assert len(pd.read_csv(tmp_path / "sw" / name / "summary.csv")) == len(members)


def test_a_diverging_member_fails_alone_and_repeats_are_not_trained(tmp_path, no_plots):
    params = {"optimizer.lr": {"type": "categorical", "choices": [0.1, 1.0e12]}}
    study = sweep(_argv(tmp_path, _search(tmp_path, params), "n_trials=5", "population=5"))
    trials = study.trials
    assert {t.params["optimizer.lr"] for t in trials} == {0.1, 1.0e12}
    originals = {}
    for t in trials:
        lr = t.params["optimizer.lr"]
        if lr == 0.1:
            assert t.state == TrialState.COMPLETE
        else:
            assert t.state == TrialState.FAIL
            assert t.user_attrs["fail_reason"].startswith("DivergedError: training diverged")
        first = originals.setdefault(lr, t)
        if first is not t:  # the same config asked again in the batch: its result, not trained
            assert t.user_attrs["duplicate_of"] == first.number
            assert t.value == first.value
            assert not (tmp_path / "sw" / f"trial_{t.number}").exists()
    table = pd.read_csv(tmp_path / "sw" / "trials.csv")
    assert table.fail_reason.notna().sum() == sum(t.state == TrialState.FAIL for t in trials)


def test_a_member_whose_val_loss_is_not_finite_reports_nothing_to_the_pruner():
    """A member that diverged in an epoch's validation (val/loss nan or inf: it fails as
    DIVERGED, as a run alone raises before its pruning callback reports) reports nothing for
    that epoch, whatever the metric: a median pruner would prune a reported nan at once, and
    the trial would end PRUNED instead of FAIL with its reason."""
    from mlplab.sweep.population import Reporter

    median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    study = optuna.create_study(pruner=median)
    done = optuna.trial.create_trial(
        value=0.5,
        intermediate_values={0: 0.5},
        params={},
        distributions={},
    )
    study.add_trial(done)
    trials = [study.ask(), study.ask()]
    for metric in ("val/loss", "val/acc"):
        reporter = Reporter(metric, trials)
        rows = [
            {"epoch": 0, "member": 0, "val/loss": math.nan, "val/acc": 0.5},
            {"epoch": 0, "member": 1, "val/loss": math.inf, "val/acc": 0.5},
        ]
        assert reporter(0, rows) == []
        assert reporter.values == [{}, {}] and not reporter.pruned
    assert [t.number for t in study.get_trials() if t.intermediate_values] == [0]
    reporter = Reporter("val/loss", trials)
    assert reporter(0, [{"epoch": 0, "member": 1, "val/loss": 0.4}]) == []  # finite: reported
    assert reporter.values == [{}, {0: 0.4}]
    assert study.get_trials()[2].intermediate_values == {0: 0.4}


def test_population_1_is_the_one_by_one_path(tmp_path, no_plots, count_train, monkeypatch):
    def no_population(*args, **kwargs):
        raise AssertionError("population=1 must not train a population")

    monkeypatch.setattr(engine, "train_population", no_population)
    study = sweep(
        _argv(tmp_path, _search(tmp_path, SGD_SPACE, epochs=1), "n_trials=2", "population=1")
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert count_train == ["trial_0", "trial_1"]
    assert not list((tmp_path / "sw").glob("population_*"))


def test_wandb_a_run_per_trial_of_a_population_in_the_studys_group(
    tmp_path, no_plots, monkeypatch, wandb_sent
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    quiet = [o for o in QUIET if not o.startswith("logger=")]
    search = _search(tmp_path, SGD_SPACE, epochs=2)
    argv = [search, f"sweep_dir={tmp_path / 'sw'}", *quiet, "study_name=grp", "logger=wandb"]
    study = sweep([*argv, "n_trials=2", "population=2"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    trials = [tmp_path / "sw" / f"trial_{n}" for n in (0, 1)]
    ids = [(trial / "wandb_id").read_text() for trial in trials]
    assert sorted(wandb_sent["runs"]) == sorted(ids)  # a run per trial, in the trial's dir
    for trial, run_id in zip(trials, ids, strict=True):
        assert len(list((trial / "wandb").glob(f"offline-run-*-{run_id}"))) == 1
        (init,) = wandb_sent["runs"][run_id]["init"]
        assert (init["name"], init["group"], init["job_type"]) == (trial.name, "grp", "population")
        assert [row["epoch"] for row in wandb_sent["runs"][run_id]["log"]] == [0, 1]
    assert "val/loss" in logged_keys(wandb_sent)
    assert not list((tmp_path / "sw").glob("population_*/wandb"))  # no run of the population
    assert OmegaConf.load(tmp_path / "sw" / "trial_1" / "config.yaml").logger.wandb.group == "grp"


@pytest.mark.parametrize("replicate", ["cv=3", "seeds=2", "cv=3 in chunks of 4"])
def test_cv_and_seeds_trials_stack_their_members_across_trials(
    tmp_path, no_plots, count_train, monkeypatch, replicate, request
):
    """A cv=/seeds= trial is a population of its own (folds, seeds): a batch trains all its
    trials' members as one population (in chunks when they don't fit at once), and each trial
    ends with the value and the files it has when the sweep trains it alone."""
    if replicate.endswith("chunks of 4"):  # 9 members: 4 + 4 + 1, a trial's folds split
        monkeypatch.setattr(engine, "chunk_size", lambda need, n, bound, what: min(4, n))
        replicate = "cv=3"
    search = _search(tmp_path, SGD_SPACE, epochs=2)
    (tmp_path / "alone").mkdir()
    alone = sweep(_argv(tmp_path / "alone", search, "n_trials=3", replicate))
    assert count_train == ["trial_0", "trial_1", "trial_2"]
    count_train.clear()
    (tmp_path / "pop").mkdir()
    study = sweep(_argv(tmp_path / "pop", search, "n_trials=3", "population=3", replicate))
    assert count_train == []  # no trial trained alone
    k = 3 if replicate == "cv=3" else 2
    pops = list((tmp_path / "pop" / "sw").glob("population_*"))
    assert [p.name for p in pops] == ["population_0"]
    assert len(pd.read_csv(pops[0] / "summary.csv")) == 3 * k  # at once or in chunks
    chunked = "chunks" in request.node.callspec.id
    assert len(list(pops[0].glob("chunk_*"))) == (3 if chunked else 0)
    for a, b in zip(alone.trials, study.trials, strict=True):
        assert a.params == b.params  # the seeded sampler drew the same trials
        assert b.state == TrialState.COMPLETE and abs(a.value - b.value) < 1e-6
        one, many = (tmp_path / d / "sw" / f"trial_{b.number}" for d in ("alone", "pop"))
        ones, manys = (json.loads((d / "metrics.json").read_text()) for d in (one, many))
        assert ones.keys() == manys.keys() and "val/loss.std" in manys
        for key, value in ones.items():
            assert manys[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
        for name in ("summary.csv", "metrics.csv"):
            x, y = pd.read_csv(one / name), pd.read_csv(many / name)
            assert list(x.columns) == list(y.columns) and len(x) == len(y), name
            numbers = [c for c in x.columns if c != "run_dir" and x[c].dtype.kind == "f"]
            assert np.allclose(x[numbers], y[numbers], atol=1e-6, equal_nan=True), name
        assert (many / "config.yaml").is_file() and (many / "run_info.json").is_file()
        for m in range(k):
            assert (many / f"member_{m:03d}" / "checkpoints" / "best.ckpt").is_file()


def test_a_population_its_config_refuses_fails_its_trials_with_the_reason(tmp_path, no_plots):
    search = _search(tmp_path, SGD_SPACE, epochs=1)
    study = sweep(_argv(tmp_path, search, "n_trials=4", "population=2", "cv=500"))
    for t in study.trials:  # more folds than the smallest class has rows, said per trial
        assert t.state == TrialState.FAIL
        assert t.user_attrs["fail_reason"].startswith("ConfigError: cv=500 is invalid")
    assert not list((tmp_path / "sw").glob("trial_*"))


def test_a_replicates_trial_whose_folds_all_diverge_fails_and_the_others_dont_see_it(
    tmp_path, no_plots
):
    space = {
        "optimizer.lr": {"type": "categorical", "choices": [0.05, 1.0e30]},
        "seed": {"type": "int", "low": 0, "high": 1000},
    }
    search = _search(tmp_path, space, epochs=1)
    study = sweep(_argv(tmp_path, search, "n_trials=4", "population=4", "cv=2"))
    bad = [t for t in study.trials if t.params["optimizer.lr"] > 1]
    good = [t for t in study.trials if t.params["optimizer.lr"] < 1]
    assert bad and good  # the seeded sampler drew both, into one batch
    for t in bad:  # every fold diverged: no mean to report, as the trial alone
        assert t.state == TrialState.FAIL
        assert t.user_attrs["fail_reason"].startswith("FloatingPointError: val/loss was nan")
        table = pd.read_csv(tmp_path / "sw" / f"trial_{t.number}" / "summary.csv")
        assert list(table.status) == ["diverged"] * 2 and table.error.notna().all()
    for t in good:
        assert t.state == TrialState.COMPLETE and math.isfinite(t.value)
        table = pd.read_csv(tmp_path / "sw" / f"trial_{t.number}" / "summary.csv")
        assert "error" not in table and list(table.status) == ["ok"] * 2


def test_replicates_a_population_refuses_train_one_by_one(
    tmp_path, no_plots, count_train, monkeypatch
):
    real = engine.train_population

    def refused(cfg, members, *args, **kwargs):  # the batch's 4 folds refused; a trial's own 2
        if len(members) > 2:
            raise ConfigError("model.layer='x' is invalid: the same for every member")
        return real(cfg, members, *args, **kwargs)

    monkeypatch.setattr(engine, "train_population", refused)
    search = _search(tmp_path, SGD_SPACE, epochs=1)
    study = sweep(_argv(tmp_path, search, "n_trials=2", "population=2", "cv=2"))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert count_train == ["trial_0", "trial_1"]  # each alone: train() with its own folds
    assert not list((tmp_path / "sw").glob("population_*"))


def test_clipping_trials_stack(tmp_path, no_plots, count_train):
    search = _search(tmp_path, SGD_SPACE, epochs=1)
    argv = _argv(tmp_path, search, "n_trials=2", "population=2", "trainer.gradient_clip_val=0.5")
    study = sweep(argv)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert count_train == []  # no trial trained alone
    assert list((tmp_path / "sw").glob("population_*"))


def test_a_missing_metric_stops_the_sweep_with_one_line(tmp_path, capsys):
    search = _search(tmp_path, SGD_SPACE, epochs=1, metric="val/nope")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_argv(tmp_path, search, "n_trials=4", "population=2"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: metric='val/nope' is invalid")
    assert not (tmp_path / "sw").exists()  # a new sweep that could not run leaves nothing


@pytest.mark.parametrize("value", ["0", "-2", "abc", "2.5", "true"])
def test_bad_population_is_one_error_line(tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["hparams_search=toy", f"population={value}", f"sweep_dir={tmp_path / 'sw'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: population="), err
    assert "is invalid: a whole number ≥ 1" in err
    assert not (tmp_path / "sw").exists() and not (tmp_path / "logs").exists()


# A sweep killed (kill -9) while its second population trains: a wrapper around
# train_population writes a marker once that population has reported epoch 1 (so its
# checkpoint of epoch 0 is written), then sleeps. Trial 4 is pruned at epoch 0 (PruneTrial4).
STALL = """
import sys, time
from pathlib import Path
import optuna
import mlplab.population.engine as engine
import mlplab.sweep.cli as cli

class PruneTrial4(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return trial.number == 4

cli.make_pruner = lambda spec: PruneTrial4()
real, calls, marker = engine.train_population, [], Path(sys.argv[1])

def stalling(cfg, members, out_dir, on_epoch=None, **kwargs):
    calls.append(out_dir)
    def hook(epoch, rows):
        stop = on_epoch(epoch, rows)
        if len(calls) == 2 and epoch == 1:
            marker.write_text(str(out_dir))
            time.sleep(600)
        return stop
    return real(cfg, members, out_dir, on_epoch=hook, **kwargs)

engine.train_population = stalling
cli.main(sys.argv[2:])
"""


class PruneTrial4(optuna.pruners.BasePruner):
    """STALL's pruner, for the runs in this process: trial 4 stops at its first report."""

    def prune(self, study, trial) -> bool:
        return trial.number == 4


KILLED_ARGS = ("n_trials=8", "population=3")


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """(dir, search argument, kill time): ``dir/sw`` is the sweep dir of ``mlplab-sweep
    n_trials=8 population=3`` killed (kill -9) in its second population, after epoch 1."""
    root = tmp_path_factory.mktemp("killed")
    search = _search(root, SGD_SPACE)
    _kill_when_stalled(root, STALL, _argv(root, search, *KILLED_ARGS))
    return root, search, time.monotonic()


def _kill_when_stalled(cwd, script: str, argv: list[str]) -> None:
    """Run ``mlplab-sweep argv`` through ``script`` (its first argument: a marker file it
    writes where it stalls) and kill -9 it once the marker is there."""
    marker = cwd / "stalled"
    env = {k: v for k, v in os.environ.items() if k != "MLPLAB_RUN_ID"} | {"OMP_NUM_THREADS": "1"}
    with open(cwd / "first.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(marker), *argv],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 240
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert marker.exists(), (cwd / "first.log").read_text()[-3000:]
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def uninterrupted(killed, tmp_path_factory):
    """The same command run without a kill, in a dir of its own."""
    root = tmp_path_factory.mktemp("whole")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "make_pruner", lambda spec: PruneTrial4())
        mp.setattr(report, "_save_plots", lambda *args: None)
        return sweep(_argv(root, killed[1], *KILLED_ARGS)).trials, root / "sw"


def _rerun_killed(tmp_path, killed, monkeypatch, *args: str) -> list[str]:
    """Copy the killed sweep into ``tmp_path/sw``; the argv that runs it again, treating a
    heartbeat older than 1 s as a dead worker."""
    root, search, killed_at = killed
    shutil.copytree(root / "sw", tmp_path / "sw")
    monkeypatch.setattr(launch, "HEARTBEAT_S", 1)
    monkeypatch.setattr(launch, "GRACE_S", 1)
    monkeypatch.setattr(cli, "make_pruner", lambda spec: PruneTrial4())
    time.sleep(max(0.0, killed_at + 3 - time.monotonic()))
    return _argv(tmp_path, search, *(args or KILLED_ARGS))


def _metrics(sweep_dir, number: int) -> dict:
    return json.loads((sweep_dir / f"trial_{number}" / "metrics.json").read_text())


def test_a_killed_population_goes_on_from_its_checkpoint(
    tmp_path, killed, uninterrupted, no_plots, monkeypatch, capsys
):
    before = _study(killed[0]).trials
    assert [t.state for t in before] == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING] * 3
    ckpt = killed[0] / "sw" / "population_3" / "checkpoints" / "population.ckpt"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0  # epoch 1 was not saved
    # The killed trials had reported epoch 1 too (trial 4: pruned at epoch 0).
    assert [list(t.intermediate_values) for t in before[3:]] == [[0, 1], [0], [0, 1]]
    whole, whole_dir = uninterrupted
    # The seeded sampler asks the same params in both runs.
    assert [t.params for t in whole[:6]] == [t.params for t in before]

    study = sweep(_rerun_killed(tmp_path, killed, monkeypatch))
    out = capsys.readouterr().out
    trials = study.trials
    assert len(trials) == 11
    assert [t.state for t in trials[:6]] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL] * 3
    retries = trials[6:9]  # exactly the killed trials, with their params, in population_3
    assert [t.user_attrs["resumes"] for t in retries] == [3, 4, 5]
    assert [t.params for t in retries] == [t.params for t in trials[3:6]]
    assert [t.user_attrs["population"] for t in retries] == ["population_3"] * 3
    assert "population of 3: trials 6, 7, 8 (retries of 3, 4, 5, on from population_3)" in out
    assert f"population: resuming from {tmp_path / 'sw' / 'population_3'}" in out
    assert "note:" not in out
    assert "3 trials done, 5 to run (3 of them retries of killed trials)" in out
    assert "failed 3× worker killed, retried  (trials 3 as 6, 4 as 7, 5 as 8)" in out
    # ... and end as the uninterrupted sweep's trials 3-5: values, every epoch's report, files.
    for t, w in zip(retries, whole[3:6], strict=True):
        assert t.state == w.state
        assert t.value == pytest.approx(w.value, abs=1e-6)
        assert list(t.intermediate_values) == list(w.intermediate_values)
        assert t.intermediate_values == pytest.approx(w.intermediate_values, abs=1e-6)
        rows, whole_rows = _member_rows(tmp_path, t), _member_rows(whole_dir.parent, w)
        assert list(rows.epoch) == list(whole_rows.epoch)
        assert list(rows["val/loss"]) == pytest.approx(list(whole_rows["val/loss"]), abs=1e-6)
        ours, theirs = _metrics(tmp_path / "sw", t.number), _metrics(whole_dir, w.number)
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, abs=1e-6), key
    assert [t.state for t in retries] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.COMPLETE,
    ]
    assert list(retries[0].intermediate_values) == [0, 1, 2]
    # n_trials: 3 + 3 retries + 2 new count; the killed trials don't.
    assert [t.state for t in trials[9:]] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["population"] for t in trials[9:]] == ["population_9"] * 2
    assert retry.counted(study, cli.DONE) == 8 and cli.remaining_trials(study, 8) == 0
    table = pd.read_csv(tmp_path / "sw" / "trials.csv")
    assert list(table.fail_reason[3:6]) == [
        f"worker killed; resumed as trial {n} (from population_3's checkpoint)" for n in (6, 7, 8)
    ]
    assert list(table.resumes[6:9]) == [3, 4, 5] and table.resumes.isna().sum() == 8
    assert sweep(_argv(tmp_path, killed[1], *KILLED_ARGS)).trials == trials  # nothing to run


def _assert_retried_from_the_start(tmp_path, study, uninterrupted, tol: float = 1e-6) -> None:
    """The killed trials 3-5 were retried as 6-8, from the start in new dirs, and end as the
    uninterrupted sweep's (6 and 8; 7 is not trial 4, so PruneTrial4 lets it finish)."""
    trials, (whole, whole_dir) = study.trials, uninterrupted
    assert len(trials) == 11
    retries = trials[6:9]
    assert [t.user_attrs["resumes"] for t in retries] == [3, 4, 5]
    assert [t.params for t in retries] == [t.params for t in trials[3:6]]
    assert [t.state for t in retries] == [TrialState.COMPLETE] * 3
    assert "population_3" not in {t.user_attrs["population"] for t in trials[6:]}
    for t, w in zip(retries, whole[3:6], strict=True):
        assert list(t.intermediate_values) == [0, 1, 2]  # every epoch trained again
        assert t.intermediate_values[0] == pytest.approx(w.intermediate_values[0], abs=tol)
        if w.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(w.value, abs=tol)
            assert t.intermediate_values == pytest.approx(w.intermediate_values, abs=tol)
            assert _metrics(tmp_path / "sw", t.number) == pytest.approx(
                _metrics(whole_dir, w.number), abs=tol
            )
    assert retry.counted(study, cli.DONE) == 8 and cli.remaining_trials(study, 8) == 0
    table = pd.read_csv(tmp_path / "sw" / "trials.csv")
    assert list(table.fail_reason[3:6]) == [
        f"worker killed; retried as trial {n} (from the start)" for n in (6, 7, 8)
    ]


def _notes(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("note:")]


def test_a_damaged_checkpoint_retries_from_the_start(
    tmp_path, killed, uninterrupted, no_plots, monkeypatch, capsys
):
    argv = _rerun_killed(tmp_path, killed, monkeypatch)
    ckpt = tmp_path / "sw" / "population_3" / "checkpoints" / "population.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:300])  # cut short
    study = sweep(argv)
    (note,) = _notes(capsys.readouterr().out)
    assert note.startswith("note: trials 6, 7, 8 train from the start: population checkpoint="), (
        note
    )
    assert "population_3/checkpoints/population.ckpt' is invalid: the file is damaged" in note
    assert study.trials[6].user_attrs["population"] == "population_6"
    _assert_retried_from_the_start(tmp_path, study, uninterrupted)


def test_a_checkpoint_gone_after_the_retries_were_asked_for(
    tmp_path, killed, uninterrupted, no_plots, monkeypatch, capsys
):
    """Another worker failed the killed trials and enqueued their retries; then the
    population's checkpoint is deleted. Failing stale trials again enqueues nothing more."""
    argv = _rerun_killed(tmp_path, killed, monkeypatch)
    other = optuna.load_study(study_name="pop", storage=launch.study_storage(tmp_path / "sw"))
    for _ in range(2):
        launch.fail_stale(other, retry.RetryKilled(tmp_path / "sw"))
    assert [t.state for t in other.trials[3:]] == [TrialState.FAIL] * 3 + [TrialState.WAITING] * 3
    (tmp_path / "sw" / "population_3" / "checkpoints" / "population.ckpt").unlink()
    study = sweep(argv)
    (note,) = _notes(capsys.readouterr().out)
    assert note == "note: trials 6, 7, 8 train from the start: population_3 has no checkpoint"
    _assert_retried_from_the_start(tmp_path, study, uninterrupted)


def test_a_checkpoint_deleted_before_the_rerun_leaves_nothing_to_go_on_from(
    tmp_path, killed, no_plots, monkeypatch, capsys
):
    """As a killed one-by-one trial: FAIL (counted), not retried."""
    argv = _rerun_killed(tmp_path, killed, monkeypatch)
    (tmp_path / "sw" / "population_3" / "checkpoints" / "population.ckpt").unlink()
    study = sweep(argv)
    assert _notes(capsys.readouterr().out) == []
    trials = study.trials
    assert [t.state for t in trials[3:6]] == [TrialState.FAIL] * 3
    assert len(trials) == 8 and not any("resumes" in t.user_attrs for t in trials)
    assert [t.state for t in trials[6:]] == [TrialState.COMPLETE] * 2
    table = pd.read_csv(tmp_path / "sw" / "trials.csv")
    assert list(table.fail_reason[3:6]) == [report.NO_REASON] * 3


def test_another_population_size_retries_from_the_start(
    tmp_path, killed, uninterrupted, no_plots, monkeypatch, capsys
):
    """population=2 on the rerun: the 3 retries can't all be one population of 2; they train
    from the start (never with new trials), and the sweep ends as with population=3."""
    study = sweep(_rerun_killed(tmp_path, killed, monkeypatch, "n_trials=8", "population=2"))
    out = capsys.readouterr().out
    assert [n.split(":")[1] for n in _notes(out)] == [
        " trials 6, 7 train from the start",
        " trials 8 train from the start",
    ]
    assert "holds a population of 3 members, this run has 2" in _notes(out)[0]
    assert "population of 2: trials 6, 7 (retries of 3, 4)\n" in out
    places = [t.user_attrs["population"] for t in study.trials[6:]]
    assert places == ["population_6"] * 2 + ["population_8", "population_9", "population_10"]
    _assert_retried_from_the_start(tmp_path, study, uninterrupted)


def test_a_changed_config_retries_from_the_start(tmp_path, killed, no_plots, monkeypatch, capsys):
    """The rerun's command line changes what the members learn from: not continued."""
    argv = _rerun_killed(tmp_path, killed, monkeypatch)
    study = sweep([*argv, "model.dropout=0.1"])
    (note,) = _notes(capsys.readouterr().out)
    assert note.startswith("note: trials 6, 7, 8 train from the start: "), note
    assert "member 0 was trained with model.dropout=0.0 (now 0.1)" in note, note
    trials = study.trials
    assert [t.user_attrs["resumes"] for t in trials[6:9]] == [3, 4, 5]
    assert [t.user_attrs["population"] for t in trials[6:]] == ["population_6"] * 3 + [
        "population_9"
    ] * 2
    assert all(list(t.intermediate_values) == [0, 1, 2] for t in trials[6:])
    assert [t.state for t in trials[6:]] == [TrialState.COMPLETE] * 5
    assert cli.remaining_trials(study, 8) == 0


@pytest.mark.slow
def test_workers_train_populations_on_one_study(tmp_path):
    argv = _argv(tmp_path, _search(tmp_path, SGD_SPACE, epochs=2), "n_trials=6", "population=2")
    env = {k: v for k, v in os.environ.items() if k != "MLPLAB_RUN_ID"} | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mlplab.sweep", *argv, "workers=2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert 6 <= len(trials) <= 8  # workers stop at n_trials (a race may add one population)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)
    assert all(t.user_attrs["population"].startswith("population_") for t in trials)


# A population=2 cv=3 sweep killed (kill -9) in the second chunk of its first batch: the 6
# folds train in chunks of 4 (so trial 1's folds are split), the first chunk is done, the
# second has its checkpoint of epoch 0 and is killed after epoch 1.
STALL_REPLICATES = """
import sys, time
from pathlib import Path
import mlplab.population.checkpoint as checkpoint
import mlplab.population.engine as engine
import mlplab.sweep.cli as cli

engine.chunk_size = lambda need, n, bound, what: min(4, n)
marker = Path(sys.argv[1])
save = checkpoint.PopulationCheckpoint.on_train_epoch_end

def stalling(self, trainer, module):
    save(self, trainer, module)
    if "chunk_1" in str(self.path) and trainer.current_epoch == 1:
        marker.write_text(str(self.path))
        time.sleep(600)

checkpoint.PopulationCheckpoint.on_train_epoch_end = stalling
cli.main(sys.argv[2:])
"""
REPLICATE_ARGS = ("n_trials=2", "population=2", "cv=3")


def test_a_killed_batch_of_cv_trials_goes_on_from_its_chunks_checkpoints(
    tmp_path, no_plots, monkeypatch, capsys
):
    search = _search(tmp_path, SGD_SPACE, epochs=4, name="cv")
    (tmp_path / "killed").mkdir()
    argv = _argv(tmp_path / "killed", search, *REPLICATE_ARGS)
    _kill_when_stalled(tmp_path, STALL_REPLICATES, argv)
    killed_at = time.monotonic()
    pop = tmp_path / "killed" / "sw" / "population_0"
    assert torch.load(pop / "chunk_0" / "checkpoints" / "population.ckpt")["epoch"] == 3
    assert torch.load(pop / "chunk_1" / "checkpoints" / "population.ckpt")["epoch"] == 0
    before = _study(tmp_path / "killed", "cv").trials
    assert [t.state for t in before] == [TrialState.RUNNING] * 2
    assert [t.user_attrs["population"] for t in before] == ["population_0"] * 2

    monkeypatch.setattr(engine, "chunk_size", lambda need, n, bound, what: min(4, n))
    (tmp_path / "whole").mkdir()
    whole = sweep(_argv(tmp_path / "whole", search, *REPLICATE_ARGS))
    capsys.readouterr()
    monkeypatch.setattr(launch, "HEARTBEAT_S", 1)
    monkeypatch.setattr(launch, "GRACE_S", 1)
    time.sleep(max(0.0, killed_at + 3 - time.monotonic()))
    shutil.copytree(tmp_path / "killed", tmp_path / "damaged")  # the same, a chunk damaged
    damaged = tmp_path / "damaged" / "sw" / "population_0" / "chunk_1" / "checkpoints"
    (damaged / "population.ckpt").write_bytes(b"not a checkpoint")
    study = sweep(argv)
    out = capsys.readouterr().out
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2
    retries = trials[2:]
    assert [t.user_attrs["resumes"] for t in retries] == [0, 1]
    assert [t.user_attrs["population"] for t in retries] == ["population_0"] * 2
    assert "the members of trials 2, 3 (retries of 0, 1, on from population_0)" in out
    assert out.count("population: resuming from") == 2 and "note:" not in out
    for t, w in zip(retries, whole.trials, strict=True):  # ... as if never killed
        assert t.params == w.params and t.value == pytest.approx(w.value, abs=1e-6)
        ours = _metrics(tmp_path / "killed" / "sw", t.number)
        theirs = _metrics(tmp_path / "whole" / "sw", w.number)
        assert set(ours) == set(theirs) and "val/loss.std" in ours
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
        mine = tmp_path / "killed" / "sw" / f"trial_{t.number}"
        rows = pd.read_csv(mine / "metrics.csv")
        assert list(rows.epoch) == [e for e in range(4) for _ in range(3)]
        for m in range(3):
            assert (mine / f"member_{m:03d}" / "checkpoints" / "best.ckpt").is_file()
    # A damaged checkpoint: the retries train from the start in a dir of their own, same ends.
    again = sweep(_argv(tmp_path / "damaged", search, *REPLICATE_ARGS))
    out = capsys.readouterr().out
    assert "note: trials 2, 3 train from the start: " in out and "damaged" in out
    assert "population of 6: the members of trials 2, 3 (retries of 0, 1)" in out
    assert [t.user_attrs["population"] for t in again.trials[2:]] == ["population_2"] * 2
    for t, w in zip(again.trials[2:], whole.trials, strict=True):
        assert t.value == pytest.approx(w.value, abs=1e-6)
