"""mlplab-sweep: Optuna search over composed train configs, run in process."""

from __future__ import annotations

import sys
import time

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from mlplab import sweep as sweep_mod
from mlplab.errors import ConfigError
from mlplab.sweep import (
    available_searches,
    compose_train,
    load_search,
    merge_overrides,
    parse_args,
    sweep,
)
from tests.conftest import QUIET, run_cli

TINY = [*QUIET, "trainer.max_epochs=2", "data.options.n_samples=200"]


def _study(sweep_dir, name="toy") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'study.db'}")


@pytest.fixture
def count_train(monkeypatch):
    """Wrap the in-process train(): count calls; ``crash_on`` trial numbers raise."""
    calls: list[str] = []
    crash_on: set[int] = set()
    real_train = sweep_mod.train

    def fake_train(cfg):
        calls.append(cfg.run_name)
        if int(cfg.run_name.removeprefix("trial_")) in crash_on:
            raise RuntimeError("boom (injected by the test)")
        return real_train(cfg)

    monkeypatch.setattr(sweep_mod, "train", fake_train)
    return calls, crash_on


@pytest.mark.parametrize("name", available_searches())
def test_shipped_search_spaces_compose(name, tmp_path):
    """Every value of every shipped search space makes a valid train config."""
    search = load_search(name)
    base = [*search.get("overrides", []), f"paths.output_dir={tmp_path}"]
    for key, spec in search.params.items():
        values = spec.choices if spec.type == "categorical" else [spec.low, spec.high]
        for value in values:
            cfg = compose_train([*base, f"{key}={value}"])
            assert OmegaConf.select(cfg, key) is not None


def test_merge_overrides_later_wins():
    got = merge_overrides(["logger=csv", "optimizer=sgd"], ["optimizer=adam", "+x=1"], ["~x"])
    assert got == ["logger=csv", "optimizer=adam", "~x"]


def test_sweep_records_failed_trial_and_best_reruns(tmp_path, count_train, capsys):
    calls, crash_on = count_train
    crash_on.add(2)
    sweep_dir = tmp_path / "sw"
    study = sweep(["hparams_search=toy", "n_trials=6", f"sweep_dir={sweep_dir}", *TINY])
    out = capsys.readouterr().out
    assert "trial 2 failed: RuntimeError: boom (injected by the test)" in out

    states = {t.number: t.state for t in study.trials}
    assert len(states) == 6 and states[2] == TrialState.FAIL
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for n, s in states.items() if n != 2)
    table = pd.read_csv(sweep_dir / "trials.csv")
    assert len(table) == 6 and list(table.state).count("FAIL") == 1
    for name in ("best.yaml", "best_params.yaml", "optimization_history.png"):
        assert (sweep_dir / name).is_file(), name

    best = OmegaConf.load(sweep_dir / "best.yaml")
    assert "hydra" not in best and "callbacks" in best and "optuna_pruning" not in best.callbacks
    assert "output_dir: ${hydra:runtime.output_dir}" in (sweep_dir / "best.yaml").read_text()
    result = run_cli(
        "--config-dir",
        str(sweep_dir),
        "--config-name",
        "best",
        "trainer.max_epochs=1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "logs" / "train").is_dir()  # a fresh run dir, not the trial's


def test_resume_runs_only_the_remaining_trials(tmp_path, count_train):
    calls, _ = count_train
    argv = ["hparams_search=toy", f"sweep_dir={tmp_path}", *TINY]
    sweep([*argv, "n_trials=3"])
    first = {t.number: t.datetime_start for t in _study(tmp_path).trials}
    assert len(calls) == 3

    sweep([*argv, "n_trials=5"])
    trials = _study(tmp_path).trials
    assert len(trials) == 5 and len(calls) == 5
    assert {t.number: t.datetime_start for t in trials[:3]} == first  # not re-run

    sweep([*argv, "n_trials=5"])  # already complete: nothing runs
    assert len(calls) == 5


def test_bad_search_name_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mlplab-sweep", "hparams_search=nope"])
    with pytest.raises(SystemExit) as exit_info:
        sweep_mod.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: hparams_search='nope' is invalid") and "toy" in err


def test_command_line_fixes_a_searched_key(tmp_path, count_train, capsys):
    """A train override of a searched key wins and that key is no longer searched."""
    study = sweep(
        ["hparams_search=toy", "n_trials=1", f"sweep_dir={tmp_path}", "optimizer=sgd", *TINY]
    )
    assert "optimizer" not in study.trials[0].params
    assert "optimizer=sgd" in study.trials[0].user_attrs["overrides"]
    assert "optimizer is fixed on the command line" in capsys.readouterr().out


@pytest.mark.slow
def test_parallel_workers_share_one_study(tmp_path):
    result = run_cli(
        "hparams_search=toy",
        "n_trials=4",
        "workers=2",
        f"sweep_dir={tmp_path}",
        *TINY,
        cwd=tmp_path,
        module="mlplab.sweep",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    trials = _study(tmp_path).trials
    assert 4 <= len(trials) <= 5  # workers stop at n_trials (one may overshoot by a trial)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert (tmp_path / "best.yaml").is_file()


@pytest.mark.slow
def test_wandb_trials_are_separate_runs_in_one_group(tmp_path):
    argv = ["hparams_search=toy", "n_trials=2", f"sweep_dir={tmp_path}", "study_name=grp"]
    study = sweep([*argv, *TINY, "logger=wandb"])  # offline unless WANDB_MODE=online
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for n in (0, 1):
        assert len(list((tmp_path / f"trial_{n}" / "wandb").glob("offline-run-*"))) == 1
        cfg = OmegaConf.load(tmp_path / f"trial_{n}" / "config.yaml")
        assert cfg.logger.wandb.group == "grp"


@pytest.mark.slow
def test_workers_as_a_job_array_through_submitit(tmp_path):
    """launcher=slurm submits the workers as one job array; submitit_local runs that path here."""
    argv = [
        "hparams_search=toy",
        "n_trials=4",
        "workers=2",
        "launcher=submitit_local",
        "slurm.gpus_per_node=0",
        "slurm.cpus_per_task=1",
        f"sweep_dir={tmp_path}",
    ]
    sweep([*argv, *TINY])
    trials = _study(tmp_path).trials
    assert 4 <= len(trials) <= 5
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len(list((tmp_path / "submitit").glob("*_result.pkl"))) == 2  # both tasks finished
    assert (tmp_path / "best.yaml").is_file()


def test_bad_launcher_is_named():
    with pytest.raises(ConfigError, match="launcher='pbs' is invalid"):
        parse_args(["hparams_search=toy", "launcher=pbs"])


@pytest.mark.slow
def test_trials_of_a_killed_run_are_failed_not_left_running(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(sweep_mod, "GRACE_S", 2)
    storage = sweep_mod.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="toy", storage=storage)
    orphan = study.ask()  # a trial whose worker died: RUNNING, heartbeat never sent again
    storage.record_heartbeat(orphan._trial_id)
    time.sleep(3)  # past the (patched) grace period
    study = sweep(["hparams_search=toy", "n_trials=2", f"sweep_dir={tmp_path}", *TINY])
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and states.count(TrialState.RUNNING) == 0
    assert len(states) == 2  # the dead trial counts toward n_trials: one new trial ran


def test_trial_value_is_the_best_epoch_not_the_last(tmp_path):
    argv = ["hparams_search=toy", "n_trials=2", f"sweep_dir={tmp_path}", *TINY]
    study = sweep([*argv, "trainer.max_epochs=4"])
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for t in complete:
        assert len(t.intermediate_values) >= 2
        assert t.value == min(t.intermediate_values.values())  # toy minimizes val/loss
