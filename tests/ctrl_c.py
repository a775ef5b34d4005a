"""Callbacks that press Ctrl-C at a chosen point of a run: the interrupt tests add them to a
run's config (``+callbacks.press._target_=tests.ctrl_c.PressCtrlC``), so the press lands at
the same step every time."""

from __future__ import annotations

import signal

import lightning as L


class PressCtrlC(L.Callback):
    """Sends this process SIGINT ``times`` times after the first batch of epoch ``epoch``."""

    def __init__(self, epoch: int = 1, times: int = 1) -> None:
        self.epoch, self.times = epoch, times

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            for _ in range(self.times):
                signal.raise_signal(signal.SIGINT)


class PressWhileStarting(L.Callback):
    """Sends SIGINT when the run builds its callbacks, before training starts."""

    def __init__(self) -> None:
        signal.raise_signal(signal.SIGINT)
