"""The progress bar of ``mlplab-train``: Lightning's Rich bar showing the losses and metrics
the module logs with ``prog_bar=True`` (train/val loss, the main val metric) instead of the
logger's version number, and counting mini-batches: a module with grouped steps
(``mlplab.models.grouped``) gets several mini-batches per ``training_step``, and the bar
counts (and times) each of them, not the groups. Its speed is the epoch's mini-batches over
the epoch's time so far (Rich's own estimate needs two updates, and a whole epoch in one
grouped step is one update: it read ``0.00it/s``)."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar
from rich.progress import ProgressColumn, Task
from rich.text import Text


class Speed(ProgressColumn):
    """Mini-batches per second since the task (the epoch) started; until it finished."""

    def __init__(self, style) -> None:
        self.style = style
        super().__init__()

    def render(self, task: Task) -> Text:
        seconds = task.finished_time if task.finished_time is not None else task.elapsed
        speed = task.completed / seconds if seconds else 0.0
        text = f"{speed:.0f}" if speed >= 100 else f"{speed:.2f}"  # as wide as Rich's column
        return Text(f"{text}it/s", style=self.style)


class ProgressBar(RichProgressBar):
    _done = 0  # mini-batches of this epoch so far

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version: a random id here, says nothing
        return items

    def configure_columns(self, trainer) -> list:
        *columns, _ = super().configure_columns(trainer)  # the last one: Rich's speed estimate
        return [*columns, Speed(self.theme.processing_speed)]

    def _grouped(self):
        """The training BatchIterator when it yields groups of mini-batches, else None (it
        yields plain batches whenever a Trainer setting counts training steps)."""
        loader = self.trainer.train_dataloader
        return loader if getattr(loader, "group", None) else None

    @property
    def total_train_batches(self) -> int | float:
        loader = self._grouped()
        return super().total_train_batches if loader is None else loader.num_batches()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._done = 0
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._done += len(batch) if self._grouped() is not None else 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, self._done - 1)
