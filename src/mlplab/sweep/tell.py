"""What ``mlplab-sweep population=K`` tells Optuna about a population's members: each
member's metric after each validation (``Reporter``, as the pruning callback reports for a
trial trained alone) and each trial's end (``Teller``, as ``study.optimize`` tells it)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlplab.sweep.objective import Objective
from mlplab.sweep.report import print_trial


class Teller:
    """Tells Optuna a trial's result once and prints its line (what ``optimize`` does)."""

    def __init__(self, study: optuna.Study) -> None:
        self.study, self.told = study, {}

    def __call__(self, trial, value=None, state=TrialState.COMPLETE) -> None:
        self.told[trial.number] = self.study.tell(trial, value, state=state)
        print_trial(self.study, self.told[trial.number])

    def failed(self, objective: Objective, trial: optuna.Trial, err: BaseException) -> None:
        objective.record_failure(trial, err)
        self(trial, state=TrialState.FAIL)

    def like(self, trial: optuna.Trial, earlier: FrozenTrial) -> None:
        """A repeat: ``earlier``'s state and value (``duplicate_of`` is set already)."""
        if earlier.state == TrialState.FAIL:
            trial.set_user_attr("fail_reason", earlier.user_attrs.get("fail_reason"))
        value = earlier.value if earlier.state == TrialState.COMPLETE else None
        self(trial, value, state=earlier.state)


class Reporter:
    """``on_epoch``: each member's metric goes to its trial, as the pruning callback reports
    after each validation; the members whose trials the pruner prunes stop."""

    def __init__(self, metric: str, trials: list[optuna.Trial]) -> None:
        self.metric, self.trials = metric, trials
        self.values: list[dict[int, float]] = [{} for _ in trials]  # member → {epoch: value}
        self.pruned: set[int] = set()
        self.epochs = 0

    def __call__(self, epoch: int, rows: list[dict]) -> list[int]:
        self.epochs += 1
        reported = []
        for row in rows:
            k, value = row["member"], row.get(self.metric)
            # No per-epoch value (a test/ metric), or the member diverged in this epoch (a run
            # alone raises before its pruning callback reports): nothing to report.
            if value is None or not math.isfinite(row["val/loss"]):
                continue
            reported.append((k, float(value)))
            self.values[k][epoch] = float(value)
        report_all([(self.trials[k], value) for k, value in reported], epoch)
        stop = []
        for k, _ in reported:  # after every report: the pruner compares the members too
            if self.trials[k].should_prune():
                self.pruned.add(k)
                stop.append(k)
        return stop


def report_all(reports: list[tuple[optuna.Trial, float]], step: int) -> None:
    """``trial.report(value, step)`` for each, in one storage transaction where the study is in
    Optuna's RDB storage (sqlite: ~2 ms a write, most of a population sweep's own time, one
    commit a member and epoch otherwise). It writes what ``Trial.report`` writes, through the
    storage's own method; anything it can't do so (another storage, an Optuna without those
    names, a write the storage refuses) rolls back and reports trial by trial, Optuna's way."""
    todo = [(t, v) for t, v in reports if step not in _reported(t)]
    backend = getattr(todo[0][0].storage, "_backend", None) if todo else None
    write = getattr(backend, "_set_trial_intermediate_value_without_commit", None)
    kept = all(hasattr(trial, "_cached_frozen_trial") for trial, _ in todo)
    if len(todo) < 2 or write is None or not hasattr(backend, "scoped_session") or not kept:
        for trial, value in todo:
            trial.report(value, step)
        return
    session = backend.scoped_session()
    try:
        if not _write_step(backend, session, todo, step):
            for trial, value in todo:
                write(session, trial._trial_id, step, value)
        session.commit()
    except Exception:  # noqa: BLE001 — Optuna's own path says what is wrong
        session.rollback()
        for trial, value in todo:
            trial.report(value, step)
        return
    for trial, value in todo:  # what Trial.report keeps after its write
        trial._cached_frozen_trial.intermediate_values[step] = value


def _write_step(backend, session, todo: list[tuple[optuna.Trial, float]], step: int) -> bool:
    """What ``_set_trial_intermediate_value_without_commit`` does for each trial (check the
    trial is running, insert its value at ``step`` or update it), in three statements for all
    of them instead of three each (~1 ms a member and epoch on sqlite). False where Optuna's
    models don't have those names (nothing done: the caller writes trial by trial)."""
    try:
        import sqlalchemy
        from optuna.storages._rdb import models

        trial_model, value_model = models.TrialModel, models.TrialIntermediateValueModel
        stored_repr = value_model.intermediate_value_to_stored_repr
        updatable = backend.check_trial_is_updatable
    except (ImportError, AttributeError):
        return False
    ids = [trial._trial_id for trial, _ in todo]
    query = session.query(trial_model.trial_id, trial_model.state)
    states = dict(query.filter(trial_model.trial_id.in_(ids)).all())
    for trial_id in ids:
        updatable(trial_id, states[trial_id])  # Optuna's error for a finished trial
    rows = session.query(value_model).filter(value_model.trial_id.in_(ids))
    existing = {row.trial_id: row for row in rows.filter(value_model.step == step)}
    new = []
    for trial_id, (_, value) in zip(ids, todo, strict=True):
        stored, kind = stored_repr(value)
        row = existing.get(trial_id)
        if row is None:
            new.append(
                {
                    "trial_id": trial_id,
                    "step": step,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
            )
        else:  # written by another process since this one's cache
            row.intermediate_value, row.intermediate_value_type = stored, kind
    if new:  # one INSERT for all (the ORM inserts row by row to learn each new id)
        session.execute(sqlalchemy.insert(value_model.__table__), new)
    return True


def _reported(trial: optuna.Trial) -> dict:
    cached = getattr(trial, "_cached_frozen_trial", None)
    return cached.intermediate_values if cached is not None else {}
