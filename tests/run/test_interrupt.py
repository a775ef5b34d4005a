"""Ctrl-C: the first press ends the run at the end of its epoch with everything a finished run
writes, names the command that continues it and exits 130; the second stops at once; one
while the run starts up leaves nothing. The presses come from callbacks (``tests/ctrl_c.py``)
at a fixed step, so nothing here depends on timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mlplab.config import compose_run, portable_data
from mlplab.errors import ConfigError
from mlplab.run.preflight import expand_resume
from tests.conftest import ROOT, run_cli

RUN = ["data=moons", "data.options.n_samples=300", "trainer.max_epochs=4", "logger=csv"]
ENV = {"PYTHONPATH": str(ROOT)}


def _epoch(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["epoch"]


def _press(**args) -> list[str]:
    out = ["+callbacks.press._target_=tests.ctrl_c.PressCtrlC"]
    return out + [f"+callbacks.press.{k}={v}" for k, v in args.items()]


def test_ctrl_c_stops_at_the_epoch_end_writes_the_run_and_resume_continues_it(tmp_path):
    run_dir = tmp_path / "logs" / "train" / "long"
    done = run_cli(*RUN, "run_name=long", *_press(epoch=1), cwd=tmp_path, env=ENV)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "interrupt: stopping at the end of this epoch" in done.stderr
    assert "interrupted: stopped after epoch 1" in done.stdout
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line == f"interrupted: continue with: mlplab-train resume={run_dir}"
    assert "Traceback" not in done.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/loss" in metrics and "val/loss" in metrics
    assert (run_dir / "learning_curves.png").is_file()
    assert _epoch(run_dir / "checkpoints" / "last.ckpt") == 1

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = run_cli(f"resume={run_dir}", cwd=elsewhere, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (elsewhere / "logs").exists()
    assert _epoch(run_dir / "checkpoints" / "last.ckpt") == 3  # max_epochs=4 of the saved config
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = [r.split(",")[header.index("epoch")] for r in rows[1:]]
    val = header.index("val/loss")
    val_epochs = [e for e, r in zip(epochs, rows[1:], strict=True) if r.split(",")[val]]
    assert val_epochs == ["0", "1", "2", "3"]  # each epoch once: none lost, none repeated


def test_second_ctrl_c_stops_at_once(tmp_path):
    run_dir = tmp_path / "logs" / "train" / "now"
    done = run_cli(*RUN, "run_name=now", *_press(epoch=1, times=2), cwd=tmp_path, env=ENV)
    assert done.returncode == 130, done.stderr[-3000:]
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("interrupted: stopped at once")
    assert last_line.endswith(f"Continue with: mlplab-train resume={run_dir}")
    assert "Traceback" not in done.stderr
    assert _epoch(run_dir / "checkpoints" / "last.ckpt") == 0  # the last finished epoch
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("resume", [False, True])
def test_ctrl_c_while_starting_is_one_line_and_leaves_nothing(resume, tmp_path):
    run_dir = tmp_path / "logs" / "train" / "start"
    if resume:
        first = run_cli(*RUN, "run_name=start", "trainer.max_epochs=1", cwd=tmp_path, env=ENV)
        assert first.returncode == 0, first.stderr[-3000:]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    press = "+callbacks.press._target_=tests.ctrl_c.PressWhileStarting"
    extra = ["resume=auto", "trainer.max_epochs=2"] if resume else []
    done = run_cli(*RUN, "run_name=start", press, *extra, cwd=tmp_path, env=ENV)
    assert done.returncode == 130, done.stderr[-3000:]
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    if resume:
        assert lines[-1] == "interrupted while starting: the run dir is left as it was"
        after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
        assert [p for p in after if p.suffix != ".log"] == [p for p in before if p.suffix != ".log"]
    else:
        assert lines[-1] == "interrupted while starting: nothing was written"
        assert not run_dir.exists()


def test_resume_checks_a_config_group_given_again_against_the_run(tmp_path):
    first = run_cli(*RUN, "run_name=g", "trainer.max_epochs=1", cwd=tmp_path, env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    # the first command again (a requeued job), trained longer
    same = run_cli(*RUN, "run_name=g", "resume=auto", "trainer.max_epochs=2", cwd=tmp_path)
    assert same.returncode == 0, same.stderr[-3000:]
    assert _epoch(tmp_path / "logs" / "train" / "g" / "checkpoints" / "last.ckpt") == 1
    other = run_cli("run_name=g", "resume=auto", "data=circles", cwd=tmp_path)
    assert other.returncode == 2, other.stderr[-3000:]
    assert (
        other.stderr.strip()
        .splitlines()[-1]
        .startswith("error: data=circles sets data.source='circles', but the run in")
    )


POPULATION = """
import json, signal, sys
from mlplab.config import compose_run, portable_data
from mlplab.population.engine import train_population
from mlplab.population.members import population_members
from mlplab.run import interrupt

out, resume = sys.argv[1], sys.argv[2] == "resume"
cfg = compose_run(out, "data=moons", "data.options.n_samples=300", "trainer.max_epochs=4",
                  "seeds=2", "callbacks=default")

def press(epoch, rows):  # the module's epoch end, after the callbacks': stops after epoch 2
    if epoch == 1 and not resume:
        signal.raise_signal(signal.SIGINT)
    return []

with interrupt.session():
    summary = train_population(cfg, population_members(cfg), out, on_epoch=press, resume=resume)
print(json.dumps({"requested": interrupt.requested(), "members": len(summary)}))
"""


def test_ctrl_c_stops_a_population_at_the_epoch_end_and_resume_continues_it(tmp_path):
    out = tmp_path / "pop"
    runs = []
    for mode in ("first", "resume"):
        done = subprocess.run(
            [sys.executable, "-c", POPULATION, str(out), mode],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        ckpt = out / "checkpoints" / "population.ckpt"
        assert _epoch(ckpt) == (2 if mode == "first" else 3)
    assert runs == [{"requested": True, "members": 2}, {"requested": False, "members": 2}]
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 3  # a header and both members, after the resumed run


def test_resume_compares_a_groups_interpolations_by_their_values(tmp_path, monkeypatch):
    """A run's config.yaml holds values (``logger.wandb.offline: true``); a group given again
    holds what resolves to them (``${wandb_offline:}``): equal, not a change."""
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline: the default
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    saved = portable_data(compose_run(run_dir, "logger=default"))  # as mlplab-train saves it
    assert saved["logger"]["wandb"]["offline"] is True
    OmegaConf.save(saved, run_dir / "config.yaml")
    argv = expand_resume([f"resume={run_dir}", "logger=default"])
    assert argv[argv.index("--config-dir") + 1] == str(run_dir.resolve())
    saved["logger"]["wandb"]["offline"] = False  # a run that logged online: a change now
    OmegaConf.save(saved, run_dir / "config.yaml")
    with pytest.raises(ConfigError, match="logger.wandb.offline"):
        expand_resume([f"resume={run_dir}", "logger=default"])
