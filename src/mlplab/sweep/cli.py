"""mlplab-sweep: Bayesian hyperparameter search with Optuna. Each trial composes the train config
and runs ``train(cfg)`` in this process (no torch/Lightning start-up per trial).

usage:
    mlplab-sweep hparams_search=NAME [n_trials=20] [workers=4] [population=K] [storage=URL]
                 [study_name=NAME] [sweep_dir=DIR] [launcher=processes|slurm|submitit_local]
                 [slurm.KEY=VALUE]
                 [any mlplab-train overrides, applied to every trial]
    mlplab-sweep --help

The search space, metric, sampler and pruner live in ``conf/hparams_search/NAME.yaml`` (or give
a path to a yaml file). The study is stored in ``<sweep_dir>/study.journal`` (Optuna's journal
file; default sweep dir ``logs/sweep/<study_name>``), so running the same command again resumes
it: ``n_trials`` is the study's total. Each run of the command (and each worker) seeds its
sampler from the search's seed, its worker index and the number of trials already in the study,
so a resumed sweep explores new points; a trial that repeats a finished trial's params (a
small, all-categorical space) is not retrained: it gets that trial's value and ``duplicate_of``.

``workers=N`` runs N workers on one study: local processes, or with ``launcher=slurm`` the
tasks of one SLURM job array (submitit; ``slurm.partition=gpu slurm.timeout_min=120`` ...;
``launcher=submitit_local`` tries that path on this machine).

``population=K`` trains K trials at a time as one population (``mlplab.population``: K models
in one batched step): what members can't differ in (architecture, activation, optimizer type,
batch size, data) is sampled once per population, the rest per trial; then Optuna is told each
result. Trials with ``cv=``/``seeds=`` (each a population of its folds or seeds) stack all their
members as one population. See ``mlplab.sweep.population``.
A worker killed mid-population (kill -9, preemption): the same command again fails its trials
once their heartbeat is 2 minutes old, and retries those whose population wrote a checkpoint as
new trials with the same params that go on from it; a retried trial doesn't count towards
``n_trials``, its retry does (``mlplab.sweep.retry``). Other killed trials FAIL and count.

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
import gc
import logging
import shutil
import sys
import warnings
from pathlib import Path

import optuna
import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from optuna.trial import TrialState

from mlplab.config import SweepConfig, compose_config
from mlplab.errors import ConfigError, check, clean_exit
from mlplab.run.preflight import CommandLine, compose_checked
from mlplab.sweep import launch
from mlplab.sweep.objective import Objective, override_key
from mlplab.sweep.population import run_trials
from mlplab.sweep.report import write_reports
from mlplab.sweep.retry import RESUMES, RetryKilled, counted
from mlplab.sweep.search import available_searches, check_search, make_pruner, make_sampler

SWEEP_KEYS = tuple(SweepConfig.__dataclass_fields__)  # worker: set on worker processes
LAUNCHERS = ("processes", "slurm", "submitit_local")
DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def parse_args(argv: list[str]) -> tuple[DictConfig, list[str]]:
    """The sweep's config (``conf/sweep.yaml`` composed with the sweep's own ``key=value``
    arguments, the search as its ``hparams_search`` node) and the train overrides (the rest)."""
    sweep_args, overrides, search_file = [], [], None
    usage = "mlplab-sweep takes key=value arguments (see mlplab-sweep --help)"
    for arg in argv:
        check(not arg.startswith("-"), "argument", arg, usage)
        key, sep, value = arg.partition("=")
        if sep and key == "hparams_search" and value.endswith(".yaml"):
            search_file = value
        elif sep and key in SWEEP_KEYS:
            sweep_args.append(arg)
        elif sep and key.startswith("slurm."):
            sweep_args.append(f"++{arg}")  # any SLURM setting, checked against submitit's
        else:
            _check_not_a_sweep_key_typo(key, value)
            overrides.append(arg)
    cfg = compose_checked(CommandLine("sweep"), sweep_args)
    choice = cfg.hydra.runtime.choices.get("hparams_search")
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.study_name = cfg.study_name or (choice if choice != "None" else None)
        if search_file is not None:
            cfg.hparams_search = _load_search_file(search_file)
            cfg.study_name = cfg.study_name or Path(search_file).stem
    check(cfg.launcher in LAUNCHERS, "launcher", cfg.launcher, f"one of {list(LAUNCHERS)}")
    for key in ("n_trials", "worker"):
        value = cfg.get(key)
        check(value is None or value >= 0, key, value, "a whole number ≥ 0")
    check(cfg.workers >= 1, "workers", cfg.workers, "at least 1")
    size = cfg.population  # 1: one trial at a time, as without it
    ok = size is None or (type(size) is int and size >= 1)
    check(ok, "population", size, "a whole number ≥ 1 (trials trained at once as one population)")
    if cfg.hparams_search is None:
        raise ConfigError(
            f"hparams_search is required: one of {available_searches()} "
            "(or a path to a search yaml file)"
        )
    return cfg, overrides


def _load_search_file(path: str) -> DictConfig:
    check(Path(path).is_file(), "hparams_search", path, "no such file")
    try:
        search = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        where = " ".join(str(err).split())
        raise ConfigError(f"hparams_search={path!r} is invalid: not valid YAML: {where}") from None
    check(isinstance(search, DictConfig), "hparams_search", path, "must be a mapping")
    return search


def _check_not_a_sweep_key_typo(key: str, value: str) -> None:
    """``n_trial=5`` would go to train() as an override and fail there with Hydra's message;
    a plain key close to a sweep key that the train config lacks is named here instead."""
    close = difflib.get_close_matches(key, SWEEP_KEYS, n=1, cutoff=0.75)
    if close and key.isidentifier() and key not in _train_keys():
        hint = f"did you mean {close[0]}?"
        check(False, key, value, f"not a sweep key nor a train config key; {hint}")


@functools.cache
def _train_keys() -> frozenset[str]:
    return frozenset(compose_config("train", ["paths.output_dir=unused"]).keys())


def sweep(argv: list[str]) -> optuna.Study:
    """Run (or resume) the study named by ``argv``; returns it. See the module docstring."""
    cfg, overrides = parse_args(argv)
    search = check_search(cfg.hparams_search, cfg.study_name)
    sweep_dir = Path(cfg.sweep_dir or Path("logs") / "sweep" / cfg.study_name).resolve()
    n_trials = cfg.n_trials if cfg.n_trials is not None else int(search.get("n_trials", 20))
    user_keys = {override_key(o) for o in overrides}
    fixed = [k for k in (search.get("params") or {}) if k in user_keys]
    with open_dict(search):
        for key in fixed:
            del search.params[key]
    # Everything that can be checked is checked before the sweep dir exists.
    make_sampler(search.get("sampler") or {})
    pruner = make_pruner(search.get("pruner"))
    if cfg.worker is None:
        launch.check_launcher(cfg.launcher, dict(cfg.slurm))
    objective = Objective(search, overrides, cfg.study_name, sweep_dir)
    if cfg.worker is None:  # workers: the command that started them has checked
        objective.check()
    storage = launch.open_storage(cfg.storage) if cfg.storage else None
    for key in fixed:
        print(f"note: {key} is fixed on the command line, so it is not searched")

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    fresh = not sweep_dir.exists()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or launch.study_storage(sweep_dir)
    # population=K: a killed worker's trials are retried from their population's checkpoint.
    on_stale = RetryKilled(sweep_dir) if (cfg.population or 1) > 1 else None
    study, n_history = _load_study(storage, cfg, search, pruner, on_stale)
    try:
        _run_study(study, objective, cfg, argv, n_trials, sweep_dir)
    except ConfigError:
        if cfg.worker is None and n_history == 0:  # a new sweep that could not run: no trace
            optuna.delete_study(study_name=cfg.study_name, storage=storage)
            if fresh:
                shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    if cfg.worker is None:
        write_reports(study, search, sweep_dir)
    return study


def _load_study(
    storage, cfg: DictConfig, search: DictConfig, pruner, on_stale
) -> tuple[optuna.Study, int]:
    """The study (created if new), stale trials failed, with this run's sampler; and the
    number of trials it held before this run (which seeds the sampler)."""
    study = optuna.create_study(
        study_name=cfg.study_name, storage=storage, direction=search.direction, load_if_exists=True
    )
    made = study.direction.name.lower()
    why = f"study {cfg.study_name!r} in this storage was made to {made}"
    check(made == search.direction, "direction", search.direction, why)
    with warnings.catch_warnings():  # experimental since Optuna 3.2, still its public API
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.metric_names is None:  # optuna-dashboard labels the axis val/loss
            study.set_metric_names([search.metric])
    launch.fail_stale(study, on_stale)  # trials of killed runs → FAIL (retried: on_stale)
    n_history = len(study.get_trials(deepcopy=False))
    sampler = make_sampler(search.get("sampler") or {}, cfg.worker, n_history)
    study = optuna.load_study(
        study_name=cfg.study_name, storage=storage, sampler=sampler, pruner=pruner
    )
    return study, n_history


def remaining_trials(study: optuna.Study, n_trials: int) -> int:
    """``n_trials`` is the study's total: finished trials (failed ones too) count, except a
    killed trial that was retried (its retry counts)."""
    return max(n_trials - counted(study, DONE), 0)


def _run_study(study, objective, cfg: DictConfig, argv, n_trials: int, sweep_dir: Path) -> None:
    done = counted(study, DONE)
    remaining = remaining_trials(study, n_trials)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    retries = sum(RESUMES in t.user_attrs for t in waiting)
    again = f" ({min(retries, remaining)} of them retries of killed trials)" if retries else ""
    if cfg.worker is None:
        print(
            f"study {cfg.study_name}: {done} trials done, {remaining} to run{again} → {sweep_dir}"
        )
    if not remaining:
        return
    if cfg.worker is not None or (cfg.launcher == "processes" and cfg.workers == 1):
        import lightning.pytorch  # noqa: F401 — it sets its log level on import: set ours after
        import torch

        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        if cfg.worker is not None:
            torch.set_num_threads(1)  # N workers share the CPU
        # Workers stop once all of them together reach n_trials (others' running trials count).
        states = (*DONE, TrialState.RUNNING) if cfg.worker is not None else DONE
        # The imports' objects (torch, Lightning, pandas) stay out of the garbage collector while
        # trials run: the collection after each trial looks only at what trials made.
        gc.freeze()
        try:
            run_trials(study, objective, cfg.population or 1, n_trials, states)
        finally:
            gc.unfreeze()
        if objective.fatal is not None:
            raise objective.fatal
    else:
        slurm = dict(cfg.slurm)
        launch.run_workers(sweep, argv, cfg.launcher, cfg.workers, slurm, cfg.study_name, sweep_dir)


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
