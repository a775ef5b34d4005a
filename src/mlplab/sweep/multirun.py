"""Hydra callback: after ``mlplab-train -m ...`` write ``summary.csv`` into the sweep dir.

One row per job dir (``<sweep dir>/<job num>/``): the job number, ``ok`` or ``failed`` (no
``metrics.json``), the one-line reason of a failed job (its ``error.txt``), the overrides that
differ between jobs and the job's final metrics. The same rows are printed as a table, and a
multirun with failed jobs ends with one ``error:`` line and exit code 1. Registered in
``conf/hydra/default.yaml``; works with any launcher whose jobs write into the sweep dir
(basic, joblib, submitit), because it only reads files.

When a job raises, Hydra ends the multirun with that error and never calls
``on_multirun_end``; an exit hook then writes the summary anyway, so failed jobs show up too.
"""

from __future__ import annotations

import atexit
import csv
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

FILENAME = "summary.csv"
ERROR_FILE = "error.txt"  # written by mlplab.train for a job that failed with a user error
FIXED = ("job", "status", "error", "metrics")


def _as_dict(lines: list[str] | None) -> dict[str, str]:
    return dict(line.split("=", 1) for line in lines or [] if "=" in line)


def grid_jobs(config: DictConfig) -> dict[int, dict[str, str]]:
    """Job number → overrides of a grid sweep (Hydra's basic sweeper), from the command line.

    A job that failed at start-up leaves no dir (train.py removes it); this still lists it.
    Other sweepers (optuna, ...) choose their jobs as they go: {} for them.
    """
    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    if not sweeper.endswith("BasicSweeper"):
        return {}
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # The basic sweeper's grid: one list of "key=value" per key (a later override of a key
    # replaces its values in place), the jobs in itertools.product's order.
    values: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        key = o.get_key_element()
        if o.is_sweep_override():
            values[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            values[key] = [f"{key}={o.get_value_element_as_str()}"]
    jobs = itertools.product(*values.values())
    return {num: _as_dict(list(job)) for num, job in enumerate(jobs)}


def read_jobs(sweep_dir: Path, expected: dict[int, dict] | None = None) -> list[dict[str, Any]]:
    """Each job's number, status, overrides (``key=value`` → {key: value}) and metrics: the
    job dirs under ``sweep_dir`` plus the ``expected`` jobs that left no dir."""
    job_dirs = {int(p.name): p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()}
    jobs = []
    for num in sorted(set(job_dirs) | set(expected or {})):
        job_dir = job_dirs.get(num, sweep_dir / str(num))
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        metrics_file = job_dir / "metrics.json"
        if overrides_file.is_file():
            overrides = _as_dict(yaml.safe_load(overrides_file.read_text()))
        else:
            overrides = (expected or {}).get(num, {})
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        status = "ok" if metrics_file.is_file() else "failed"
        error_file = job_dir / ERROR_FILE
        error = error_file.read_text().strip() if error_file.is_file() else ""
        jobs.append({"job": num, "status": status, "error": error, **overrides, "metrics": metrics})
    return jobs


def summarize(
    sweep_dir: str | Path, expected: dict[int, dict] | None = None, print_table: bool = True
) -> Path | None:
    """Write ``<sweep_dir>/summary.csv`` for the job dirs (``0/``, ``1/``, ...) and the
    ``expected`` jobs (``grid_jobs``) and print it as a table (train/* metrics left out).
    Returns its path; None without jobs."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir, expected) if sweep_dir.is_dir() else []
    if not jobs:
        return None
    keys = sorted({k for job in jobs for k in job if k not in FIXED})
    # Overrides shared by every job (tiny-run settings, paths) only make the table wider.
    varying = [k for k in keys if len({job.get(k) for job in jobs}) > 1]
    override_keys = varying if len(jobs) > 1 else keys
    metric_keys = sorted({m for job in jobs for m in job["metrics"]})
    columns = ["job", "status", *override_keys, *metric_keys, "error"]
    path = sweep_dir / FILENAME
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for job in jobs:
            row = {k: job.get(k, "") for k in ["job", "status", "error", *override_keys]}
            writer.writerow({**row, **job["metrics"]})
    if print_table:
        _print(jobs, override_keys, [m for m in metric_keys if not m.startswith("train/")], path)
    return path


def _print(jobs: list[dict], override_keys: list[str], metric_keys: list[str], path: Path):
    table = Table(title=f"sweep summary ({path})")
    columns = ["job", "status", *override_keys, *metric_keys]
    for column in columns:
        table.add_column(column, justify="right" if column in metric_keys else "left")
    for job in jobs:
        values = [job["metrics"].get(m) for m in metric_keys]
        cells = [str(job.get(k, "")) for k in ["job", "status", *override_keys]]
        table.add_row(*cells, *("" if v is None else f"{v:.4f}" for v in values))
    # Wide enough for whole headers even when stdout is a pipe (rich then assumes 80 columns).
    width = sum(max(len(c), 7) + 3 for c in columns) + 1
    Console(width=max(width, Console().width)).print(table)


class SweepSummary(Callback):
    """``summary.csv`` + a table at the end of every multirun (see the module docstring)."""

    def __init__(self, print_table: bool = True) -> None:
        self.print_table = print_table
        self._config: DictConfig | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._config = config
        atexit.register(self._summarize_on_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._config = None  # done here: nothing left for the exit hook
        path = self._summarize(config)
        jobs = read_jobs(Path(config.hydra.sweep.dir)) if path is not None else []
        failed = [job for job in jobs if job["status"] == "failed"]
        if failed:
            first = failed[0]
            reason = f" (job {first['job']}: {first['error']})" if first["error"] else ""
            message = f"error: {len(failed)} of {len(jobs)} jobs failed{reason}; see {path}"
            print(message, file=sys.stderr, flush=True)
            sys.exit(1)

    def _summarize(self, config: DictConfig) -> Path | None:
        try:
            expected = grid_jobs(config)
        except Exception:  # an override Hydra accepted but this can't expand: dirs only
            expected = {}
        return summarize(config.hydra.sweep.dir, expected, print_table=self.print_table)

    def _summarize_on_exit(self) -> None:
        if self._config is None:
            return
        try:
            self._summarize(self._config)
        except Exception as err:  # never turn a failed sweep's exit into a traceback
            print(f"sweep summary failed: {err}")
