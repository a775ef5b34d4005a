"""The multirun summary (``mlplab.sweep.multirun``): which jobs a grid has, read from the
command line as Hydra's basic sweeper expands it, and the rows of ``summary.csv``."""

from __future__ import annotations

import csv
import json

import yaml
from omegaconf import OmegaConf

from mlplab.sweep.multirun import grid_jobs, summarize

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _multirun_config(*task: str, sweeper: str = BASIC):
    return OmegaConf.create(
        {"hydra": {"sweeper": {"_target_": sweeper}, "overrides": {"task": list(task)}}}
    )


def _job(sweep_dir, num: int, overrides: list[str], metrics: dict) -> None:
    job = sweep_dir / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "metrics.json").write_text(json.dumps(metrics))


def test_a_later_override_of_a_key_replaces_its_values_in_the_grid(tmp_path):
    """``-m seed=1,2,3 optimizer.lr=0.1,0.01 seed=7,8`` is 2 × 2 jobs (Hydra's basic sweeper: a
    later value of a key replaces the earlier one where the key first stood), and the summary of
    those 4 job dirs lists them only."""
    config = _multirun_config("seed=1,2", "optimizer.lr=0.1,0.01", "seed=3")
    assert list(grid_jobs(config).values()) == [
        {"seed": "3", "optimizer.lr": "0.1"},
        {"seed": "3", "optimizer.lr": "0.01"},
    ]
    jobs = grid_jobs(_multirun_config("seed=1,2,3", "optimizer.lr=0.1,0.01", "seed=7,8"))
    grid = [("7", "0.1"), ("7", "0.01"), ("8", "0.1"), ("8", "0.01")]
    assert [(j["seed"], j["optimizer.lr"]) for j in jobs.values()] == grid
    sweep_dir = tmp_path / "grid"
    for num, (seed, lr) in enumerate(grid):
        _job(sweep_dir, num, [f"seed={seed}", f"optimizer.lr={lr}"], {"val/loss": 0.1 * num})
    rows = list(csv.DictReader(summarize(sweep_dir, jobs, print_table=False).open()))
    assert [(r["seed"], r["optimizer.lr"]) for r in rows] == grid
    assert {r["status"] for r in rows} == {"ok"}


def test_grid_jobs_in_the_order_hydra_numbers_them(tmp_path):
    """The last key varies fastest; a job that left no dir (failed at start-up) is a row."""
    jobs = grid_jobs(_multirun_config("optimizer.lr=0.1,0.01", "seed=1,2", "trainer.max_epochs=2"))
    assert [(j["optimizer.lr"], j["seed"]) for j in jobs.values()] == [
        ("0.1", "1"),
        ("0.1", "2"),
        ("0.01", "1"),
        ("0.01", "2"),
    ]
    assert all(j["trainer.max_epochs"] == "2" for j in jobs.values())
    assert grid_jobs(_multirun_config("seed=1,2", sweeper="hydra_plugins.OptunaSweeper")) == {}
    sweep_dir = tmp_path / "grid"
    _job(sweep_dir, 0, ["optimizer.lr=0.1", "seed=1", "trainer.max_epochs=2"], {"val/loss": 0.3})
    rows = list(csv.DictReader(summarize(sweep_dir, jobs, print_table=False).open()))
    assert [(r["job"], r["status"], r["seed"]) for r in rows] == [
        ("0", "ok", "1"),
        ("1", "failed", "2"),
        ("2", "failed", "1"),
        ("3", "failed", "2"),
    ]
