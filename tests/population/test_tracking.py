"""A population's tracking outputs: its figures (learning curves of every member, the members'
decision boundary) and one tracker run for the whole population."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from lightning.pytorch.loggers import WandbLogger
from matplotlib.image import imread

from mlplab.config import compose_run
from mlplab.figures.plots import PIXELS
from mlplab.figures.population import plot_population_curves
from mlplab.population.engine import train_population
from tests.conftest import logged_keys

BASE = [
    "data=moons",
    "data.options.n_samples=300",
    "trainer.max_epochs=4",
    "callbacks.decision_boundary=null",
    "optimizer=sgd",
]
# the last one diverges in its first step: a member without a single epoch to draw
MEMBERS = [
    {"seed": 1, "optimizer.lr": 0.1},
    {"seed": 2, "optimizer.lr": 0.3},
    {"seed": 3, "optimizer.lr": 1e9},
]


def _population(out_dir, *overrides: str, base=BASE, **kwargs) -> pd.DataFrame:
    base = [o for o in base if "callbacks=none" not in overrides or "callbacks." not in o]
    return train_population(compose_run(out_dir, *base, *overrides), MEMBERS, out_dir, **kwargs)


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    height, width = imread(path).shape[:2]
    return width, height


def test_figures_follow_the_callbacks(tmp_path):
    boundary = "callbacks.decision_boundary.filename=boundary.png"
    summary = _population(tmp_path / "on", boundary, base=[o for o in BASE if "boundary" not in o])
    assert list(summary.status) == ["ok", "ok", "diverged"]
    assert _png_size(tmp_path / "on" / "learning_curves.png") == PIXELS
    assert _png_size(tmp_path / "on" / "boundary.png") == PIXELS
    _population(tmp_path / "off", "callbacks.learning_curves=null")
    assert (tmp_path / "off" / "summary.csv").is_file()
    assert not list((tmp_path / "off").glob("*.png"))
    _population(tmp_path / "none", "callbacks=none")
    assert not list((tmp_path / "none").glob("*.png"))
    assert not (tmp_path / "none" / "checkpoints").exists()  # no checkpoint callback: none
    assert not list((tmp_path / "none").glob("member_*/checkpoints"))


def test_the_figure_shows_ended_members_and_scales_to_many(tmp_path):
    """Stopped, pruned and diverged members end with a marker; > 10 members: a colour bar."""
    rows = [
        {"epoch": e, "member": m, "train/loss": 1 / (e + 1 + m), "val/loss": 1 / (e + 1)}
        for m in range(12)
        for e in range(8 if m % 3 else 3)
    ]
    rows[1]["val/loss"] = float("nan")  # a NaN inside a curve: a gap, not a crash
    ended = {0: ("stopped", 2), 3: ("pruned", 2), 6: ("diverged", 2), 12: ("diverged", 0)}
    path = plot_population_curves(pd.DataFrame(rows), tmp_path / "many.png", ended=ended)
    assert _png_size(path) == PIXELS
    few = plot_population_curves(pd.DataFrame(rows[:8]), tmp_path / "few.png")
    assert _png_size(few) == PIXELS


@pytest.mark.slow
def test_figures_off_never_import_the_figure_code(tmp_path):
    """The benchmark's setting (figures off) pays for no figure code. (matplotlib itself is
    imported by torchmetrics, which Lightning imports, whatever the figure switch says.)"""
    code = (
        "import sys\n"
        "from mlplab.config import compose_run\n"
        "from mlplab.population.engine import train_population\n"
        f"out = {str(tmp_path / 'pop')!r}\n"
        f"over = {[*BASE, 'callbacks.learning_curves=null', 'trainer.max_epochs=1']!r}\n"
        "train_population(compose_run(out, *over), [{'seed': 1}, {'seed': 2}], out)\n"
        "drawn = [m for m in sys.modules if m.startswith('mlplab.figures')]\n"
        "assert not drawn, drawn\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _offline_run(out_dir):
    runs = list((out_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs  # one run for the whole population
    return runs[0]


def test_one_wandb_run_per_population_with_every_members_metrics(tmp_path, monkeypatch, wandb_sent):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    import wandb

    out = tmp_path / "pop"
    summary = _population(out, "logger=wandb")
    run = _offline_run(out)
    assert len(wandb_sent["init"]) == 1 and not list(out.glob("member_*/wandb"))
    assert (out / "wandb_id").read_text() in run.name
    keys = logged_keys(wandb_sent)
    for k in (0, 1):  # the members that trained: each epoch's metrics under their number
        for key in ("train/loss", "val/loss", "val/acc"):
            assert f"{key}/member_{k:03d}" in keys
    assert {"curves/val/loss", "learning_curves", "summary"} <= keys
    config = str([wandb_sent["init"][0].get("config"), *wandb_sent["config"]])
    assert "varying" in config and "optimizer.lr" in config  # config: what differs
    assert wandb_sent["init"][0]["group"] == tmp_path.name  # the population dir's parent
    (table,) = [row["summary"] for row in wandb_sent["log"] if "summary" in row]
    assert len(table.data) == 3 and "status" in table.columns
    assert table.data[2][table.columns.index("status")] == "diverged"
    assert wandb.run is None and len(summary) == 3


def test_the_wandb_run_is_finished_when_training_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    import wandb

    finished = []
    finish = wandb.Run.finish

    def spy(run, exit_code=None):
        finished.append(exit_code)
        finish(run, exit_code)

    monkeypatch.setattr(wandb.Run, "finish", spy)

    def fails(epoch, rows):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _population(tmp_path / "pop", "logger=wandb", on_epoch=fails)
    assert finished == [1]
    _offline_run(tmp_path / "pop")
    assert wandb.run is None  # nothing left open for the next run in this process


def test_a_resumed_population_logs_on_in_its_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setattr("mlplab.population.checkpoint.CHECKPOINT_EVERY_S", 0.0)  # every epoch
    import wandb

    inits, logged = [], []
    init, log = wandb.init, WandbLogger.log_metrics

    def spy_init(**kwargs):
        inits.append(kwargs)
        return init(**kwargs)

    def spy_log(logger, metrics, step=None):
        log(logger, metrics, step)
        logged.append((len(inits), step))  # (the run it went to, epoch)

    monkeypatch.setattr(wandb, "init", spy_init)
    monkeypatch.setattr(WandbLogger, "log_metrics", spy_log)

    def killed(epoch, rows):  # a crash after epoch 2's validation: its checkpoint is epoch 1's
        if epoch == 2:
            raise KeyError("simulated kill")
        return []

    out = tmp_path / "pop"
    with pytest.raises(KeyError, match="simulated kill"):
        _population(out, "logger=wandb", on_epoch=killed, resume=True)
    summary = _population(out, "logger=wandb", resume=True)
    # the same run (id of the population dir) continued, from the first epoch not saved
    assert [kw["id"] for kw in inits] == [(out / "wandb_id").read_text()] * 2
    assert [kw["resume"] for kw in inits] == ["allow", "allow"]
    assert logged == [(1, 0), (1, 1), (1, 2), (2, 2), (2, 3)]
    assert list(summary.status) == ["ok", "ok", "diverged"] and wandb.run is None
