"""``report_all``: a population's per-epoch reports in one storage transaction, exactly what
``Trial.report`` writes one by one."""

from __future__ import annotations

import optuna
import pytest
from sqlalchemy import event

from mlplab.sweep.launch import open_storage
from mlplab.sweep.tell import report_all


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
