"""mlplab-sweep population=K: K trials asked at once, trained as one population, told one by one.

Real training throughout, on 200 moons points for a few epochs: what is tested is that each
trial's value, state and run dir are what the one-by-one sweep (and a stand-alone run) gives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from mlplab.population import run as population_run
from mlplab.sweep import cli, launch, objective, report
from mlplab.sweep.cli import sweep
from mlplab.sweep.objective import compose_train
from mlplab.train import train
from tests.conftest import QUIET

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
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'sw' / 'study.db'}")


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
    alone = train(compose_train([*t.user_attrs["overrides"], f"paths.output_dir={alone_dir}"]))
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


def test_trials_that_cant_be_stacked_train_as_separate_populations(tmp_path, no_plots):
    params = {
        "model.hidden_sizes": {"type": "categorical", "choices": ["[8]", "[16]"]},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "optimizer.lr": {"type": "float", "low": 1.0e-3, "high": 0.1, "log": True},
    }
    study = sweep(
        _argv(tmp_path, _search(tmp_path, params, epochs=2), "n_trials=6", "population=6")
    )
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    groups: dict[str, list] = {}
    for t in trials:
        groups.setdefault(t.user_attrs["population"], []).append(t)
    kinds = {(t.params["model.hidden_sizes"], t.params["optimizer"]) for t in trials}
    assert len(groups) == len(kinds) > 1  # one population per architecture and optimizer
    for name, members in groups.items():
        assert len({(t.params["model.hidden_sizes"], t.params["optimizer"]) for t in members}) == 1
        assert len(pd.read_csv(tmp_path / "sw" / name / "summary.csv")) == len(members)
        for t in members:
            saved = OmegaConf.load(tmp_path / "sw" / f"trial_{t.number}" / "config.yaml")
            assert str(list(saved.model.hidden_sizes)).replace(" ", "") == str(
                t.params["model.hidden_sizes"]
            )


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


def test_population_1_is_the_one_by_one_path(tmp_path, no_plots, count_train, monkeypatch):
    def no_population(*args, **kwargs):
        raise AssertionError("population=1 must not train a population")

    monkeypatch.setattr(population_run, "train_population", no_population)
    study = sweep(
        _argv(tmp_path, _search(tmp_path, SGD_SPACE, epochs=1), "n_trials=2", "population=1")
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert count_train == ["trial_0", "trial_1"]
    assert not list((tmp_path / "sw").glob("population_*"))


def test_wandb_one_run_per_population_in_the_studys_group(tmp_path, no_plots, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    quiet = [o for o in QUIET if not o.startswith("logger=")]
    search = _search(tmp_path, SGD_SPACE, epochs=2)
    argv = [search, f"sweep_dir={tmp_path / 'sw'}", *quiet, "study_name=grp", "logger=wandb"]
    study = sweep([*argv, "n_trials=2", "population=2"])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    (run,) = (tmp_path / "sw").glob("population_*/wandb/offline-run-*/*.wandb")
    record = run.read_bytes()
    assert b"grp" in record and b"val/loss/member_000" in record and b"member_001" in record
    assert not list((tmp_path / "sw").glob("trial_*/wandb"))  # no run per trial
    assert OmegaConf.load(tmp_path / "sw" / "trial_1" / "config.yaml").logger.wandb.group == "grp"


def test_a_cv_trial_trains_one_by_one(tmp_path, no_plots, count_train):
    """A cv= trial is a population of its own (its folds): trials go one by one."""
    search = _search(tmp_path, SGD_SPACE, epochs=1)
    argv = _argv(tmp_path, search, "n_trials=2", "population=2", "cv=2")
    study = sweep(argv)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert count_train == ["trial_0", "trial_1"]
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


# The first run, killed (kill -9) while its second population trains: a wrapper around
# train_population writes a marker after that population's first epoch, then sleeps.
STALL = """
import sys, time
from pathlib import Path
import mlplab.population.run as run

real, calls, marker = run.train_population, [], Path(sys.argv[1])

def stalling(cfgs, out_dir, member_dirs=None, on_epoch=None):
    calls.append(out_dir)
    def hook(epoch, rows):
        stop = on_epoch(epoch, rows)
        if len(calls) == 2:
            marker.write_text(str(out_dir))
            time.sleep(600)
        return stop
    return real(cfgs, out_dir, member_dirs=member_dirs, on_epoch=hook)

run.train_population = stalling
from mlplab.sweep.cli import main
main(sys.argv[2:])
"""


def test_a_killed_population_resumes(tmp_path, monkeypatch):
    argv = _argv(tmp_path, _search(tmp_path, SGD_SPACE), "n_trials=8", "population=3")
    marker = tmp_path / "stalled"
    env = {k: v for k, v in os.environ.items() if k != "MLPLAB_RUN_ID"} | {"OMP_NUM_THREADS": "1"}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", STALL, str(marker), *argv],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 240
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert marker.exists(), (tmp_path / "first.log").read_text()[-3000:]
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    states = [t.state for t in _study(tmp_path).trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING] * 3  # K left RUNNING

    # The same command again; its storage treats a heartbeat older than 1 s as a dead worker.
    monkeypatch.setattr(launch, "HEARTBEAT_S", 1)
    monkeypatch.setattr(launch, "GRACE_S", 1)
    time.sleep(3)  # past the grace period (sqlite's clock counts whole seconds)
    study = sweep(argv)
    trials = study.trials
    assert [t.number for t in trials] == list(range(8))  # n_trials in all, none more
    assert [t.state for t in trials] == (
        [TrialState.COMPLETE] * 3 + [TrialState.FAIL] * 3 + [TrialState.COMPLETE] * 2
    )
    assert [t.user_attrs.get("population") for t in trials[6:]] == ["population_6"] * 2
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 8  # no params repeated
    for t in trials[3:6]:  # killed after epoch 0: its report is kept, no metrics were written
        assert list(t.intermediate_values) == [0]
        assert not (tmp_path / "sw" / f"trial_{t.number}" / "metrics.json").exists()
    for t in trials:
        if t.state == TrialState.COMPLETE:
            metrics = tmp_path / "sw" / f"trial_{t.number}" / "metrics.json"
            assert json.loads(metrics.read_text())["val/loss"] >= t.value - 1e-6
    table = pd.read_csv(tmp_path / "sw" / "trials.csv")
    assert list(table.state) == [s.name for s in (t.state for t in trials)]
    assert list(table.fail_reason[3:6]) == [report.NO_REASON] * 3
    assert sweep(argv).trials == trials  # complete: a third run trains nothing


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
