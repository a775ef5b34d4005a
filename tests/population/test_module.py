"""Tests of ``mlplab.population.module``'s per-member rules where they meet the Trainer's:
early stopping waits for ``trainer.min_epochs`` as Lightning's Trainer waits for them, also
across a kill and ``resume``. (The members' parity with their runs: ``test_engine.py``.)

    .venv/bin/python -m pytest tests/population/test_module.py -q
"""

from __future__ import annotations

import pytest

from mlplab.config import compose_run
from mlplab.population.engine import train_population
from tests.population.test_checkpoint import _assert_same, _kill_at, _outputs
from tests.population.test_engine import BASE, _alone, _same

SGD = ["optimizer=sgd", "optimizer.lr=0.5"]


def test_early_stopping_waits_for_min_epochs_as_a_run_does(tmp_path):
    """Nothing improves by min_delta=0.5 after epoch 0: patience 1 says stop at epoch 1, and
    the member stops once min_epochs=4 are done (epoch 3), as its stand-alone run."""
    stop = ["regularization=early_stopping", "callbacks.early_stopping.min_delta=0.5"]
    shared = [*SGD, *stop, "callbacks.early_stopping.patience=1", "trainer.min_epochs=4"]
    members = [{"seed": 1}, {"seed": 2}]
    cfg = compose_run(tmp_path / "pop", *BASE, *shared)
    summary = train_population(cfg, members, tmp_path / "pop")
    assert list(summary.status) == ["stopped", "stopped"]
    assert list(summary.stopped_epoch) == [3, 3]
    for k, values in enumerate(members):
        alone, best_epoch = _alone(tmp_path, f"alone{k}", *shared, f"seed={values['seed']}")
        _same(summary.iloc[k].to_dict(), alone)
        assert summary.iloc[k].best_epoch == best_epoch


def test_a_stop_said_before_min_epochs_survives_a_resume(tmp_path, monkeypatch):
    """Seeds 2 and 4 (SGD, lr 0.5): val/loss gets worse at epoch 4 (patience 1: stop), better
    again at epoch 5. The stop said at epoch 4 holds, as in Lightning (``should_stop`` stays
    set): with min_epochs=6 they stop at epoch 5, also when killed after epoch 4's checkpoint
    and resumed, though epoch 5 improves."""
    monkeypatch.setattr("mlplab.population.checkpoint.CHECKPOINT_EVERY_S", 0.0)
    shared = [*SGD, "regularization=early_stopping", "callbacks.early_stopping.patience=1"]
    shared += ["trainer.min_epochs=6", "trainer.max_epochs=8"]
    members = [{"seed": 2}, {"seed": 4}]

    def run(out, **kwargs):
        cfg = compose_run(out, *BASE, "threads=1", *shared)
        return train_population(cfg, members, out, **kwargs)

    whole = run(tmp_path / "whole")
    assert list(whole.status) == ["stopped", "stopped"]
    assert list(whole.stopped_epoch) == [5, 5]
    with pytest.raises(KeyError, match="simulated kill"):
        run(tmp_path / "killed", on_epoch=_kill_at(5), resume=True)  # checkpoint: epoch 4
    run(tmp_path / "killed", resume=True)
    _assert_same(_outputs(tmp_path / "whole"), _outputs(tmp_path / "killed"))
