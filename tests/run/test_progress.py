"""The progress bar counts mini-batches, grouped into one ``training_step`` or not."""

from __future__ import annotations

import math

import lightning as L
import pytest

from mlplab.run import build
from mlplab.run.progress import ProgressBar


class Seen(L.Callback):
    """What the bar shows at each epoch's end: (completed, total) of its training task."""

    def __init__(self) -> None:
        self.shown: list[tuple[float, float]] = []
        self.speeds: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        bar = next(c for c in trainer.callbacks if isinstance(c, ProgressBar))
        task = next(t for t in bar.progress.tasks if t.id == bar.train_progress_bar_id)
        self.shown.append((task.completed, task.total))
        shown = [str(c.render(task)) for c in bar.progress.columns if not isinstance(c, str)]
        speed = next(text for text in shown if text.endswith("it/s"))
        self.speeds.append(float(speed.removesuffix("it/s")))


@pytest.mark.parametrize(
    ("extra", "steps_per_epoch"),
    [
        ([], 1),  # group_batches=auto: the whole epoch in one training_step
        (["model.group_batches=3"], 3),
        (["+trainer.limit_train_batches=4"], 4),  # plain batches: Lightning counts them
    ],
)
def test_the_bar_counts_mini_batches(make_cfg, extra, steps_per_epoch):
    cfg = make_cfg(
        "data=moons",
        "data.options.n_samples=200",
        "data.batch_size=16",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=true",
        *extra,
    )
    datamodule = build.build_datamodule(cfg)
    datamodule.setup("fit")
    model = build.build_model(cfg, datamodule)
    seen = Seen()
    trainer = build.build_trainer(cfg, [*build.build_callbacks(cfg), seen], [], model)
    trainer.fit(model, datamodule=datamodule)
    rows = len(datamodule.tensors["train"][0])
    batches = 4 if extra and "limit" in extra[0] else math.ceil(rows / 16)
    assert seen.shown == [(batches, batches)] * 2
    assert all(speed > 0 for speed in seen.speeds), seen.speeds  # one update an epoch too
    assert trainer.num_training_batches == steps_per_epoch
