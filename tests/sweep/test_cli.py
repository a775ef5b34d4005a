"""mlplab-sweep: Optuna search over composed train configs, run in process.

Most tests replace ``train()`` by an instant stand-in (``fake_train``): what is tested is the
sweep's own bookkeeping (seeds, resume, duplicates, failures, values, reports). A few run the
real ``train()`` on 200 moons points for an epoch or two.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from mlplab.config import compose_config
from mlplab.errors import ConfigError
from mlplab.sweep import cli, launch, objective, report
from mlplab.sweep.cli import parse_args, remaining_trials, sweep
from mlplab.sweep.objective import best_epoch_value, merge_overrides
from mlplab.sweep.report import best_config_yaml
from mlplab.sweep.search import available_searches, check_search, derive_seed, make_sampler, suggest
from tests.conftest import QUIET, run_cli

TINY = [*QUIET, "trainer.max_epochs=2", "data.options.n_samples=200"]


def _study(sweep_dir, name="toy") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=launch.study_storage(sweep_dir))


def _search_file(tmp_path, params: dict, **keys) -> str:
    """``hparams_search=<tmp>/tiny.yaml``: a small search on 200 moons points (study "tiny")."""
    search = {
        "metric": "val/loss",
        "direction": "minimize",
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "overrides": ["data=moons", "data.options.n_samples=200", "trainer.max_epochs=1"],
        "params": params,
        **keys,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(search))
    return f"hparams_search={path}"


FINITE = {  # 2 × 2 = 4 configs in all
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "model.activation": {"type": "categorical", "choices": ["relu", "tanh"]},
}


@pytest.fixture
def count_train(monkeypatch):
    """Wrap the real in-process train(): count calls; ``crash_on`` trial numbers raise."""
    calls: list[str] = []
    crash_on: set[int] = set()
    real_train = objective.train

    def counted_train(cfg):
        calls.append(cfg.run_name)
        if int(cfg.run_name.removeprefix("trial_")) in crash_on:
            raise RuntimeError("boom (injected by the test)")
        return real_train(cfg)

    monkeypatch.setattr(objective, "train", counted_train)
    return calls, crash_on


@pytest.fixture
def fake_train(monkeypatch):
    """Replace train() by an instant stand-in. ``plan.value(cfg, n_calls)`` is the metric it
    returns (default: the config's learning rate, so equal configs give equal values),
    ``plan.curve`` is reported as the epochs' metric, ``plan.raises[n]`` is raised by trial n."""
    calls: list = []
    plan = SimpleNamespace(
        metric="val/loss",
        value=lambda cfg, n: float(cfg.optimizer.lr),
        curve=[],
        raises={},
    )

    def fake(cfg):
        calls.append(cfg)
        number = int(cfg.run_name.removeprefix("trial_"))
        if number in plan.raises:
            raise plan.raises[number]
        for step, value in enumerate(plan.curve):
            objective._active_trial.report(value, step)
        return {plan.metric: plan.value(cfg, len(calls))}

    monkeypatch.setattr(objective, "train", fake)
    return calls, plan


@pytest.fixture
def no_plots(monkeypatch):
    """Skip the two plots (~0.5 s a sweep) where a test runs several sweeps and checks
    something else; the slow end-to-end tests draw them."""
    monkeypatch.setattr(report, "_save_plots", lambda *args: None)


# --- search files -------------------------------------------------------------------------


@pytest.mark.parametrize("name", available_searches())
def test_shipped_search_spaces_compose(name, tmp_path):
    """Every value of every shipped search space makes a valid train config."""
    cfg, _ = parse_args([f"hparams_search={name}"])  # as mlplab-sweep composes it
    search = check_search(cfg.hparams_search, cfg.study_name)
    base = [*search.get("overrides", []), f"paths.output_dir={tmp_path}"]
    for key, spec in search.params.items():
        values = spec.choices if spec.type == "categorical" else [spec.low, spec.high]
        for value in values:
            cfg = compose_config("train", [*base, f"{key}={value}"])
            assert OmegaConf.select(cfg, key) is not None


# --- the numbers sweep.py computes ----------------------------------------------------------


def test_derive_seed_separates_workers_and_resumes():
    seed = derive_seed(42, 0, 0)
    assert seed == derive_seed(42, 0, 0)  # the same commands draw the same trials again
    assert 0 <= seed < 2**32  # numpy's RandomState (inside Optuna's samplers) takes it
    others = [derive_seed(42, 1, 0), derive_seed(42, 0, 3), derive_seed(43, 0, 0)]
    assert len({seed, *others}) == 4
    # seed + worker + n_history would make these collide: worker 1 of a fresh run and
    # worker 0 of a run resumed after one trial.
    assert derive_seed(42, 1, 0) != derive_seed(42, 0, 1)


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_workers_first_proposals_differ(name):
    """Workers sharing one seed would propose the very same trials."""
    spec = OmegaConf.create({"name": name, "seed": 42})

    def first_proposal(worker, n_history=0):
        study = optuna.create_study(sampler=make_sampler(spec, worker, n_history))
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_proposal(0) != first_proposal(1)
    assert first_proposal(0) != first_proposal(0, n_history=3)  # a resumed run: new points
    assert first_proposal(0) == first_proposal(0)  # reproducible


def test_remaining_trials_counts_finished_trials_only():
    study = optuna.create_study()
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        study.tell(study.ask(), 1.0 if state == TrialState.COMPLETE else None, state=state)
    study.ask()  # RUNNING: not finished, so not counted
    assert remaining_trials(study, 5) == 2
    assert remaining_trials(study, 3) == 0
    assert remaining_trials(study, 2) == 0  # never negative


def test_merge_overrides_later_wins():
    got = merge_overrides(["logger=csv", "optimizer=sgd"], ["optimizer=adam", "+x=1"], ["~x"])
    assert got == ["logger=csv", "optimizer=adam", "~x"]
    # the replacing override stands where the later group put it
    assert merge_overrides(["a=1", "b=1"], ["a=2"]) == ["b=1", "a=2"]
    assert merge_overrides(["a=1"], [], ["++a=3"]) == ["++a=3"]


def test_suggest_writes_one_exact_override_per_param():
    params = OmegaConf.create(
        {
            "optimizer.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "data.batch_size": {"type": "int", "low": 8, "high": 256, "log": True},
            "trainer.max_epochs": {"type": "int", "low": 1, "high": 9},
            "model.hidden_sizes": {"type": "categorical", "choices": ["[8]", "[16,16]"]},
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "flag": {"type": "categorical", "choices": [True, False, None]},
        }
    )
    fixed = {
        "optimizer.lr": 0.0012345678901234,
        "model.dropout": 0.25,
        "data.batch_size": 32,
        "trainer.max_epochs": 3,
        "model.hidden_sizes": "[16,16]",
        "optimizer": "adam",
        "flag": True,
    }
    assert suggest(optuna.trial.FixedTrial(fixed), params) == [
        "optimizer.lr=0.0012345678901234",  # full precision, not rounded
        "model.dropout=0.25",
        "data.batch_size=32",
        "trainer.max_epochs=3",
        "model.hidden_sizes=[16,16]",
        "optimizer=adam",
        "flag=true",  # Hydra's spelling
    ]
    assert suggest(optuna.trial.FixedTrial({**fixed, "flag": None}), params)[-1] == "flag=null"

    trial = optuna.create_study().ask()
    suggest(trial, params)
    dist = trial.distributions
    assert dist["optimizer.lr"] == FloatDistribution(1e-4, 0.1, log=True)
    assert dist["model.dropout"] == FloatDistribution(0.0, 0.5, log=False)
    assert dist["data.batch_size"] == IntDistribution(8, 256, log=True)
    assert dist["trainer.max_epochs"] == IntDistribution(1, 9, log=False)
    assert dist["optimizer"] == CategoricalDistribution(["sgd", "adam"])


def test_best_epoch_value_follows_direction():
    study = optuna.create_study()
    trial = study.ask()
    for step, value in enumerate([0.5, 0.9, math.nan, 0.7]):  # max 0.9, min 0.5, last 0.7
        trial.report(value, step)
    assert best_epoch_value(trial, "maximize", last=0.7) == 0.9
    assert best_epoch_value(trial, "minimize", last=0.7) == 0.5  # the nan epoch is skipped
    silent = study.ask()  # nothing reported (e.g. a test/ metric): the returned value
    assert best_epoch_value(silent, "maximize", last=0.42) == 0.42


@pytest.mark.parametrize(
    ("direction", "curve", "best"),
    [("minimize", [0.5, 0.3, 0.4], 0.3), ("maximize", [0.5, 0.9, 0.7], 0.9)],
)
def test_trial_value_is_the_best_epoch_not_the_last(tmp_path, fake_train, direction, curve, best):
    _, plan = fake_train
    plan.curve, plan.value = curve, lambda cfg, n: curve[-1]
    search = _search_file(tmp_path, FINITE, direction=direction)
    study = sweep([search, "n_trials=1", f"sweep_dir={tmp_path / 'sw'}"])
    assert study.trials[0].value == best != curve[-1]
    assert study.metric_names == ["val/loss"]  # optuna-dashboard names its axis by it


LRS = {"optimizer.lr": {"type": "categorical", "choices": [0.01, 0.02, 0.03, 0.04, 0.05]}}


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_the_printed_ranking_and_best_agree_with_the_studys_best(
    tmp_path, fake_train, no_plots, capsys, direction
):
    """Each trial's value is its learning rate: the table is ranked best first, and
    "best: trial N", best.yaml and best_params.yaml name the study's own best trial."""
    search = _search_file(tmp_path, LRS, direction=direction, sampler={"name": "random", "seed": 1})
    study = sweep([search, "n_trials=6", f"sweep_dir={tmp_path / 'sw'}"])
    out = capsys.readouterr().out
    table = out[out.index("val/loss  params") :].splitlines()[1:]
    ranked = [float(line.split()[1]) for line in table if line.strip()[:1].isdigit()]
    values = sorted({t.value for t in study.trials}, reverse=direction == "maximize")
    assert ranked == sorted(ranked, reverse=direction == "maximize") and ranked[0] == values[0]
    best = study.best_trial
    assert best.value == values[0]
    assert f"best: trial {best.number};" in out
    saved = yaml.safe_load((tmp_path / "sw" / "best_params.yaml").read_text())
    assert saved["value"] == best.value and saved["params"] == best.params
    assert f"optimizer.lr={best.params['optimizer.lr']}" in str(best.user_attrs["overrides"])
    assert OmegaConf.load(tmp_path / "sw" / "best.yaml").optimizer.lr == best.params["optimizer.lr"]


def test_trial_value_comes_from_the_pruning_callback(tmp_path):
    """Real training: the pruning callback reports each epoch, the value is their best."""
    argv = ["hparams_search=toy", "n_trials=1", f"sweep_dir={tmp_path}", *TINY]
    study = sweep([*argv, "trainer.max_epochs=3"])
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    assert len(trial.intermediate_values) == 3
    assert trial.value == min(trial.intermediate_values.values())  # toy minimizes val/loss


def test_best_config_yaml_keeps_run_dir_and_run_name_as_interpolations():
    text = best_config_yaml(["optimizer=adam", "optimizer.lr=0.0123", "model.hidden_sizes=[16,16]"])
    assert "output_dir: ${hydra:runtime.output_dir}" in text
    assert "run_name: ${run_id:}" in text
    best = OmegaConf.create(text)
    assert best.task_name == "train"  # not the trial's "sweep"
    assert list(best.defaults) == ["train_schema", {"hydra": "default"}, "_self_"]
    assert best.optimizer.lr == 0.0123 and list(best.model.hidden_sizes) == [16, 16]
    assert "adam" in best.optimizer._target_.lower()
    # what depends on the run dir follows it, instead of pointing at the trial's dir
    assert "default_root_dir: ${paths.output_dir}" in text
    assert "unused" not in text


# --- resume --------------------------------------------------------------------------------


def _resume_3_then_5(sweep_dir, calls, capsys, *overrides: str) -> None:
    """n_trials=3, then the same command with n_trials=5, then once more."""
    argv = ["hparams_search=toy", f"sweep_dir={sweep_dir}", *overrides]
    sweep([*argv, "n_trials=3"])
    first = {t.number: t.datetime_start for t in _study(sweep_dir).trials}
    assert len(calls) == 3

    sweep([*argv, "n_trials=5"])
    assert "study toy: 3 trials done, 2 to run" in capsys.readouterr().out
    trials = _study(sweep_dir).trials
    assert len(trials) == 5 and len(calls) == 5
    assert {t.number: t.datetime_start for t in trials[:3]} == first  # not re-run
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == 5, params  # the resumed run explored new points

    sweep([*argv, "n_trials=5"])  # already complete: nothing runs
    assert "5 trials done, 0 to run" in capsys.readouterr().out
    assert len(calls) == 5


def test_resume_runs_only_the_remaining_trials_and_never_repeats_params(
    tmp_path, fake_train, no_plots, capsys
):
    calls, _ = fake_train
    _resume_3_then_5(tmp_path, calls, capsys)


@pytest.mark.slow
def test_resume_with_real_training(tmp_path, count_train, capsys):
    calls, _ = count_train
    _resume_3_then_5(
        tmp_path, calls, capsys, *QUIET, "trainer.max_epochs=1", "data.options.n_samples=200"
    )


def test_the_same_commands_give_the_same_trials(tmp_path, fake_train, no_plots):
    """Seeds come from (seed, worker, history): resuming makes new points, reproducibly."""
    runs = []
    for name in ("a", "b"):
        argv = ["hparams_search=toy", f"sweep_dir={tmp_path / name}"]
        sweep([*argv, "n_trials=1"])
        study = sweep([*argv, "n_trials=2"])
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]
    assert runs[0][1] != runs[0][0]  # the resumed run did not start over


def test_a_repeated_config_is_not_retrained(tmp_path, fake_train, no_plots, capsys):
    """A finite space: a proposal equal to a finished trial takes its value (Optuna's FAQ)."""
    calls, plan = fake_train
    plan.value = lambda cfg, n: float(n)  # a retrain would give a new value
    plan.raises = {0: optuna.TrialPruned()}  # a pruned config stays pruned
    sweep_dir = tmp_path / "sw"
    study = sweep([_search_file(tmp_path, FINITE), "n_trials=7", f"sweep_dir={sweep_dir}"])

    trials = study.trials
    repeats = [t for t in trials if "duplicate_of" in t.user_attrs]
    distinct = {tuple(sorted(t.params.items())) for t in trials}
    assert len(repeats) == 7 - len(distinct) >= 3
    assert len(calls) == len(distinct)  # each config trained once
    for t in repeats:
        earlier = trials[t.user_attrs["duplicate_of"]]
        assert earlier.number < t.number and "duplicate_of" not in earlier.user_attrs
        assert earlier.params == t.params and earlier.state == t.state
        assert t.value == earlier.value
    table = pd.read_csv(sweep_dir / "trials.csv")
    expected = [t.user_attrs.get("duplicate_of") for t in trials]
    assert [None if pd.isna(v) else int(v) for v in table.duplicate_of] == expected
    out = capsys.readouterr().out
    assert f"({len(repeats)} repeated an earlier trial's params: not retrained)" in out


# --- failures ------------------------------------------------------------------------------


class Diverged(Exception):
    """Any exception type train() may raise (e.g. for a non-finite loss)."""


def test_failed_trials_record_why_and_the_sweep_goes_on(tmp_path, fake_train, capsys):
    calls, plan = fake_train
    plan.raises = {
        1: Diverged("train/loss is nan at epoch 3\nthe last good checkpoint is ..."),
        3: RuntimeError("boom (injected by the test)"),
    }
    plan.value = lambda cfg, n: math.nan if n == 3 else float(cfg.optimizer.lr)  # trial 2
    sweep_dir = tmp_path / "sw"
    study = sweep(["hparams_search=toy", "n_trials=4", f"sweep_dir={sweep_dir}"])

    reasons = {
        1: "Diverged: train/loss is nan at epoch 3",
        2: "FloatingPointError: val/loss was nan in every epoch",
        3: "RuntimeError: boom (injected by the test)",
    }
    assert len(calls) == 4
    for t in study.trials:
        expected = TrialState.FAIL if t.number in reasons else TrialState.COMPLETE
        assert t.state == expected
        assert t.user_attrs.get("fail_reason") == reasons.get(t.number)
    table = pd.read_csv(sweep_dir / "trials.csv")
    assert table.fail_reason.fillna("").tolist() == [reasons.get(n, "") for n in range(4)]
    out = capsys.readouterr().out
    assert "trial 1 failed: Diverged: train/loss is nan at epoch 3" in out
    assert "4 trials: 1 complete, 3 fail" in out
    assert "failed 1× RuntimeError: boom (injected by the test)  (trials 3)" in out
    assert (sweep_dir / "best.yaml").is_file()


def test_trials_run_with_the_imports_frozen_and_the_heap_is_given_back(tmp_path, fake_train):
    """The collection after each trial skips the objects that existed before the trials (the
    imports); after the sweep, a trial that raised included, nothing stays frozen."""
    calls, plan = fake_train
    frozen: list[int] = []
    plan.value = lambda cfg, n: frozen.append(gc.get_freeze_count()) or float(cfg.optimizer.lr)
    plan.raises = {1: RuntimeError("boom (injected by the test)")}
    before = gc.get_freeze_count()
    sweep(["hparams_search=toy", "n_trials=3", f"sweep_dir={tmp_path / 'sw'}"])
    assert len(calls) == 3 and len(frozen) == 2
    assert all(count > 10_000 for count in frozen)  # torch, Lightning, pandas, optuna, …
    assert gc.get_freeze_count() == before


def test_a_missing_metric_stops_the_sweep_with_one_line(tmp_path, count_train, capsys):
    """Real training: a metric train() never produces would fail every trial alike."""
    calls, _ = count_train
    sweep_dir = tmp_path / "sw"
    search = _search_file(tmp_path, FINITE, metric="val/nope")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([search, "n_trials=3", f"sweep_dir={sweep_dir}", *QUIET])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: metric='val/nope' is invalid")
    assert "'val/loss'" in err  # what train() did return
    assert len(calls) == 1  # stopped after the first trial
    assert not sweep_dir.exists()  # a sweep that could not run leaves nothing


def test_workers_stop_at_n_trials_counting_other_workers_running_trials(tmp_path, fake_train):
    calls, _ = fake_train
    storage = launch.study_storage(tmp_path)
    study = optuna.create_study(study_name="toy", storage=storage)
    study.tell(study.ask(), 1.0)  # one finished trial
    study.ask()  # another worker's trial, still running
    sweep(["hparams_search=toy", "n_trials=4", f"sweep_dir={tmp_path}", "worker=0"])
    # 1 complete + 1 running + 2 new = 4: the running one counts, or 3 would have run
    assert len(calls) == 2 and len(_study(tmp_path).trials) == 4


# --- the command line: one error line, exit 2, nothing written -----------------------------

BAD_PARAMS = {
    "not_a_mapping": ({"optimizer.lr": 0.1}, "params.optimizer.lr=0.1 is invalid"),
    "bad_type": (
        {"optimizer.lr": {"type": "floaty", "low": 0.1, "high": 1}},
        "params.optimizer.lr.type='floaty' is invalid",
    ),
    "low_not_below_high": (
        {"optimizer.lr": {"type": "float", "low": 1, "high": 0.1}},
        "needs float low < high",
    ),
    "int_with_float_bounds": (
        {"trainer.max_epochs": {"type": "int", "low": 1.5, "high": 3}},
        "needs int low < high",
    ),
    "log_from_zero": (
        {"optimizer.lr": {"type": "float", "low": 0.0, "high": 1, "log": True}},
        "params.optimizer.lr.low=0.0 is invalid: > 0",
    ),
    "typo_in_spec": (
        {"optimizer.lr": {"type": "float", "low": 0.1, "high": 1, "lg": True}},
        "params.optimizer.lr.lg=True is invalid: not a float key (did you mean log?)",
    ),
    "no_choices": ({"optimizer": {"type": "categorical", "choices": []}}, "a non-empty list"),
    "no_such_group_option": (
        {"optimizer": {"type": "categorical", "choices": ["sgd", "adamm"]}},
        "params.optimizer.choices='adamm' is invalid: one of",
    ),
    "no_such_key": (
        {"model.hiden_sizes": {"type": "categorical", "choices": ["[8]"]}},
        "model.hiden_sizes is not a key of model: did you mean model.hidden_sizes?",
    ),
}


def _bad_search(tmp_path, case: str) -> list[str]:
    if case == "unparsable":
        (tmp_path / "broken.yaml").write_text("metric: val/loss\nparams: [1, 2\n")
        return [f"hparams_search={tmp_path / 'broken.yaml'}"]
    if case == "unknown_key":
        return [_search_file(tmp_path, FINITE, metrc="val/acc")]
    if case == "bad_pruner":
        return [_search_file(tmp_path, FINITE, pruner={"name": "median", "n_warmup": 2})]
    if case == "bad_sampler":
        return [_search_file(tmp_path, FINITE, sampler={"name": "grid"})]
    return [_search_file(tmp_path, BAD_PARAMS[case][0])]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["hparams_search=tabluar"],
            "did you mean hparams_search=tabular? (options: tabular, toy)",
        ),
        ([], "hparams_search is required: one of ['tabular', 'toy']"),
        (["hparams_search=toy", "n_trials=abc"], "n_trials=abc is invalid"),
        (["hparams_search=toy", "workers=0"], "workers=0 is invalid: at least 1"),
        (["hparams_search=toy", "n_trial=5"], "n_trial='5' is invalid: not a sweep key"),
        (["hparams_search=toy", "n_trial=5"], "did you mean n_trials?"),
        (["hparams_search=toy", "--verbose"], "argument='--verbose' is invalid"),
        (["hparams_search=toy", "data=mons"], "data=mons is not an option"),
        (["hparams_search=toy", "data=mons"], "did you mean data=moons?"),
        (["hparams_search=toy", "launcher=pbs"], "launcher='pbs' is invalid"),
        (["hparams_search=toy", "storage=study.db"], "storage='study.db' is invalid"),
        (
            ["hparams_search=toy", "launcher=submitit_local", "slurm.partiton=gpu"],
            "slurm.partiton='gpu' is invalid: not a submitit parameter (did you mean partition?)",
        ),
        (
            ["hparams_search=toy", "launcher=slurm"],
            "launcher='slurm' is invalid: sbatch is not on PATH",
        ),
        (["hparams_search=toy", "launcher=slurm"], "launcher=processes"),
        (["hparams_search=toy", "launcher=slurm"], "launcher=submitit_local"),
        *[(case, BAD_PARAMS[case][1]) for case in BAD_PARAMS],
        ("unparsable", "is invalid: not valid YAML"),
        ("unknown_key", "metrc='val/acc' is invalid: not a search key (did you mean metric?)"),
        ("bad_pruner", "pruner.n_warmup=2 is invalid"),
        ("bad_sampler", "sampler.name='grid' is invalid"),
    ],
)
def test_bad_arguments_are_one_error_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)  # no SLURM here
    argv = _bad_search(tmp_path, argv) if isinstance(argv, str) else argv
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, f"sweep_dir={tmp_path / 'sw'}"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert message in err
    assert not (tmp_path / "sw").exists() and not (tmp_path / "logs").exists()


def test_bad_launcher_is_named():
    with pytest.raises(ConfigError, match="launcher='pbs' is invalid"):
        parse_args(["hparams_search=toy", "launcher=pbs"])


def test_a_train_key_close_to_a_sweep_key_is_not_refused():
    """Only keys the train config lacks are taken for typos of sweep keys."""
    assert parse_args(["hparams_search=toy", "seed=3"])[1] == ["seed=3"]


def test_a_direction_other_than_the_studys_is_refused(tmp_path, fake_train):
    sweep(["hparams_search=toy", "n_trials=1", f"sweep_dir={tmp_path}"])
    search = _search_file(tmp_path, FINITE, direction="maximize")
    with pytest.raises(ConfigError, match="was made to minimize"):
        sweep([search, "study_name=toy", "n_trials=2", f"sweep_dir={tmp_path}"])
    assert len(_study(tmp_path).trials) == 1  # the stored study is left as it was


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage(flag, capsys):
    cli.main(["hparams_search=toy", flag])  # returns: exit code 0
    captured = capsys.readouterr()
    assert "usage:" in captured.out and "mlplab-sweep hparams_search=NAME" in captured.out
    assert captured.err == ""


def test_console_script_help_and_no_slurm(tmp_path):
    """The real entry point: --help exits 0, launcher=slurm without sbatch is one line."""
    result = run_cli("--help", cwd=tmp_path, module="mlplab.sweep")
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]
    env = {"PATH": str(tmp_path)}  # no sbatch on it
    result = run_cli(
        "hparams_search=toy", "launcher=slurm", cwd=tmp_path, env=env, module="mlplab.sweep"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: launcher='slurm' is invalid: sbatch is not on PATH (no SLURM on this machine): "
        "run the workers here with launcher=processes, or try the job-array path locally "
        "with launcher=submitit_local"
    ]
    assert not (tmp_path / "logs").exists()


# --- real runs -----------------------------------------------------------------------------


def test_command_line_fixes_a_searched_key(tmp_path, fake_train, capsys):
    """A train override of a searched key wins and that key is no longer searched."""
    study = sweep(["hparams_search=toy", "n_trials=1", f"sweep_dir={tmp_path}", "optimizer=sgd"])
    assert "optimizer" not in study.trials[0].params
    assert "optimizer=sgd" in study.trials[0].user_attrs["overrides"]
    assert "optimizer is fixed on the command line" in capsys.readouterr().out


@pytest.mark.slow
def test_sweep_records_failed_trial_and_best_reruns(tmp_path, count_train, capsys):
    calls, crash_on = count_train
    crash_on.add(2)
    sweep_dir = tmp_path / "sw"
    study = sweep(["hparams_search=toy", "n_trials=4", f"sweep_dir={sweep_dir}", *TINY])
    assert "trial 2 failed: RuntimeError: boom (injected by the test)" in capsys.readouterr().out

    states = {t.number: t.state for t in study.trials}
    assert len(states) == 4 and states[2] == TrialState.FAIL
    assert all(s in (TrialState.COMPLETE, TrialState.PRUNED) for n, s in states.items() if n != 2)
    table = pd.read_csv(sweep_dir / "trials.csv")
    assert len(table) == 4 and list(table.state).count("FAIL") == 1
    for name in ("best.yaml", "best_params.yaml", "optimization_history.png"):
        assert (sweep_dir / name).is_file(), name

    best = OmegaConf.load(sweep_dir / "best.yaml")
    assert "hydra" not in best and "callbacks" in best and "optuna_pruning" not in best.callbacks
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
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params)  # the two workers explored different points
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


@pytest.mark.slow
def test_trials_of_a_killed_run_are_failed_not_left_running(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "HEARTBEAT_S", 1)
    monkeypatch.setattr(launch, "GRACE_S", 2)
    study = optuna.create_study(study_name="toy", storage=launch.study_storage(tmp_path))
    orphan = study.ask()  # a trial whose worker died: RUNNING, heartbeat never sent again
    orphan.set_user_attr(launch.BEAT, time.time())
    alive = study.ask()  # another worker's trial, beating
    time.sleep(3)  # past the (patched) grace period
    alive.set_user_attr(launch.BEAT, time.time())
    study = sweep(["hparams_search=toy", "n_trials=2", f"sweep_dir={tmp_path}", *TINY])
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.FAIL, TrialState.RUNNING]  # the live one is left alone
    assert len(states) == 3  # the dead trial counts toward n_trials: one new trial ran
    table = pd.read_csv(tmp_path / "trials.csv")
    assert table.fail_reason[0] == report.NO_REASON


def test_sys_argv_is_the_default_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["mlplab-sweep", "hparams_search=nope"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: hparams_search=nope is not an option")
