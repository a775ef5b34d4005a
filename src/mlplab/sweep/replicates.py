"""Trials that are populations of their own (``cv=K``: its K folds; ``seeds=N``: its N seeds),
stacked across a ``mlplab-sweep population=K`` batch.

Alone, such a trial is ``train(cfg)``: one population of its members, written into its trial
dir (``mlplab.cv.train_cv``, ``mlplab.train.train_seeds``). In a batch, the trials that stack
(one architecture, data and optimizer type: ``sweep.population._groups``) train all their
members as ONE population, in chunks that fit in memory; then each trial dir holds what the
trial alone leaves there: ``member_000`` … (each member's run dir), the run info
(``config.yaml``, ``run_info.json``), ``summary.csv`` (a row per member), ``metrics.csv`` (its
members' epochs) and ``metrics.json`` (mean and std over the members that trained); its value
is the mean of the metric, as alone (no per-epoch reports: such a trial is judged by its mean
at the end). A trial its checks refuse (``check_cv``) fails alone, with the reason. A killed
batch's trials are retried together (``sweep.retry``): the retries go on from its chunks'
checkpoints in its dir, a chunk not started yet from the start there. ``tests/
test_sweep_population.py`` checks the trials' values and files against the same sweep one
trial at a time, and a killed batch's against the same sweep never killed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from mlplab.errors import ConfigError
from mlplab.sweep import retry
from mlplab.sweep.objective import MissingMetric, Objective
from mlplab.sweep.tell import Teller


def members_of(cfg: DictConfig) -> list[DictConfig]:
    """The member configs the trial trains alone: its folds (``cv=``) or seeds (``seeds=``)."""
    from mlplab.cv import check_cv, cv_members
    from mlplab.population.resume import refuse_ckpt_path
    from mlplab.train import seed_members

    if cfg.get("cv") is not None:
        check_cv(cfg)
        return cv_members(cfg)
    refuse_ckpt_path(cfg.get("ckpt_path"), "seeds=")
    return seed_members(cfg)


def train_replicates(objective: Objective, jobs: list, tell: Teller, stacked) -> None:
    """Train the ``jobs`` (``sweep.population.Job``s whose trials have ``cv=``/``seeds=``) as one
    population of all their members and tell each trial its mean. ``stacked(cfg, dir)``: a
    member's config as a population in ``dir`` trains it."""
    from mlplab.config import portable_data
    from mlplab.population.chunks import _named, chunks
    from mlplab.population.run import _flat, train_population

    members, owner, ok = [], [], []
    for job in jobs:
        try:
            own = members_of(job.cfg)
        except Exception as err:  # noqa: BLE001 — as the trial alone: FAIL with the reason
            tell.failed(objective, job.trial, err)
            continue
        for k, member in enumerate(own):
            members.append(_named(member, f"member_{k:03d}"))  # its name alone
            owner.append((len(ok), k))
        ok.append(job)
    if not ok:
        return
    numbers = [job.trial.number for job in ok]
    parts = chunks(members)
    killed = [job.resumes for job in ok]
    old = _goes_on_from(
        objective.sweep_dir, killed, numbers, [[members[i] for i in p] for p in parts]
    )
    out_dir = old or objective.sweep_dir / f"population_{numbers[0]}"
    trials = f"trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"
    olds = ", ".join(str(k.number) for k in killed if k is not None)
    again = f" (retries of {olds}{f', on from {out_dir.name}' if old else ''})" if olds else ""
    print(f"population of {len(members)}: the members of {trials}{again}", flush=True)
    homes = _homes(out_dir, len(parts))
    rows, history, varied = {}, [], []  # varied: the summaries' columns of what varies
    started: list[bool] = []

    def start() -> None:  # the first chunk's members are built and checked
        started.append(True)
        retry.record_population(ok, out_dir.name)  # so that a killed batch can be retried

    try:
        for c, (part, home) in enumerate(zip(parts, homes, strict=True)):
            dirs = [objective.trial_dir(ok[owner[i][0]].trial) / members[i].run_name for i in part]
            summary = train_population(
                [stacked(members[i], home) for i in part],
                home,
                dirs,
                resume=old is not None,
                before_fit=start if c == 0 else None,
            )
            columns = list(summary.columns)
            columns = columns[columns.index("status") + 1 : columns.index("best_epoch")]
            varied += [c for c in columns if c not in varied]
            for j, i in enumerate(part):
                rows[i] = summary.iloc[j].to_dict() | {"member": owner[i][1]}
            epochs = pd.read_csv(home / "metrics.csv")
            epochs["member"] = [part[m] for m in epochs["member"]]  # the batch's numbering
            history.append(epochs)
    except Exception as err:  # noqa: BLE001 — as a trial that raises: FAIL, the sweep goes on
        from mlplab.sweep.population import fall_back

        if not rows and started:  # refused after all: not a population to go on from
            retry.record_population(ok, None)
        fall_back(objective, ok, tell, err, refused=not rows)  # refused: nothing written
        return
    history = pd.concat(history, ignore_index=True)
    for i, row in rows.items():  # a chunk where a key didn't vary has no column of it
        if any(c not in row for c in varied):
            flat = _flat(portable_data(members[i]))
            rows[i] = row | {c: flat.get(c) for c in varied if c not in row}
    for t, job in enumerate(ok):
        mine = [i for i in range(len(members)) if owner[i][0] == t]
        _tell(objective, job, tell, _summary([rows[i] for i in mine], varied), history, mine)


def _homes(out_dir: Path, n: int) -> list[Path]:
    """Where each chunk of a batch's members trains: the population dir, or its chunk dirs."""
    return [out_dir] if n == 1 else [out_dir / f"chunk_{i}" for i in range(n)]


def _goes_on_from(sweep_dir: Path, killed: list, numbers: list[int], parts: list[list]):
    """The killed batch's population dir, when the jobs are its retries and its checkpoints fit
    their members chunk by chunk (``parts``: the member configs of each chunk); the chunks
    without one (not started when it was killed) start there. Else None: train from the start
    in a new dir, with one ``note:`` line for retries."""
    from mlplab.config import portable_data
    from mlplab.population.resume import find_checkpoint
    from mlplab.population.run import _flat

    olds = {retry.old_population(k) for k in killed}
    if None in olds or len(olds) != 1:  # not retries (or of several batches: start over)
        return None
    old_dir = sweep_dir / olds.pop()
    try:
        found = [
            find_checkpoint(home, [_flat(portable_data(m)) for m in part])
            for home, part in zip(_homes(old_dir, len(parts)), parts, strict=True)
        ]
        why = None if found[0] is not None else f"{old_dir.name} has no checkpoint of these"
    except ConfigError as err:  # the checkpoint's own words, less the train command's prefix
        why = str(err).removeprefix("resume=auto: ")
    if why is not None:
        trials = ", ".join(map(str, numbers))
        print(f"note: trials {trials} train from the start: {why}", flush=True)
        return None
    return old_dir


def _summary(rows: list[dict], varied: list[str]) -> pd.DataFrame:
    """The trial's rows as its population alone writes them: after member, run dir and status
    the columns of what varies among ITS members (folds, seeds), not among the batch's."""
    table = pd.DataFrame(rows)
    own = [c for c in varied if c in table and table[c].map(repr).nunique() > 1]
    head = ["member", "run_dir", "status", *own]
    rest = [c for c in table.columns if c not in head and c not in varied]
    if "error" in table and table["error"].isna().all():  # another trial's member diverged
        rest.remove("error")
    return table[head + rest]


def _tell(objective, job, tell: Teller, summary, history, mine: list[int]) -> None:
    """The trial's own files, as ``train(cfg)`` writes them for it alone, and its result."""
    from mlplab.population.run import mean_and_std
    from mlplab.run.provenance import write_run_info

    out = Path(objective.trial_dir(job.trial))
    write_run_info(job.cfg, out)
    summary.to_csv(out / "summary.csv", index=False)
    epochs = history[history["member"].isin(mine)].copy()
    epochs["member"] = epochs["member"].map({i: k for k, i in enumerate(mine)})
    epochs.sort_values(["epoch", "member"], kind="stable").to_csv(out / "metrics.csv", index=False)
    metrics = mean_and_std(summary)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    metric = objective.metric
    if metric not in metrics:
        returned = sorted(metrics)
        err = MissingMetric(f"metric={metric!r} is invalid: train() returned {returned}")
        tell.failed(objective, job.trial, err)
    elif not math.isfinite(metrics[metric]):  # every member diverged
        err = FloatingPointError(f"{metric} was {metrics[metric]} in every epoch")
        tell.failed(objective, job.trial, err)
    else:
        tell(job.trial, metrics[metric])
