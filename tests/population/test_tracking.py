"""A population's tracking outputs: its figures (learning curves of every member, the members'
decision boundary) and its wandb runs, one per member in the population's group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from matplotlib.image import imread

from mlplab.config import compose_run
from mlplab.figures.plots import PIXELS
from mlplab.figures.population import plot_population_curves
from mlplab.population.engine import train_population
from mlplab.train import train

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
    with_boundary = [o for o in BASE if "boundary" not in o]
    summary = _population(tmp_path / "on", boundary, base=with_boundary)
    assert list(summary.status) == ["ok", "ok", "diverged"]
    assert _png_size(tmp_path / "on" / "learning_curves.png") == PIXELS
    # members with other learning rates: their mean boundary would be none of theirs
    assert not (tmp_path / "on" / "boundary.png").exists()
    seeds = [{"seed": s} for s in (1, 2, 3)]
    cfg = compose_run(tmp_path / "seeds", *with_boundary, boundary, "optimizer.lr=0.1")
    train_population(cfg, seeds, tmp_path / "seeds")  # replicas: the mean is their config's
    assert _png_size(tmp_path / "seeds" / "boundary.png") == PIXELS
    folds = [{"data.cv_folds": 3, "data.cv_fold": k} for k in range(3)]
    cfg = compose_run(tmp_path / "cv", *with_boundary, "optimizer.lr=0.1")
    train_population(cfg, folds, tmp_path / "cv")
    assert _png_size(tmp_path / "cv" / "decision_boundary.png") == PIXELS
    _population(tmp_path / "off", "callbacks.learning_curves=null")
    assert (tmp_path / "off" / "summary.csv").is_file()
    assert not list((tmp_path / "off").glob("*.png"))
    _population(tmp_path / "none", "callbacks=none")
    assert not list((tmp_path / "none").glob("*.png"))
    assert not (tmp_path / "none" / "checkpoints").exists()  # no checkpoint callback: none
    assert not list((tmp_path / "none").glob("member_*/checkpoints"))


def test_a_chunked_population_prunes_the_members_the_hook_names(tmp_path):
    """In chunks of 2, the hook sees and names the population's members (2 and 3 in the second
    chunk): pruning member 3 prunes member 3, not the chunk's member of that index."""
    seen = []

    def prune_3(epoch, rows):
        seen.append((epoch, [r["member"] for r in rows]))
        return [3] if epoch == 1 and 3 in seen[-1][1] else []

    members = [{"seed": s} for s in range(1, 5)]
    cfg = compose_run(tmp_path, *BASE, "trainer.max_epochs=3", "callbacks.learning_curves=null")
    summary = train_population(cfg, members, tmp_path, on_epoch=prune_3, max_members=2)
    assert (tmp_path / "chunk_1").is_dir()
    assert seen[3:] == [(0, [2, 3]), (1, [2, 3]), (2, [2])]
    assert list(summary.status) == ["ok", "ok", "ok", "pruned"]
    assert summary.stopped_epoch[3] == 1


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


def _member_runs(out_dir, sent: dict) -> list[dict]:
    """What wandb got of each member (``wandb_sent``), in member order: the run of the id in
    the member's dir, told to keep its files in that dir (what wandb was told, in-process: its
    files are written by its service process, whenever it gets to them)."""
    dirs = sorted(out_dir.glob("member_*"))
    ids = [(d / "wandb_id").read_text() for d in dirs]
    assert sorted(sent["runs"]) == sorted(ids)  # a run per member, nothing else
    for d, run_id in zip(dirs, ids, strict=True):
        places = {Path(kw["dir"]).resolve() for kw in sent["runs"][run_id]["init"]}
        assert places == {d.resolve()}, places
    assert not (out_dir / "wandb").exists() and not (out_dir / "wandb_id").exists()
    return [sent["runs"][run_id] | {"dir": d} for d, run_id in zip(dirs, ids, strict=True)]


def _epochs(run: dict, key: str = "val/loss") -> list[tuple[int, float]]:
    return [(row["epoch"], row[key]) for row in run["log"] if key in row]


@pytest.mark.parametrize("replicate", ["seeds=3", "cv=3"])
def test_a_wandb_run_per_member_in_the_populations_group(
    tmp_path, monkeypatch, wandb_sent, replicate
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    import wandb

    out = tmp_path / "pop"
    train(compose_run(out, *BASE, replicate, "logger=wandb"))
    runs = _member_runs(out, wandb_sent)
    assert len(runs) == 3
    history = pd.read_csv(out / "metrics.csv")
    summary = pd.read_csv(out / "summary.csv")
    for k, run in enumerate(runs):
        (init,) = run["init"]
        assert init["name"] == run["dir"].name == f"member_{k:03d}"
        assert init["group"] == "pop"  # the population dir's name
        assert init["job_type"] == replicate.partition("=")[0]
        # each epoch under the plain names, with this member's values in the population's table
        mine = history[history.member == k]
        assert _epochs(run) == list(zip(mine.epoch, mine["val/loss"], strict=True))
        assert _epochs(run, "train/loss") == list(zip(mine.epoch, mine["train/loss"], strict=True))
        assert not [key for row in run["log"] for key in row if "member" in key]
        # its own config: the one in its dir, the values it differs in included
        (hparams,) = [c for c in run["config"] if "config" in c]
        saved = yaml.safe_load((run["dir"] / "config.yaml").read_text())
        saved.pop("defaults")  # the file's, for a re-run of it by Hydra
        assert hparams["config"] == saved
        assert hparams["population"]["member"] == k
        # its final metrics as its summary; finished
        assert run["summary"]["test/loss"] == pytest.approx(summary["test/loss"][k], abs=1e-12)
        assert run["summary"]["status"] == "ok" and run["exit_codes"] == [0]
    assert len({json.dumps(run["config"], sort_keys=True) for run in runs}) == 3
    assert wandb.run is None


def test_a_sweeps_population_and_a_diverged_member(tmp_path, monkeypatch, wandb_sent):
    """Members given as values (a sweep's trials): job type ``population``, the group the
    logger sets (a sweep: its study); the diverged member's run ends with exit code 1."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    summary = _population(tmp_path / "pop", "logger=wandb", "logger.wandb.group=study")
    runs = _member_runs(tmp_path / "pop", wandb_sent)
    assert [run["init"][0]["job_type"] for run in runs] == ["population"] * 3
    assert [run["init"][0]["group"] for run in runs] == ["study"] * 3
    assert [run["exit_codes"] for run in runs] == [[0], [0], [1]]
    assert [run["summary"]["status"] for run in runs] == list(summary.status)
    lrs = [run["config"][0]["config"]["optimizer"]["lr"] for run in runs]
    assert lrs == [m["optimizer.lr"] for m in MEMBERS]


def test_the_wandb_runs_are_finished_when_training_fails(tmp_path, monkeypatch, wandb_sent):
    monkeypatch.setenv("WANDB_MODE", "offline")
    import wandb

    def fails(epoch, rows):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _population(tmp_path / "pop", "logger=wandb", on_epoch=fails)
    runs = wandb_sent["runs"].values()
    assert len(runs) == 2  # the members that logged an epoch; the third diverged before one
    assert [run["exit_codes"] for run in runs] == [[1], [1]]
    assert wandb.run is None  # nothing left open for the next run in this process


def test_a_resumed_population_logs_on_in_its_members_wandb_runs(tmp_path, monkeypatch, wandb_sent):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr("mlplab.population.checkpoint.CHECKPOINT_EVERY_S", 0.0)  # every epoch
    import wandb

    def killed(epoch, rows):  # a crash after epoch 2's validation: its checkpoint is epoch 1's
        if epoch == 2:
            raise KeyError("simulated kill")
        return []

    out = tmp_path / "pop"
    with pytest.raises(KeyError, match="simulated kill"):
        _population(out, "logger=wandb", on_epoch=killed, resume=True)
    summary = _population(out, "logger=wandb", resume=True)
    runs = _member_runs(out, wandb_sent)
    # members 0 and 1: the same runs (ids of their dirs) continued, from the first epoch not
    # saved; member 2 diverged in its first step, before the kill: its run opens at the end
    assert [[kw["resume"] for kw in run["init"]] for run in runs] == [["allow"] * 2] * 2 + [
        ["allow"]
    ]
    assert [run["exit_codes"] for run in runs] == [[1, 0], [1, 0], [1]]
    for run in runs[:2]:
        assert [epoch for epoch, _ in _epochs(run)] == [0, 1, 2, 2, 3]
    assert list(summary.status) == ["ok", "ok", "diverged"] and wandb.run is None
