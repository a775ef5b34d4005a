"""The trials of ``mlplab-sweep`` in this process: one at a time, or ``population=K`` at a time,
trained as one population (docs/population.md says what a user sees).

A batch: a leader trial's shared parameters (``population.members``: what members can't differ
in) are fixed for K−1 enqueued trials, so the sampler chooses only their member parameters.
Each trial keeps its number, ``trial_<n>`` dir and value (the best epoch's metric, reported
after each epoch so the pruner stops members one by one). Trials whose shared parameters differ
anyway train as separate populations; a population refused before anything is written trains
its trials one by one. Asked trials beat (``launch.heartbeats``) until told, so a later run can
fail and retry a killed worker's trials (``mlplab.sweep.retry``).
"""

from __future__ import annotations

import copy
import gc
import json
import math
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from mlplab.errors import ConfigError, DivergedError
from mlplab.run.console import silence_known_noise
from mlplab.sweep import launch, retry
from mlplab.sweep.objective import MissingMetric, Objective, best_of, fail_reason
from mlplab.sweep.report import print_trial
from mlplab.sweep.search import override_value


@dataclass
class Job:
    """An asked trial to train; ``copies``: later trials of the batch with its config."""

    trial: optuna.Trial
    overrides: list[str]
    values: dict  # its member parameters: key → value
    copies: list[optuna.Trial] = field(default_factory=list)
    resumes: FrozenTrial | None = None  # a retry: the killed trial it goes on from


class Teller:
    """Tells Optuna a trial's result once and prints its line (what ``optimize`` does)."""

    def __init__(self, study: optuna.Study, objective: Objective) -> None:
        self.study, self.objective, self.told = study, objective, {}

    def __call__(self, trial, value=None, state=TrialState.COMPLETE) -> None:
        self.told[trial.number] = self.study.tell(trial, value, state=state)
        print_trial(self.told[trial.number])

    def failed(self, trial: optuna.Trial, err: BaseException) -> None:
        """FAIL with its ``fail_reason`` and one line; a MissingMetric stops the whole sweep."""
        reason = fail_reason(err)
        trial.set_user_attr("fail_reason", reason)
        print(f"trial {trial.number} failed: {reason}", flush=True)
        if isinstance(err, MissingMetric):
            self.objective.fatal = err
        self(trial, state=TrialState.FAIL)

    def like(self, trial: optuna.Trial, earlier: FrozenTrial) -> None:
        """A repeat (``duplicate_of``): ``earlier``'s state and value."""
        trial.set_user_attr("duplicate_of", earlier.user_attrs.get("duplicate_of", earlier.number))
        if earlier.state == TrialState.FAIL:
            trial.set_user_attr("fail_reason", earlier.user_attrs.get("fail_reason"))
        value = earlier.value if earlier.state == TrialState.COMPLETE else None
        self(trial, value, state=earlier.state)


class Reporter:
    """``on_epoch``: each member's metric goes to its trial, as the pruning callback reports
    after each validation; the members whose trials the pruner prunes stop.

    The pruner decides as ``trial.should_prune()`` does, but against the study's finished trials
    read once for the population (an in-memory study), not from the storage for every member and
    epoch (another worker's, finished meanwhile, count from the next population on)."""

    def __init__(self, metric: str, trials: list[optuna.Trial]) -> None:
        self.metric, self.trials = metric, trials
        self.values: list[dict[int, float]] = [{} for _ in trials]  # member → {epoch: value}
        self.pruned: set[int] = set()
        self.epochs = 0
        study = trials[0].study
        self.pruner = study.pruner
        self.finished = optuna.create_study(direction=study.direction, pruner=self.pruner)
        done = (TrialState.COMPLETE, TrialState.PRUNED)
        self.finished.add_trials(study.get_trials(deepcopy=False, states=done))
        running = {t.number: t for t in study.get_trials(states=(TrialState.RUNNING,))}
        self.frozen = [running[t.number] for t in trials]  # as should_prune() sees them

    def __call__(self, epoch: int, rows: list[dict]) -> list[int]:
        self.epochs += 1
        stop = []
        for row in rows:
            k, value = row["member"], row.get(self.metric)
            # No per-epoch value (a test/ metric, an epoch without validation), or the member
            # diverged in this epoch (a run alone raises before its pruning callback reports).
            if value is None or not math.isfinite(row.get("val/loss", math.nan)):
                continue
            self.values[k][epoch] = float(value)
            self.trials[k].report(float(value), epoch)
            now = copy.copy(self.frozen[k])
            now.intermediate_values = dict(self.values[k])
            if self.pruner.prune(self.finished, now):
                self.pruned.add(k)
                stop.append(k)
        return stop


def run_trials(
    study: optuna.Study, objective: Objective, size: int, n_trials: int, states: tuple
) -> None:
    """Ask ≤ ``size`` trials, train and tell them, until ``n_trials`` trials of the study are in
    ``states`` (finished ones; for workers, other workers' running ones too; ``retry.counted``).
    Stale trials are failed (and for populations retried, ``retry.RetryKilled``) before each
    batch. ``size`` 1: each trial alone, by ``train()`` with the pruning callback."""
    silence_known_noise()  # as train() does for each trial
    on_stale = retry.RetryKilled(objective.sweep_dir) if size > 1 else None
    while objective.fatal is None:
        left = n_trials - retry.counted(study, states)
        if left <= 0:
            return
        launch.fail_stale(study, on_stale)
        trials = ask(study, objective, min(size, left))
        tell = Teller(study, objective)
        try:
            with launch.heartbeats(trials):
                _run_batch(objective, trials, tell, alone=size == 1)
        except BaseException as err:  # Ctrl-C, a lost storage: don't leave them RUNNING
            for trial in trials:
                if trial.number not in tell.told:
                    with suppress(Exception):
                        tell.failed(trial, err)
            raise
        gc.collect()


def ask(study: optuna.Study, objective: Objective, size: int) -> list[optuna.Trial]:
    """A leader and ``size − 1`` trials that share its parameters that members can't differ in
    (enqueued with those fixed: the sampler picks only their member parameters). A retry
    leads the other retries waiting in the queue instead."""
    leader, shared = study.ask(), objective.shared
    member = [key for key in objective.params if key not in shared]
    if size > 1 and member and shared and retry.RESUMES not in leader.user_attrs:
        objective.trial_overrides(leader)  # samples its parameters
        fixed = {key: leader.params[key] for key in shared}
        for _ in range(size - 1):
            study.enqueue_trial(fixed, user_attrs={"leader": leader.number}, skip_if_exists=False)
    return [leader, *(study.ask() for _ in range(size - 1))]


def _run_batch(objective: Objective, trials: list[optuna.Trial], tell: Teller, alone: bool) -> None:
    """Each trial's overrides, then its population, group by group (``alone``: each trial by
    itself). A repeat of a finished trial's config is told its result at once, a repeat of
    another in the batch after that one: Optuna's FAQ pattern for finite spaces, don't retrain."""
    jobs: list[Job] = []
    killed = retry.predecessors(trials)
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = trials[0].study.get_trials(deepcopy=False, states=done)  # once a batch
    for trial in trials:
        overrides = objective.trial_overrides(trial)
        config = (trial.params, overrides)
        earlier = [t for t in finished if (t.params, t.user_attrs.get("overrides")) == config]
        if earlier:
            tell.like(trial, earlier[-1])  # the latest
            continue
        same = next((j for j in jobs if (j.trial.params, j.overrides) == config), None)
        if same is not None:
            same.copies.append(trial)
            continue
        values = {k: v for k, v in trial.params.items() if k not in objective.shared}
        jobs.append(Job(trial, overrides, values, resumes=killed.get(trial.number)))
    groups: dict[str, list[Job]] = {}
    for job in jobs:  # shared parameters, and for retries the population they go on from
        shared = {k: v for k, v in job.trial.params.items() if k in objective.shared}
        key = repr((retry.old_population(job.resumes), sorted(shared.items())))
        groups.setdefault(key, []).append(job)
    for group in groups.values():
        if group[0].resumes is not None:  # a killed population's retries: in its order
            group.sort(key=lambda job: job.resumes.number)
        if objective.fatal is not None:  # the sweep stops: these are not trained
            for job in group:
                tell.failed(job.trial, objective.fatal)
        elif alone:
            _train_alone(objective, group[0], tell)
        else:
            _train_group(objective, group, tell)
        for job in group:
            for repeat in job.copies:
                tell.like(repeat, tell.told[job.trial.number])


def _train_group(objective: Objective, jobs: list[Job], tell: Teller) -> None:
    """One population of the jobs' trials (each trial with ``cv=``/``seeds=`` brings its
    members); trials told as ``optimize`` tells a trial trained alone."""
    from mlplab.population.engine import train_population
    from mlplab.population.members import population_members

    numbers = [job.trial.number for job in jobs]
    params = jobs[0].trial.params.items()
    shared = [f"{k}={override_value(v)}" for k, v in params if k in objective.shared]
    killed = [job.resumes for job in jobs]
    old = retry.old_population(killed[0])
    home = objective.sweep_dir / (old or f"population_{numbers[0]}")
    try:
        cfg = objective.population_config(shared, home)
        replicas = population_members(cfg) or [{}]
    except Exception as err:  # noqa: BLE001 — as a trial that raises: FAIL, the sweep goes on
        for job in jobs:
            tell.failed(job.trial, err)
        return
    members = [job.values | replica for job in jobs for replica in replicas]
    dirs = [objective.trial_dir(job.trial) for job in jobs]
    if len(replicas) > 1:
        dirs = [d / f"member_{r:03d}" for d in dirs for r in range(len(replicas))]
    epoch = None if old is None else retry.go_on_from(home, numbers, cfg, members)
    if old is not None and epoch is None:  # a retry that can't go on: from the start, elsewhere
        home = objective.sweep_dir / f"population_{numbers[0]}"
        cfg = objective.population_config(shared, home)
    kind = "the members of trials" if len(replicas) > 1 else "trials"
    olds = ", ".join(str(k.number) for k in killed if k is not None)
    on = f", on from {home.name}" if epoch is not None else ""
    again = f" (retries of {olds}{on})" if olds else ""
    trials = ", ".join(map(str, numbers))
    print(f"population of {len(members)}: {kind} {trials}{again}", flush=True)
    reporter = Reporter(objective.metric, [job.trial for job in jobs])
    started: list[bool] = []

    def start() -> None:  # the members are built and checked: the population starts
        started.append(True)
        retry.record_population(jobs, home.name)  # so that a killed trial can be retried
        if epoch is not None and len(replicas) == 1:
            reporter.values = retry.report_history(reporter.trials, killed, epoch)

    try:
        summary = train_population(
            cfg,
            members,
            home,
            member_dirs=dirs,
            on_epoch=reporter if len(replicas) == 1 else None,
            resume=epoch is not None,
            before_fit=start,
        )
    except Exception as err:  # noqa: BLE001 — as a trial that raises: FAIL, the sweep goes on
        refused = reporter.epochs == 0 and not (epoch is not None and started)
        if refused and started:  # refused after all: not a population to go on from
            retry.record_population(jobs, None)
        if isinstance(err, ConfigError) and refused:
            print(f"note: trials {numbers} train one by one: {err}", flush=True)
            for job in jobs:
                _train_alone(objective, job, tell)
            return
        for job in jobs:
            tell.failed(job.trial, err)
        return
    if len(replicas) > 1:
        for t, job in enumerate(jobs):
            own = summary.iloc[t * len(replicas) : (t + 1) * len(replicas)]
            _tell_replicas(objective, job, tell, cfg, own, home)
        return
    _tell_members(objective, jobs, tell, summary, reporter)


def _train_alone(objective: Objective, job: Job, tell: Teller) -> None:
    """``train()`` with the pruning callback (``population=1``, or a refused population)."""
    try:
        value = objective.train_trial(job.trial, job.overrides)
    except optuna.TrialPruned:
        tell(job.trial, state=TrialState.PRUNED)
    except Exception as err:  # noqa: BLE001 — a trial that raises: FAIL, the sweep goes on
        tell.failed(job.trial, err)
    else:
        tell(job.trial, value)


def _tell_members(objective, jobs: list[Job], tell: Teller, summary, reporter) -> None:
    returned = [c for c in summary.columns if "/" in c and c != "run_dir"]  # the metrics
    for k, job in enumerate(jobs):
        row = summary.iloc[k]
        if k in reporter.pruned or row["status"] == "pruned":
            tell(job.trial, state=TrialState.PRUNED)
        elif isinstance(row.get("error"), str):  # diverged (or never a finite val/loss)
            tell.failed(job.trial, DivergedError(row["error"]))
        else:  # as the one-by-one path: the best epoch's value
            try:
                last = objective.metric_of({c: row[c] for c in returned})
                best = best_of(reporter.values[k].values(), objective.direction, last)
                value = objective.finite(best)
            except (MissingMetric, FloatingPointError) as err:
                tell.failed(job.trial, err)
            else:
                tell(job.trial, value)


def _tell_replicas(objective, job: Job, tell: Teller, cfg, summary, home: Path) -> None:
    """A ``cv=``/``seeds=`` trial's own files, as ``train()`` writes them for it alone (its
    summary, epochs, run info and mean), and its value: the mean of the metric."""
    from mlplab.config import portable_data
    from mlplab.population.engine import override
    from mlplab.population.stats import mean_and_std
    from mlplab.run.provenance import write_run_info

    out = objective.trial_dir(job.trial)
    with override(cfg, job.values):
        write_run_info(portable_data(cfg, keep=list(job.values)), out, out.name)
    summary = summary.copy()
    start = int(summary["member"].iloc[0])
    summary["member"] -= start
    summary = summary[[c for c in summary.columns if c not in job.values]]
    if "error" in summary and summary["error"].isna().all():  # another trial's member diverged
        summary = summary.drop(columns="error")
    summary.to_csv(out / "summary.csv", index=False)
    epochs = pd.read_csv(home / "metrics.csv")
    epochs = epochs[epochs["member"].between(start, start + len(summary) - 1)].copy()
    epochs["member"] -= start
    epochs.to_csv(out / "metrics.csv", index=False)
    metrics = mean_and_std(summary)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    try:
        value = objective.finite(objective.metric_of(metrics))  # nan: every member diverged
    except (MissingMetric, FloatingPointError) as err:
        tell.failed(job.trial, err)
    else:
        tell(job.trial, value)
