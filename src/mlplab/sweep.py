"""mlplab-sweep: Bayesian hyperparameter search with Optuna. Each trial composes the train config
and runs ``train(cfg)`` in this process (no torch/Lightning start-up per trial).

usage:
    mlplab-sweep hparams_search=NAME [n_trials=20] [workers=4] [storage=URL] [study_name=NAME]
                 [sweep_dir=DIR] [launcher=processes|slurm|submitit_local] [slurm.KEY=VALUE]
                 [any mlplab-train overrides, applied to every trial]
    mlplab-sweep --help

The search space, metric, sampler and pruner live in ``conf/hparams_search/NAME.yaml`` (or give
a path to a yaml file). The study is stored in ``<sweep_dir>/study.db`` (default
``logs/sweep/<study_name>``), so running the same command again resumes it: ``n_trials`` is the
study's total. Each run of the command (and each worker) seeds its sampler from the search's
seed, its worker index and the number of trials already in the study, so a resumed sweep
explores new points; a trial that repeats a finished trial's params (a small, all-categorical
space) is not retrained: it gets that trial's value and ``duplicate_of``.

``workers=N`` runs N workers on one study: local processes, or with ``launcher=slurm`` the
tasks of one SLURM job array (submitit; ``slurm.partition=gpu slurm.timeout_min=120`` ...;
``launcher=submitit_local`` tries that path on this machine).

A trial that raises (a diverged loss, a bad value in the search range) is recorded as FAILED
with its reason and the search goes on. At the end the sweep dir holds ``trials.csv`` (with
``fail_reason`` and ``duplicate_of``), ``best.yaml`` (re-run it with
``mlplab-train --config-dir <sweep_dir> --config-name best``), ``best_params.yaml`` and two
plots. Mistakes in the arguments or the search file stop it with one ``error:`` line (exit 2)
before anything is written.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import logging
import math
import shutil
import subprocess
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from optuna.trial import FrozenTrial, TrialState

from mlplab.config import CONF_DIR, compose_config
from mlplab.errors import ConfigError, check, clean_exit
from mlplab.run.preflight import CommandLine, compose_checked
from mlplab.train import train

SEARCH_DIR = Path(CONF_DIR) / "hparams_search"
SWEEP_KEYS = (
    "hparams_search",
    "n_trials",
    "workers",
    "storage",
    "study_name",
    "sweep_dir",
    "launcher",
)
SEARCH_KEYS = ("metric", "direction", "n_trials", "sampler", "pruner", "overrides", "params")
PARAM_KEYS = {"float": {"low", "high", "log"}, "int": {"low", "high", "log"}, "categorical": set()}
LAUNCHERS = ("processes", "slurm", "submitit_local")
# submitit's cluster-independent parameters; any other slurm.KEY becomes slurm_KEY.
SUBMITIT_GENERIC = {
    "timeout_min",
    "mem_gb",
    "nodes",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "name",
    "stderr_to_stdout",
}
HEARTBEAT_S, GRACE_S = 30, 120  # a RUNNING trial silent for GRACE_S seconds is dead
WORKER_KEY = "_worker"  # internal: set on the processes that `workers=N` starts
DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Quiet trials; the command line's overrides come later and win.
TRIAL_DEFAULTS = ("trainer.enable_progress_bar=false", "print_config=false")
# best.yaml keeps these as interpolations, so each re-run gets its own run dir.
KEEP_UNRESOLVED = {
    "paths.output_dir": "${hydra:runtime.output_dir}",
    "run_name": "${run_id:}",
    "task_name": "train",
}
# A FAIL without a recorded reason: its worker never got to say why (heartbeat timed out).
NO_REASON = "no reason recorded (its worker was killed or lost contact)"

_active_trial: optuna.Trial | None = None  # the trial train() is running (see trial_pruning)


@dataclass
class SweepArgs:
    hparams_search: str | None = None
    n_trials: int | None = None
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    sweep_dir: str | None = None
    worker: int | None = None
    launcher: str = "processes"
    slurm: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


class MissingMetric(ConfigError):
    """train() does not produce the search's metric: every trial would fail alike."""


def trial_pruning(monitor: str):
    """Optuna's Lightning pruning callback for the running trial, built from config
    (``callbacks.optuna_pruning``) by the unchanged ``train()``. Imported here: Lightning
    takes seconds to import, and ``--help`` or a wrong argument should answer at once."""
    from optuna_integration import PyTorchLightningPruningCallback

    assert _active_trial is not None, "trial_pruning is only built by mlplab-sweep"
    return PyTorchLightningPruningCallback(_active_trial, monitor=monitor)


def available_searches() -> list[str]:
    return sorted(p.stem for p in SEARCH_DIR.glob("*.yaml"))


def _did_you_mean(word: str, options, cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else ""


def parse_args(argv: list[str]) -> SweepArgs:
    """Split the sweep's own ``key=value`` arguments from the train overrides."""
    defaults = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "sweep.yaml"))
    args = SweepArgs(**{k: v for k, v in defaults.items() if k in SWEEP_KEYS})
    args.slurm = dict(defaults.get("slurm") or {})
    for arg in argv:
        key, sep, value = arg.partition("=")
        check(
            not arg.startswith("-"),
            "argument",
            arg,
            "mlplab-sweep takes key=value arguments (see mlplab-sweep --help)",
        )
        if sep and key in SWEEP_KEYS + (WORKER_KEY,):
            setattr(args, key.lstrip("_"), value)
        elif sep and key.startswith("slurm."):
            args.slurm[key.removeprefix("slurm.")] = yaml.safe_load(value)
        else:
            _check_not_a_sweep_key_typo(key, value)
            args.overrides.append(arg)
    check(args.launcher in LAUNCHERS, "launcher", args.launcher, f"one of {list(LAUNCHERS)}")
    for key in ("n_trials", "workers", "worker"):
        value = getattr(args, key)
        if value is not None:
            check(str(value).isdigit(), key, value, "a whole number ≥ 0")
            setattr(args, key, int(value))
    check(args.workers >= 1, "workers", args.workers, "at least 1")
    return args


def _check_not_a_sweep_key_typo(key: str, value: str) -> None:
    """``n_trial=5`` would go to train() as an override and fail there with Hydra's message;
    a plain key close to a sweep key that the train config lacks is named here instead."""
    close = difflib.get_close_matches(key, SWEEP_KEYS, n=1, cutoff=0.75)
    if close and key.isidentifier() and key not in _train_keys():
        check(
            False, key, value, f"not a sweep key nor a train config key; did you mean {close[0]}?"
        )


@functools.cache
def _train_keys() -> frozenset[str]:
    return frozenset(compose_train(["paths.output_dir=unused"]).keys())


def load_search(name: str | None) -> DictConfig:
    """``conf/hparams_search/NAME.yaml`` (or a path to a yaml file), checked."""
    path = Path(name) if name and name.endswith(".yaml") else SEARCH_DIR / f"{name}.yaml"
    names = available_searches()
    hint = _did_you_mean(name, names) if name else ""
    check(bool(name) and path.is_file(), "hparams_search", name, f"one of {names}{hint}")
    try:
        search = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        where = " ".join(str(err).split())
        raise ConfigError(f"hparams_search={name!r} is invalid: not valid YAML: {where}") from None
    check(isinstance(search, DictConfig), "hparams_search", name, f"{path} must be a mapping")
    for key in search:
        check(
            key in SEARCH_KEYS,
            key,
            search[key],
            f"not a search key{_did_you_mean(key, SEARCH_KEYS)}",
        )
    check(
        search.get("direction") in ("minimize", "maximize"),
        "direction",
        search.get("direction"),
        "minimize or maximize",
    )
    check(bool(search.get("metric")), "metric", search.get("metric"), "a metric key, e.g. val/loss")
    n_trials = search.get("n_trials", 20)
    check(isinstance(n_trials, int) and n_trials >= 0, "n_trials", n_trials, "a whole number ≥ 0")
    overrides = search.get("overrides") or []
    ok = isinstance(overrides, (list, ListConfig)) and all(isinstance(o, str) for o in overrides)
    check(ok, "overrides", overrides, "a list of train overrides (key=value strings)")
    params = search.get("params") or {}
    check(isinstance(params, DictConfig), "params", params, "a mapping of key → distribution")
    for key, spec in params.items():
        _check_param(key, spec)
    return search


def _check_param(key: str, spec) -> None:
    """One search parameter: ``{type: float|int, low, high, log?}`` or
    ``{type: categorical, choices: [...]}``."""
    example = "e.g. {type: float, low: 1.0e-4, high: 0.1, log: true}"
    check(isinstance(spec, DictConfig), f"params.{key}", spec, f"a distribution, {example}")
    kind = spec.get("type")
    check(kind in PARAM_KEYS, f"params.{key}.type", kind, "float, int or categorical")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", *PARAM_KEYS[kind]}
    for name in spec:
        hint = _did_you_mean(name, allowed)
        check(name in allowed, f"params.{key}.{name}", spec[name], f"not a {kind} key{hint}")
    if kind == "categorical":
        choices = spec.get("choices")
        ok = isinstance(choices, ListConfig) and len(choices) > 0
        check(ok, f"params.{key}.choices", choices, "a non-empty list")
        return
    low, high = spec.get("low"), spec.get("high")
    number = int if kind == "int" else (int, float)
    ok = all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high))
    check(ok and low < high, f"params.{key}", dict(spec), f"needs {kind} low < high")
    if spec.get("log"):
        check(low > 0, f"params.{key}.low", low, "> 0 for a log-scale range")


def suggest(trial: optuna.Trial, params: DictConfig) -> list[str]:
    """One ``key=value`` override per search parameter. A key naming a config group
    (``optimizer``) picks an option of it, like ``optimizer=adam`` on the command line."""
    overrides = []
    for key, spec in params.items():
        if spec.type == "float":
            value = trial.suggest_float(key, spec.low, spec.high, log=bool(spec.get("log")))
        elif spec.type == "int":
            value = trial.suggest_int(key, spec.low, spec.high, log=bool(spec.get("log")))
        else:
            value = trial.suggest_categorical(key, list(spec.choices))
        overrides.append(f"{key}={_override_value(value)}")
    return overrides


def _override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)  # floats keep full precision; "[64,64]" is parsed by Hydra as a list


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def merge_overrides(*groups) -> list[str]:
    """Later overrides of the same key replace earlier ones and move to where the later one
    stands (Hydra refuses a group twice)."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            merged.pop(_key(override), None)
            merged[_key(override)] = override
    return list(merged.values())


def compose_train(overrides: list[str]) -> DictConfig:
    return compose_config("train", overrides)


def check_composes(overrides: list[str]) -> None:
    """Compose the train config once: a wrong key or group option in the search file or on
    the command line is one error line now (the same one mlplab-train gives), not a failure
    in every trial."""
    compose_checked(CommandLine("train"), [*overrides, "paths.output_dir=unused"])


def _check_group_choices(params: DictConfig) -> None:
    """A categorical parameter naming a config group (``optimizer``) must name its options."""
    for key, spec in params.items():
        group = Path(CONF_DIR, key.replace(".", "/"))
        if spec.type != "categorical" or not group.is_dir():
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for choice in spec.choices:
            hint = _did_you_mean(choice, options)
            check(
                str(choice) in options, f"params.{key}.choices", choice, f"one of {options}{hint}"
            )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (sqlite waits for locks held by other workers), or a ``*.journal`` file."""
    if url.endswith(".journal"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # Heartbeats let a later run tell a trial whose worker was killed (still RUNNING in the
    # storage) from a live one: after the grace period it is marked FAIL.
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9; we know
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
        )


def _open_user_storage(url: str) -> optuna.storages.BaseStorage:
    check(
        url.endswith(".journal") or "://" in url,
        "storage",
        url,
        "an Optuna storage URL (sqlite:///path/study.db, postgresql://...) or a *.journal file",
    )
    try:
        return open_storage(url)
    except Exception as err:  # noqa: BLE001 — a URL the user gave: one line says what failed
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(f"storage={url!r} is invalid: {type(err).__name__}: {first}") from None


def derive_seed(seed: int, worker: int, n_history: int) -> int:
    """The sampler seed of one worker of one run: distinct for each (search seed, worker index,
    trials already in the study), so parallel workers and resumed runs draw distinct streams,
    and the same commands draw the same ones again. (``seed + worker + n_history`` would give
    worker 1 of the first run the stream of worker 0 of a run resumed after one trial.)"""
    return int(np.random.SeedSequence([seed, worker, n_history]).generate_state(1)[0])


def make_sampler(
    spec: DictConfig, worker: int | None = None, n_history: int = 0
) -> optuna.samplers.BaseSampler:
    """``{name: tpe|random, seed: N|null}``; a seed is turned into this worker's and this
    run's own stream by `derive_seed`."""
    name, seed = spec.get("name", "tpe"), spec.get("seed")
    check(name in ("tpe", "random"), "sampler.name", name, "tpe or random")
    ok = seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0)
    check(ok, "sampler.seed", seed, "a whole number ≥ 0 or null")
    if seed is not None:
        seed = derive_seed(seed, worker or 0, n_history)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: DictConfig | None) -> optuna.pruners.BasePruner:
    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "median")
    check(name in ("median", "none"), "pruner.name", name, "median or none")
    if name == "none":
        return optuna.pruners.NopPruner()
    known = list(inspect.signature(optuna.pruners.MedianPruner).parameters)
    for key in spec:
        check(
            key in known, f"pruner.{key}", spec[key], f"one of {known}{_did_you_mean(key, known)}"
        )
    try:
        return optuna.pruners.MedianPruner(**spec)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner={spec} is invalid: {err}") from None


def best_epoch_value(trial: optuna.Trial, direction: str, last: float) -> float:
    """The best value the metric reached over the epochs (what the pruning callback reported),
    not the last epoch's: with early stopping the last epoch is `patience` epochs past the best
    one, and the best checkpoint is what the run keeps. ``last`` when nothing was reported
    (a ``test/`` metric)."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    values = [v for v in frozen.intermediate_values.values() if math.isfinite(v)]
    if not values:
        return last
    return max(values) if direction == "maximize" else min(values)


def fail_reason(err: BaseException) -> str:
    """``Type: first line of the message``; Hydra's instantiation wrapper is looked through."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].strip()}" if lines else type(err).__name__


class Objective:
    """One trial: suggest → compose → ``train(cfg)`` in process → the metric."""

    def __init__(self, search: DictConfig, args: SweepArgs, sweep_dir: Path) -> None:
        self.metric, self.sweep_dir, self.study_name = search.metric, sweep_dir, args.study_name
        self.direction = search.direction
        logger = [] if any(_key(o).startswith("logger") for o in args.overrides) else ["logger=csv"]
        self.base = [*TRIAL_DEFAULTS, *logger, *(search.get("overrides") or [])]
        self.user = args.overrides
        self.params = search.get("params") or {}
        self.fatal: ConfigError | None = None  # set when the whole sweep must stop

    def check(self) -> None:
        """Every override a trial will get composes (each parameter at its first value)."""
        first = []
        for key, spec in self.params.items():
            value = spec.choices[0] if spec.type == "categorical" else spec.low
            first.append(f"{key}={_override_value(value)}")
        _check_group_choices(self.params)
        check_composes(merge_overrides(self.base, first, self.user))

    def __call__(self, trial: optuna.Trial) -> float:
        overrides = merge_overrides(self.base, suggest(trial, self.params), self.user)
        trial.set_user_attr("overrides", overrides)
        earlier = _earlier_same(trial, overrides)
        if earlier is not None:  # Optuna's FAQ pattern for finite spaces: don't retrain
            trial.set_user_attr(
                "duplicate_of", earlier.user_attrs.get("duplicate_of", earlier.number)
            )
            if earlier.state == TrialState.PRUNED:
                raise optuna.TrialPruned()
            return earlier.value
        try:
            return self._run(trial, overrides)
        except optuna.TrialPruned:
            raise
        except BaseException as err:  # Optuna records FAIL (catch=...); we record why
            reason = fail_reason(err)
            trial.set_user_attr("fail_reason", reason)
            print(f"trial {trial.number} failed: {reason}", flush=True)
            if isinstance(err, MissingMetric):
                self.fatal = err
                trial.study.stop()
            raise

    def _run(self, trial: optuna.Trial, overrides: list[str]) -> float:
        global _active_trial
        out = self.sweep_dir / f"trial_{trial.number}"
        run = [f"paths.output_dir={out}", "task_name=sweep", f"run_name=trial_{trial.number}"]
        cfg = compose_train([*overrides, *run])
        with open_dict(cfg):
            if cfg.get("callbacks") is None:
                cfg.callbacks = {}
            cfg.callbacks.optuna_pruning = {
                "_target_": f"{__name__}.trial_pruning",
                "monitor": self.metric,
            }
            if (cfg.get("logger") or {}).get("wandb") is not None:
                cfg.logger.wandb.group = cfg.logger.wandb.group or self.study_name
        _active_trial = trial
        try:
            metrics = train(cfg)
        finally:
            _active_trial = None
            _finish_wandb_run()
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if self.metric not in metrics:
            raise MissingMetric(
                f"metric={self.metric!r} is invalid: train() returned {sorted(metrics)}"
            )
        value = best_epoch_value(trial, self.direction, metrics[self.metric])
        if not math.isfinite(value):  # Optuna would fail the trial without saying why
            raise FloatingPointError(f"{self.metric} was {value} in every epoch")
        return value


def _earlier_same(trial: optuna.Trial, overrides: list[str]) -> FrozenTrial | None:
    """The latest finished trial with this trial's params and overrides (so the same config)."""
    finished = trial.study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
    )
    for t in reversed(finished):
        if t.params == trial.params and t.user_attrs.get("overrides") == overrides:
            return t
    return None


def _finish_wandb_run() -> None:
    """Each trial is its own wandb run: Lightning would otherwise log the next trial into the
    run still open in this process. (A no-op when train() has finished it already.)"""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _print_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    value = "" if trial.value is None else f"{trial.value:.4g}"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    same = trial.user_attrs.get("duplicate_of")
    note = f"  (same params as trial {same}: not retrained)" if same is not None else ""
    print(
        f"trial {trial.number:>3} {trial.state.name:<8} {value:>9} {seconds:6.1f}s  {params}{note}",
        flush=True,
    )


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def check_launcher(args: SweepArgs) -> None:
    """SLURM must be there before anything is written; slurm.KEY names a submitit parameter."""
    if args.launcher == "processes":
        return
    if args.launcher == "slurm":
        check(
            shutil.which("sbatch") is not None,
            "launcher",
            "slurm",
            "sbatch is not on PATH (no SLURM on this machine): run the workers here with "
            "launcher=processes, or try the job-array path locally with launcher=submitit_local",
        )
    import submitit

    known = sorted(
        submitit.AutoExecutor._valid_parameters() | submitit.SlurmExecutor._valid_parameters()
    )
    for key, value in args.slurm.items():
        check(
            key in known,
            f"slurm.{key}",
            value,
            f"not a submitit parameter{_did_you_mean(key, known)}",
        )


def sweep(argv: list[str]) -> optuna.Study:
    """Run (or resume) the study named by ``argv``; returns it. See the module docstring."""
    args = parse_args(argv)
    search = load_search(args.hparams_search)
    args.study_name = args.study_name or Path(args.hparams_search).stem
    sweep_dir = Path(args.sweep_dir or Path("logs") / "sweep" / args.study_name).resolve()
    n_trials = args.n_trials if args.n_trials is not None else int(search.get("n_trials", 20))
    user_keys = {_key(o) for o in args.overrides}
    fixed = [k for k in (search.get("params") or {}) if k in user_keys]
    for key in fixed:
        del search.params[key]
    # Everything that can be checked is checked before the sweep dir exists.
    make_sampler(search.get("sampler") or {})
    pruner = make_pruner(search.get("pruner"))
    if args.worker is None:
        check_launcher(args)
    objective = Objective(search, args, sweep_dir)
    if args.worker is None:  # workers: the command that started them has checked
        objective.check()
    storage = _open_user_storage(args.storage) if args.storage else None
    for key in fixed:
        print(f"note: {key} is fixed on the command line, so it is not searched")

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    fresh = not sweep_dir.exists()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or open_storage(f"sqlite:///{sweep_dir / 'study.db'}")
    study, n_history = _load_study(storage, args, search, pruner)
    try:
        _run_study(study, objective, args, argv, n_trials, sweep_dir)
    except ConfigError:
        if args.worker is None and n_history == 0:  # a new sweep that could not run: no trace
            optuna.delete_study(study_name=args.study_name, storage=storage)
            if fresh:
                shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    if args.worker is None:
        write_reports(study, search, sweep_dir)
    return study


def _load_study(storage, args: SweepArgs, search: DictConfig, pruner) -> tuple[optuna.Study, int]:
    """The study (created if new), stale trials failed, with this run's sampler; and the
    number of trials it held before this run (which seeds the sampler)."""
    study = optuna.create_study(
        study_name=args.study_name,
        storage=storage,
        direction=search.direction,
        load_if_exists=True,
    )
    direction = study.direction.name.lower()
    check(
        direction == search.direction,
        "direction",
        search.direction,
        f"study {args.study_name!r} in this storage was made to {direction}",
    )
    with warnings.catch_warnings():  # trials of killed runs → FAIL, counted as done
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    n_history = len(study.get_trials(deepcopy=False))
    sampler = make_sampler(search.get("sampler") or {}, args.worker, n_history)
    study = optuna.load_study(
        study_name=args.study_name, storage=storage, sampler=sampler, pruner=pruner
    )
    return study, n_history


def remaining_trials(study: optuna.Study, n_trials: int) -> int:
    """``n_trials`` is the study's total: finished trials (failed ones too) count."""
    return max(n_trials - len(study.get_trials(deepcopy=False, states=DONE)), 0)


def _run_study(study, objective, args: SweepArgs, argv, n_trials: int, sweep_dir: Path) -> None:
    done = len(study.get_trials(deepcopy=False, states=DONE))
    remaining = remaining_trials(study, n_trials)
    if args.worker is None:
        print(f"study {args.study_name}: {done} trials done, {remaining} to run → {sweep_dir}")
    if not remaining:
        return
    if args.worker is not None or (args.launcher == "processes" and args.workers == 1):
        import lightning.pytorch  # noqa: F401 — it sets its log level on import: set ours after
        import torch

        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        if args.worker is not None:
            torch.set_num_threads(1)  # N workers share the CPU
        callbacks = [_print_trial]
        if args.worker is not None:  # stop once all workers together reach n_trials
            states = (*DONE, TrialState.RUNNING)
            callbacks.append(optuna.study.MaxTrialsCallback(n_trials, states=states))
        study.optimize(
            objective,
            n_trials=remaining,
            catch=(Exception,),
            callbacks=callbacks,
            gc_after_trial=True,
        )
        if objective.fatal is not None:
            raise objective.fatal
    elif args.launcher == "processes":
        _run_workers(argv, args.workers)
    else:
        _submit_workers(argv, args, sweep_dir)


def _run_workers(argv: list[str], workers: int) -> None:
    """``workers`` local processes running ``python -m mlplab.sweep`` on the same study."""
    argv = [a for a in argv if _key(a) != "workers"]
    env_cmd = [sys.executable, "-m", "mlplab.sweep", *argv]
    procs = [subprocess.Popen([*env_cmd, f"{WORKER_KEY}={i}"]) for i in range(workers)]
    failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        print(f"note: workers {failed} exited with an error (see above)")


def _worker_main(argv: list[str]) -> None:
    """What each submitted array task runs (a module-level function, so it pickles)."""
    sweep(argv)


def _submit_workers(argv: list[str], args: SweepArgs, sweep_dir: Path) -> None:
    """``workers`` tasks of one SLURM job array (submitit) sharing the study; waits for them.

    ``launcher=submitit_local`` runs the same jobs as local processes (to try it without a
    cluster). The study's storage must be reachable from the compute nodes: the default
    sqlite file in the sweep dir works on a shared file system.
    """
    import submitit

    cluster = "slurm" if args.launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster=cluster)
    params = {
        k if k in SUBMITIT_GENERIC else f"slurm_{k}": v
        for k, v in args.slurm.items()
        if v is not None
    }
    executor.update_parameters(name=f"sweep-{args.study_name}", **params)
    own = {"workers", "launcher"}
    argv = [a for a in argv if _key(a) not in own and not a.startswith("slurm.")]
    with executor.batch():  # one job array
        jobs = [
            executor.submit(_worker_main, [*argv, f"{WORKER_KEY}={i}"]) for i in range(args.workers)
        ]
    print(f"submitted {len(jobs)} workers as job array {jobs[0].job_id.split('_')[0]}")
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 — one worker's crash must not hide the others
            print(f"note: worker {job.job_id} failed: {str(err).strip().splitlines()[-1]}")


def trial_fail_reason(trial: FrozenTrial) -> str:
    return trial.user_attrs.get("fail_reason") or NO_REASON


def write_reports(study: optuna.Study, search: DictConfig, sweep_dir: Path) -> None:
    """trials.csv, best.yaml, best_params.yaml, plots and a summary table."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return
    df = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    df["duration"] = df["duration"].dt.total_seconds()
    by_number = {t.number: t for t in trials}
    duplicate_of = [by_number[n].user_attrs.get("duplicate_of") for n in df["number"]]
    df["duplicate_of"] = pd.array(duplicate_of, dtype="Int64")
    df["fail_reason"] = [
        trial_fail_reason(by_number[n]) if by_number[n].state == TrialState.FAIL else None
        for n in df["number"]
    ]
    df.to_csv(sweep_dir / "trials.csv", index=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        (sweep_dir / "best.yaml").write_text(best_config_yaml(best.user_attrs["overrides"]))
        best_params = {
            "metric": search.metric,
            "direction": search.direction,
            "value": best.value,
            "trial": best.user_attrs.get("duplicate_of", best.number),
            "params": best.params,
        }
        (sweep_dir / "best_params.yaml").write_text(yaml.safe_dump(best_params, sort_keys=False))
    _save_plots(study, len(complete), sweep_dir)
    _print_summary(trials, search, sweep_dir)


def best_config_yaml(overrides: list[str]) -> str:
    """The best trial's train config, resolved, with a defaults list that makes it a primary
    config for ``mlplab-train --config-dir <sweep_dir> --config-name best``. Run dir, run name
    and task stay interpolations, so a re-run writes a fresh ``logs/train/<run_id>/``."""
    cfg = compose_train([*overrides, "paths.output_dir=unused"])
    sentinels = {key: f"__mlplab_keep_{i}__" for i, key in enumerate(KEEP_UNRESOLVED)}
    for key, sentinel in sentinels.items():
        OmegaConf.update(cfg, key, sentinel)
    text = OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    for key, sentinel in sentinels.items():
        text = text.replace(sentinel, "${" + key + "}")
    resolved = OmegaConf.create(text)
    for key, value in KEEP_UNRESOLVED.items():
        OmegaConf.update(resolved, key, value)
    header = (
        "# The best trial's config from mlplab-sweep. Re-run it with\n"
        "#   mlplab-train --config-dir <this dir> --config-name best [overrides...]\n"
        "defaults:\n  - train_schema\n  - hydra: default\n  - _self_\n\n"
    )
    return header + OmegaConf.to_yaml(resolved)


def _save_plots(study: optuna.Study, n_complete: int, sweep_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    plots = {"optimization_history.png": vis.plot_optimization_history}
    if n_complete >= 2 and study.best_trial.params:
        plots["param_importances.png"] = vis.plot_param_importances
    else:
        print("note: param_importances.png skipped (needs ≥ 2 complete trials)")
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings of optuna's plots
                ax = plot(study)
            ax.figure.savefig(sweep_dir / name, bbox_inches="tight", dpi=120)
            plt.close(ax.figure)
        except Exception as err:  # e.g. importances of a study where nothing varies
            print(f"note: {name} skipped: {type(err).__name__}: {err}")


def _print_summary(trials, search: DictConfig, sweep_dir: Path, top: int = 5) -> None:
    """Counts by state, each failure reason with its trials, the top trials, the best."""
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    line = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n)
    repeats = sum("duplicate_of" in t.user_attrs for t in trials)
    if repeats:
        line += f" ({repeats} repeated an earlier trial's params: not retrained)"
    print(f"\n{len(trials)} trials: {line}")
    failed = defaultdict(list)
    for t in trials:
        if t.state == TrialState.FAIL:
            failed[trial_fail_reason(t)].append(str(t.number))
    for reason, numbers in failed.items():
        print(f"  failed {len(numbers)}× {reason}  (trials {', '.join(numbers)})")
    complete = [
        t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    if not complete:
        print(f"no trial completed; see {sweep_dir / 'trials.csv'}")
        return
    ranked = sorted(complete, key=lambda t: t.value, reverse=search.direction == "maximize")
    print(f"{'trial':>5}  {search.metric:>10}  params")
    for t in ranked[:top]:
        params = " ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        print(f"{t.number:>5}  {t.value:>10.4g}  {params}")
    print(f"best: trial {ranked[0].number}; config: {sweep_dir / 'best.yaml'}")
    print(f"re-run: mlplab-train --config-dir {sweep_dir} --config-name best")


def main(argv: list[str] | None = None) -> None:
    """``mlplab-sweep``: ``--help`` prints the usage; mistakes are one ``error:`` line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return
    with clean_exit():
        sweep(argv)


if __name__ == "__main__":
    main()
