"""The progress bar of ``mlplab-train``: Lightning's Rich bar showing the losses and metrics
the module logs with ``prog_bar=True`` (train/val loss, the main val metric) instead of the
logger's version number."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version: a random id here, says nothing
        return items
