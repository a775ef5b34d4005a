"""``mlplab-sweep population=K``: ask Optuna for K trials at a time, train them as one
population (``mlplab.population.run.train_population``) and tell Optuna each member's result.

A trial is the one the sweep trains alone: the same overrides and config, the same
``trial_<number>`` dir and value (the best epoch's metric, reported after each validation). A
member the pruner prunes stops (PRUNED); one that diverges FAILs with the reason, the others go
on; a repeat of a finished trial or of one in the same batch is not trained (``duplicate_of``).
Trials that can't be stacked (they differ outside ``MEMBER_KEYS``, or in optimizer type) train as
separate populations, one after another (each in ``<sweep_dir>/population_<first trial>``, the
trials' ``population`` attribute); what a population can't do yet (``NOT_YET``), or a group it
refuses before training, trains one by one as without ``population``. Trials with ``cv=`` or
``seeds=`` (a population of its own each) stack all their members (``sweep.replicates``).

``study.optimize`` records a heartbeat only for the trial it runs; here every asked trial has one
until it is told, so the K RUNNING trials of a killed worker go stale and a later run fails them,
as it fails a killed one-by-one worker's trial. A trial records its ``population`` (and
``member``) when its population starts, so that a later run retries the killed trials of a
population that has a checkpoint and goes on from it (``mlplab.sweep.retry``).
"""

from __future__ import annotations

import gc
import math
import warnings
from contextlib import suppress
from dataclasses import dataclass, field

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from mlplab.composer import copy_config
from mlplab.config import portable_data
from mlplab.errors import ConfigError, DivergedError, check
from mlplab.run.console import silence_known_noise
from mlplab.sweep import launch, retry
from mlplab.sweep.objective import MissingMetric, Objective, best_of, fail_reason
from mlplab.sweep.replicates import train_replicates
from mlplab.sweep.tell import Reporter, Teller


def check_population(size) -> None:
    """``population=`` is unset or a whole number ≥ 1 (1: one trial at a time, as without it)."""
    ok = size is None or (type(size) is int and size >= 1)
    check(ok, "population", size, "a whole number ≥ 1 (trials trained at once as one population)")


@dataclass
class Job:
    """An asked trial to train; ``copies``: later trials of the batch with its config."""

    trial: optuna.Trial
    overrides: list[str]
    cfg: DictConfig
    copies: list[optuna.Trial] = field(default_factory=list)
    resumes: FrozenTrial | None = None  # a retry: the killed trial it goes on from
    portable: dict = field(default_factory=dict)  # portable_data(cfg): the same in any dir
    flat: dict = field(default_factory=dict)  # portable flattened (check_stackable's rule)


def run_populations(
    study: optuna.Study, objective: Objective, size: int, n_trials: int, states: tuple
) -> None:
    """Ask ≤ ``size`` trials, train and tell them, until ``n_trials`` trials of the study are in
    ``states`` (finished ones; for workers, other workers' running ones too; ``retry.counted``).
    Stale trials are failed (and retried, ``retry.RetryKilled``) before each batch."""
    silence_known_noise()  # as train() does for each trial
    while objective.fatal is None:
        left = n_trials - retry.counted(study, states)
        if left <= 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # what study.optimize does before a trial
            warnings.filterwarnings("ignore", message="Heartbeat of storage")  # see heartbeats
            trials = [study.ask() for _ in range(min(size, left))]
        tell = Teller(study)
        try:
            with launch.heartbeats(trials):
                _run_batch(objective, trials, tell)
        except BaseException as err:  # Ctrl-C, a lost storage: don't leave them RUNNING
            for trial in trials:
                if trial.number not in tell.told:
                    with suppress(Exception):
                        trial.set_user_attr("fail_reason", fail_reason(err))
                        tell(trial, state=TrialState.FAIL)
            raise
        gc.collect()


def _run_batch(objective: Objective, trials: list[optuna.Trial], tell: Teller) -> None:
    """Compose each trial's config (repeats are told at once), then train group by group."""
    from mlplab.population.run import _flat

    jobs: list[Job] = []
    killed = retry.predecessors(trials)
    finished = objective.finished(trials[0].study)  # once a batch, not once a trial
    for trial in trials:
        overrides = objective.trial_overrides(trial)
        earlier = objective.repeat_of(trial, overrides, finished)
        if earlier is not None:
            tell.like(trial, earlier)
            continue
        same = next(
            (j for j in jobs if (j.trial.params, j.overrides) == (trial.params, overrides)), None
        )
        if same is not None:
            trial.set_user_attr("duplicate_of", same.trial.number)
            same.copies.append(trial)
            continue
        try:
            cfg = objective.trial_config(trial, overrides)
            job = Job(trial, overrides, cfg, resumes=killed.get(trial.number))
            job.portable = portable_data(cfg)  # run dir and name stay references in it
            job.flat = _flat(job.portable)
            jobs.append(job)
        except Exception as err:  # noqa: BLE001 — as a trial that raises: FAIL, go on
            tell.failed(objective, trial, err)
    for group, kind in _groups(jobs):
        if objective.fatal is not None:  # the sweep stops: these are not trained
            for job in group:
                tell.failed(objective, job.trial, objective.fatal)
        elif kind == "population":
            _train_population(objective, group, tell)
        elif kind == "replicates":
            train_replicates(objective, group, tell, stacked)
        else:
            _train_alone(objective, group[0], tell)
        for job in group:
            for repeat in job.copies:
                tell.like(repeat, tell.told[job.trial.number])


def _groups(jobs: list[Job]) -> list[tuple[list[Job], str]]:
    """(jobs, kind): groups equal outside ``MEMBER_KEYS`` (``SHARED`` keys included, so
    one optimizer type each), in the order they were asked (kind "population"); then the
    trials that are populations of their own (``cv=``/``seeds=``: "replicates", one group per
    such config, ``sweep.replicates``); then the jobs to train alone.
    Retries of one killed population are a group of their own, in its members' order."""
    from mlplab.population.chunks import chunks
    from mlplab.population.run import MEMBER_KEYS, NOT_YET, SHARED

    groups: dict[str, list[Job]] = {}
    replicates: dict[str, list[Job]] = {}
    alone = []
    for job in jobs:
        flat = job.flat
        if any(flat.get(key) for key in NOT_YET):
            alone.append(job)
            continue
        fixed = {k: v for k, v in flat.items() if not k.startswith(MEMBER_KEYS) or k in SHARED}
        old = retry.old_population(job.resumes)
        if flat.get("seeds") is not None or flat.get("cv") is not None:
            # a population of its own (folds, seeds): its members stack with theirs
            replicates.setdefault(repr((old, sorted(fixed.items()))), []).append(job)
            continue
        groups.setdefault(repr((old, sorted(fixed.items()))), []).append(job)
    for group in replicates.values():  # a killed batch's retries: in its trials' order
        if group[0].resumes is not None:
            group.sort(key=lambda job: retry.member_order(job.resumes))
    parts = []
    for group in groups.values():  # each in chunks that fit in memory (population.chunks)
        if group[0].resumes is not None:
            group.sort(key=lambda job: retry.member_order(job.resumes))
        parts += [
            ([group[i] for i in part], "population")
            for part in chunks([job.cfg for job in group], None, [job.flat for job in group])
        ]
    parts += [(group, "replicates") for group in replicates.values()]  # chunked by members
    return parts + [([job], "alone") for job in alone]


def stacked(cfg: DictConfig, out_dir) -> DictConfig:
    """The trial's config as its population trains it: one output dir for all members (so the
    keys derived from it are equal; each member is still written into its trial dir). Its
    loggers: one wandb run for the population (``population.tracking``), its ``metrics.csv``."""
    cfg = copy_config(cfg)
    OmegaConf.update(cfg, "paths.output_dir", str(out_dir), force_add=True)
    return cfg


def _train_alone(objective: Objective, job: Job, tell: Teller) -> None:
    """The one-by-one path (``train()`` with the pruning callback) for an asked trial."""
    try:
        value = objective.train_trial(job.trial, job.overrides)
    except optuna.TrialPruned:
        tell(job.trial, state=TrialState.PRUNED)
    except Exception:  # noqa: BLE001 — recorded with its reason by train_trial
        tell(job.trial, state=TrialState.FAIL)
    else:
        tell(job.trial, value)


def _train_population(objective: Objective, jobs: list[Job], tell: Teller) -> None:
    from mlplab.population.run import train_population

    numbers = [job.trial.number for job in jobs]
    killed = [job.resumes for job in jobs]
    resume = retry.go_on_from(objective.sweep_dir, killed, numbers, [job.flat for job in jobs])
    out_dir, epoch = resume or (objective.sweep_dir / f"population_{numbers[0]}", None)
    olds = ", ".join(str(old.number) for old in killed if old is not None)
    on = f", on from {out_dir.name}" if epoch is not None else ""
    again = f" (retries of {olds}{on})" if olds else ""
    print(f"population of {len(jobs)}: trials {', '.join(map(str, numbers))}{again}", flush=True)
    cfgs = [stacked(job.cfg, out_dir) for job in jobs]
    loggers = sorted(set(jobs[0].cfg.get("logger") or {}) - {"csv", "wandb"})
    if loggers:
        print(f"note: populations don't log to {', '.join(loggers)} (not yet)", flush=True)
    reporter = Reporter(objective.metric, [job.trial for job in jobs])
    started: list[bool] = []

    def start() -> None:  # the members are built and checked: the population starts
        started.append(True)
        retry.record_population(jobs, out_dir.name)  # so that a killed trial can be retried
        if epoch is not None:
            reporter.values = retry.report_history(reporter.trials, killed, epoch)

    try:
        summary = train_population(
            cfgs,
            out_dir,
            member_dirs=[objective.trial_dir(job.trial) for job in jobs],
            on_epoch=reporter,
            resume=epoch is not None,
            before_fit=start,
            portable=[job.portable for job in jobs],  # the same with the population's dir
        )
    except Exception as err:  # noqa: BLE001 — as a trial that raises: FAIL, the sweep goes on
        # Refused: nothing written, nothing reported (a resume reports its history at start).
        refused = reporter.epochs == 0 and (epoch is None or not started)
        if refused and started:
            retry.record_population(jobs, None)
        fall_back(objective, jobs, tell, err, refused)
        return
    metric = objective.metric
    missing = None
    if metric not in summary.columns:
        returned = sorted(c for c in summary.columns if "/" in c and c != "run_dir")
        missing = MissingMetric(f"metric={metric!r} is invalid: train() returned {returned}")
    for k, job in enumerate(jobs):
        row = summary.iloc[k]
        if k in reporter.pruned or row["status"] == "pruned":
            tell(job.trial, state=TrialState.PRUNED)
        elif isinstance(row.get("error"), str):  # diverged (or never a finite val/loss)
            tell.failed(objective, job.trial, DivergedError(row["error"]))
        elif missing is not None:
            tell.failed(objective, job.trial, missing)
        else:
            value = best_of(reporter.values[k].values(), objective.direction, float(row[metric]))
            if math.isfinite(value):
                tell(job.trial, value)
            else:  # as the one-by-one path: Optuna would fail it without saying why
                err = FloatingPointError(f"{metric} was {value} in every epoch")
                tell.failed(objective, job.trial, err)


def fall_back(objective: Objective, jobs: list[Job], tell: Teller, err: Exception, refused) -> None:
    """A population that raised: refused before anything was written (a ConfigError), its
    trials train one by one; else each FAILs with the error and the sweep goes on."""
    if isinstance(err, ConfigError) and refused:
        numbers = [job.trial.number for job in jobs]
        print(f"note: trials {numbers} train one by one: {err}", flush=True)
        for job in jobs:
            _train_alone(objective, job, tell)
        return
    for job in jobs:
        tell.failed(objective, job.trial, err)
