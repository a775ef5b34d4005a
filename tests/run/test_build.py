"""``mlplab.run.build`` pieces that need no training run.

.venv/bin/python -m pytest tests/run/test_build.py -q
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from mlplab.run.build import best_checkpoint
from mlplab.train import main as train_main

TINY = ["data=moons", "data.options.n_samples=200", "trainer.max_epochs=1", "logger=csv"]


def _checkpoint(tmp_path, filename: str, monitor: str | None, saved: str) -> ModelCheckpoint:
    callback = ModelCheckpoint(dirpath=tmp_path, filename=filename, monitor=monitor)
    callback.best_model_path = saved  # what Lightning sets once it has saved a file
    return callback


def test_best_checkpoint_is_the_monitored_one_whatever_the_callback_order(tmp_path):
    """A keep-the-newest ModelCheckpoint (monitor=None, last.ckpt) also has a best_model_path:
    the test phase must not take it for the best epoch when a config lists it first."""
    last = _checkpoint(tmp_path, "last", None, str(tmp_path / "last.ckpt"))
    best = _checkpoint(tmp_path, "best", "val/loss", str(tmp_path / "best.ckpt"))
    for order in ([last, best], [best, last]):
        trainer = SimpleNamespace(checkpoint_callbacks=order)
        assert best_checkpoint(trainer) == str(tmp_path / "best.ckpt")


def test_no_monitored_checkpoint_means_the_final_weights(tmp_path):
    last = _checkpoint(tmp_path, "last", None, str(tmp_path / "last.ckpt"))
    assert best_checkpoint(SimpleNamespace(checkpoint_callbacks=[last])) is None
    not_saved = _checkpoint(tmp_path, "best", "val/loss", "")  # monitored, nothing saved yet
    assert best_checkpoint(SimpleNamespace(checkpoint_callbacks=[not_saved, last])) is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["callbacks.model_checkpoint.monitor=val/los"], "callbacks.model_checkpoint.monitor="),
        (
            ["regularization=early_stopping", "callbacks.early_stopping.monitor=val/r2"],
            "callbacks.early_stopping.monitor='val/r2' is invalid: a metric logged every epoch",
        ),
        (["scheduler=plateau", "scheduler.monitor=val/los"], "scheduler.monitor='val/los'"),
    ],
)
def test_a_monitor_the_model_does_not_log_is_one_error_line_before_training(
    args, named, tmp_path, monkeypatch, capfd
):
    """Lightning finds a misspelled ModelCheckpoint/EarlyStopping monitor after the first epoch
    (a traceback, a run dir left); a ReduceLROnPlateau one would never step."""
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    with pytest.raises(SystemExit) as exit_info:
        train_main([*TINY, f"paths.log_dir={tmp_path}", *args])
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1 and named in errors[0], errors
    assert "val/loss" in errors[0]  # what is allowed
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").iterdir())
