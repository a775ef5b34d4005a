"""Where trials run (``mlplab.sweep.launch``): which RUNNING trials a later run fails as dead."""

from __future__ import annotations

import time
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState

from mlplab.sweep import launch


def test_fail_stale_fails_silent_trials_and_those_killed_before_their_first_beat(monkeypatch):
    """Seen from a clock ``GRACE_S`` + 60 s ahead: a trial whose last beat is that old, and one
    asked but killed before it ever beat (its start is that old), are failed and handed to
    ``on_stale``; a trial that beat a second ago and a waiting one are left alone."""
    study = optuna.create_study()
    silent, never_beat, alive = study.ask(), study.ask(), study.ask()
    study.enqueue_trial({})  # WAITING: not started, never stale
    later = time.time() + launch.GRACE_S + 60
    silent.set_user_attr(launch.BEAT, later - launch.GRACE_S - 30)
    alive.set_user_attr(launch.BEAT, later - 1)
    monkeypatch.setattr(launch, "time", SimpleNamespace(time=lambda: later))
    handed = []
    launch.fail_stale(study, lambda s, trial: handed.append(trial.number))
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {
        silent.number: TrialState.FAIL,
        never_beat.number: TrialState.FAIL,
        alive.number: TrialState.RUNNING,
        3: TrialState.WAITING,
    }
    assert sorted(handed) == [silent.number, never_beat.number]
    launch.fail_stale(study, lambda s, trial: handed.append(trial.number))  # once only
    assert sorted(handed) == [silent.number, never_beat.number]
