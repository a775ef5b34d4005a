"""Shared fixtures: compose the real configs with Hydra's compose API into a temp run dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from mlplab.config import QUIET, compose_run  # noqa: F401 — QUIET: for the tests' imports
from mlplab.run.console import silence_known_noise

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)  # pytest-xdist runs one worker per core
silence_known_noise()


def compose_cfg(output_dir: Path, *overrides: str, quiet: bool = True) -> DictConfig:
    return compose_run(output_dir, *overrides, quiet=quiet)


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides)`` → a composed train config writing into tmp_path/run."""

    def _make(*overrides: str, quiet: bool = True, name: str = "run") -> DictConfig:
        return compose_cfg(tmp_path / name, *overrides, quiet=quiet)

    return _make


def run_cli(
    *args: str, cwd: Path, env: dict | None = None, timeout: int = 300, module="mlplab.train"
):
    """Run ``python -m mlplab.train ARGS`` (or another entry point) in a subprocess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("MLPLAB_RUN_ID", None)  # each CLI run names itself
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def wandb_sent(monkeypatch):
    """What this process hands to wandb, recorded as it happens: each ``wandb.init``'s
    arguments, config updates and logged rows, in order (``init``, ``config``, ``log``), and
    the same per run (``runs``: run id → its ``init`` arguments, ``config`` updates, ``log``
    rows, and the ``exit_codes`` it finished with and its ``summary`` then; a resumed run: a
    second init of its id).
    wandb's own files are written by its service process, whenever it gets to them: tests read
    this instead."""
    import wandb

    sent = {"init": [], "config": [], "log": [], "runs": {}}
    init, update, log, finish = wandb.init, wandb.Config.update, wandb.Run.log, wandb.Run.finish
    opened = []  # (run, its record): a config update finds its run by its Config object

    def record(run) -> dict:
        empty = {"init": [], "config": [], "log": [], "exit_codes": [], "summary": {}}
        return sent["runs"].setdefault(run.id, empty)

    def spy_init(*args, **kwargs):
        sent["init"].append(kwargs)
        run = init(*args, **kwargs)
        record(run)["init"].append(kwargs)
        opened.append((run, record(run)))
        return run

    def spy_update(config, d, *args, **kwargs):
        sent["config"].append(d)
        for run, mine in opened:
            if run.config is config:
                mine["config"].append(d)
        return update(config, d, *args, **kwargs)

    def spy_log(run, data, *args, **kwargs):
        sent["log"].append(dict(data))
        record(run)["log"].append(dict(data))
        return log(run, data, *args, **kwargs)

    def spy_finish(run, exit_code=None, *args, **kwargs):
        record(run)["exit_codes"].append(exit_code)
        record(run)["summary"] = {key: run.summary.get(key) for key in run.summary.keys()}
        return finish(run, exit_code, *args, **kwargs)

    monkeypatch.setattr(wandb, "init", spy_init)
    monkeypatch.setattr(wandb.Config, "update", spy_update)
    monkeypatch.setattr(wandb.Run, "log", spy_log)
    monkeypatch.setattr(wandb.Run, "finish", spy_finish)
    return sent


def logged_keys(sent: dict) -> set[str]:
    """Every metric key a run logged (``wandb_sent``)."""
    return {key for row in sent["log"] for key in row}
