"""Shared fixtures: compose the real configs with Hydra's compose API into a temp run dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import mlplab.config  # noqa: F401 — schema + resolvers
from mlplab.run.console import silence_known_noise
from mlplab.train import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
# Fast, quiet, local: CSV logging only, no progress bar, CPU.
QUIET = [
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]

torch.set_num_threads(1)  # pytest-xdist runs one worker per core
silence_known_noise()


def compose_cfg(output_dir: Path, *overrides: str, quiet: bool = True) -> DictConfig:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[f"paths.output_dir={output_dir}", *(QUIET if quiet else []), *overrides],
        )


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
