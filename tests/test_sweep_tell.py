"""``report_all``: a population's per-epoch reports in one storage transaction, exactly what
``Trial.report`` writes one by one."""

from __future__ import annotations

import optuna
import pytest
from sqlalchemy import event

from mlplab.sweep.launch import open_storage
from mlplab.sweep.tell import report_all

# the sweep asks its trials with heartbeats on (open_storage) and silences Optuna's note on it
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def _study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    commits: list[int] = []
    event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    return study, commits


def test_one_commit_an_epoch_and_the_values_trial_report_writes(tmp_path):
    study, commits = _study(tmp_path)
    trials = [study.ask() for _ in range(4)]
    ours, theirs = trials[:2], trials[2:]
    for step in range(3):
        commits.clear()
        report_all([(t, 0.5 + k + step / 10) for k, t in enumerate(ours)], step)
        assert len(commits) == 1  # one transaction for the epoch's members
        for k, t in enumerate(theirs):
            t.report(0.5 + k + step / 10, step)
    report_all([(ours[0], 9.0)], 1)  # a step reported already: ignored, as Trial.report does
    stored = {t.number: t.intermediate_values for t in study.get_trials()}
    assert stored[0] == stored[2] == {0: 0.5, 1: 0.6, 2: 0.7}
    assert stored[1] == stored[3] == {0: 1.5, 1: 1.6, 2: 1.7}
    for t in ours:  # the trial's own view is kept, as after Trial.report
        assert t._cached_frozen_trial.intermediate_values == stored[t.number]
    study.tell(ours[0], 1.0)
    assert study.get_trials()[0].intermediate_values == stored[0]


def test_a_write_the_storage_refuses_is_optunas_own_error(tmp_path):
    study, _ = _study(tmp_path)
    trials = [study.ask() for _ in range(3)]
    study.tell(trials[1], 1.0)  # finished: its values can't change
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        report_all([(t, 0.1) for t in trials], 0)
    assert study.get_trials()[1].intermediate_values == {}


def test_other_storages_report_trial_by_trial():
    study = optuna.create_study()  # in memory: no SQL transaction to share
    trials = [study.ask() for _ in range(3)]
    report_all([(t, float(k)) for k, t in enumerate(trials)], 0)
    assert [t.intermediate_values for t in study.get_trials()] == [{0: 0.0}, {0: 1.0}, {0: 2.0}]


def test_an_epoch_of_many_members_is_a_few_statements_and_non_finite_values_as_optunas(tmp_path):
    study, _ = _study(tmp_path)
    statements: list[str] = []
    engine = study._storage._backend.engine
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    trials = [study.ask() for _ in range(24)]
    values = [float("nan"), float("inf"), float("-inf"), 0.25] * 3
    statements.clear()
    report_all([(t, v) for t, v in zip(trials[:12], values, strict=True)], 0)
    assert len(statements) == 3  # two queries and one insert, not those per member (36)
    for t, v in zip(trials[12:], values, strict=True):
        t.report(v, 0)
    stored = [t.intermediate_values for t in study.get_trials()]
    assert [repr(s) for s in stored[:12]] == [repr(s) for s in stored[12:]]
    assert repr(stored[0]) == "{0: nan}" and stored[1] == {0: float("inf")}


def test_a_value_another_process_wrote_is_overwritten_as_trial_report_does(tmp_path):
    study, _ = _study(tmp_path)
    ours, theirs = [study.ask() for _ in range(2)], [study.ask() for _ in range(2)]
    for t in ours + theirs:  # written behind the trial objects' backs (their caches miss it)
        study._storage.set_trial_intermediate_value(t._trial_id, 0, 9.0)
    report_all([(t, 0.5) for t in ours], 0)
    for t in theirs:
        t.report(0.5, 0)
    assert [t.intermediate_values for t in study.get_trials()] == [{0: 0.5}] * 4
