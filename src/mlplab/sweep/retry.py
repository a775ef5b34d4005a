"""A killed ``mlplab-sweep population=K`` goes on from its populations' checkpoints.

A worker killed mid-population (kill -9, SLURM preemption) leaves its K trials RUNNING. The next
run fails them once their heartbeat is stale (``launch.fail_stale``), and ``RetryKilled`` — run
once per trial, by the worker that failed it — enqueues a retry of each whose population dir
holds a checkpoint: a WAITING trial with its params and ``resumes`` = its number.

The retries of one population train together in the old dir from its checkpoint, each first
given the killed trial's reports up to the checkpoint's epoch, so the pruner and the trial's
value see every epoch. Retries that don't match the checkpoint (another ``population=``, part of
them asked, a changed config, a damaged file) train from the start in a new dir, with one
``note:`` line. A retried FAIL does not count towards ``n_trials`` (``counted``): its retry does.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from mlplab.errors import ConfigError
from mlplab.run.rundir import POPULATION_CHECKPOINT

RESUMES = "resumes"  # user attr of a retry: the number of the killed trial it continues


class RetryKilled:
    """The storage's callback for a trial failed as stale: a retry, if there is a checkpoint."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        name = trial.user_attrs.get("population")  # set when its population started
        if not name:
            return
        # Its checkpoint, or its chunks' (cv=/seeds= trials whose members train in chunks).
        home, checkpoint = self.sweep_dir / name, POPULATION_CHECKPOINT.as_posix()
        if (home / checkpoint).is_file() or any(home.glob(f"chunk_*/{checkpoint}")):
            study.enqueue_trial(trial.params, user_attrs={RESUMES: trial.number})


def record_population(jobs: list, name: str | None) -> None:
    """Each job's trials' ``population`` dir (None: not one); its members are its trials in the
    order of their numbers (what a retry is sorted by)."""
    for job in jobs:
        for trial in (job.trial, *job.copies):
            trial.set_user_attr("population", name)


def retries(trials: list[FrozenTrial]) -> dict[int, FrozenTrial]:
    """``{killed trial's number: its retry}``."""
    return {t.user_attrs[RESUMES]: t for t in trials if RESUMES in t.user_attrs}


def counted(study: optuna.Study, states: tuple) -> int:
    """The study's trials in ``states`` that count towards ``n_trials``: a killed trial that
    was retried counts as its retry."""
    trials = study.get_trials(deepcopy=False)
    retried = retries(trials)
    return sum(t.state in states and t.number not in retried for t in trials)


def predecessors(trials: list[optuna.Trial]) -> dict[int, FrozenTrial]:
    """``{retry's number: the killed trial it resumes}`` for the batch's retries."""
    wanted = {t.number: t.user_attrs[RESUMES] for t in trials if RESUMES in t.user_attrs}
    by_number = {t.number: t for t in trials[0].study.get_trials(deepcopy=False)}
    return {n: by_number[old] for n, old in wanted.items()}


def old_population(killed: FrozenTrial | None) -> str | None:
    """The population dir a retry's killed trial trained in (None: not a retry)."""
    return None if killed is None else killed.user_attrs.get("population")


def go_on_from(home: Path, numbers: list[int], cfg, members: list[dict]) -> int | None:
    """The epoch of the checkpoint in ``home`` (the killed trials' population dir) to go on
    from, when its members are these (``cfg``, ``members``; each chunk's checkpoint against its
    own); else None: train from the start in a new dir, with one ``note:`` line."""
    from mlplab.population.checkpoint import find_chunk_checkpoints
    from mlplab.population.engine import MemberConfigs

    try:
        configs = MemberConfigs(cfg, members)
        found = find_chunk_checkpoints(home, [configs[k] for k in range(len(members))])
        why = f"{home.name} has no checkpoint" if found is None else None
    except ConfigError as err:
        found, why = None, str(err).removeprefix("resume=auto: ")
    if found is None:
        trials = ", ".join(map(str, numbers))
        print(f"note: trials {trials} train from the start: {why}", flush=True)
        return None
    return int(found[1]["epoch"])


def report_history(trials: list[optuna.Trial], killed: list[FrozenTrial], epoch: int) -> list:
    """Report each killed trial's values of the epochs up to ``epoch`` (the checkpoint's) into
    its retry; returns them, ``[{epoch: value}]`` per trial."""
    history = []
    for trial, old in zip(trials, killed, strict=True):
        values = {step: v for step, v in sorted(old.intermediate_values.items()) if step <= epoch}
        for step, value in values.items():
            trial.report(value, step)
        history.append(values)
    return history
