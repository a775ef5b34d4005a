"""``mlplab.run.build`` pieces that need no training run.

.venv/bin/python -m pytest tests/run/test_build.py -q
"""

from __future__ import annotations

from types import SimpleNamespace

from lightning.pytorch.callbacks import ModelCheckpoint

from mlplab.run.build import best_checkpoint


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
