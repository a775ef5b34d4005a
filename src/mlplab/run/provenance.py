"""What a run dir records besides Hydra's ``.hydra/``: resolved config and provenance."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mlplab.config import portable_yaml

PACKAGES = "mlplab torch lightning hydra-core omegaconf torchmetrics wandb numpy pandas".split()
SLURM_VARS = (
    "SLURM_JOB_ID SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID SLURM_PROCID SLURM_NODELIST".split()
)


def git_state(cwd: Path | str = ".") -> dict:
    """``{"sha": ..., "dirty": bool}``, or nulls outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout, too slow
        return {"sha": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def run_environment() -> dict:
    """What a run's ``run_info.json`` records about the process and the code (git, packages,
    host): computed once and shared by all members of a population."""
    return {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "git": git_state(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "host": socket.gethostname(),
        "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ},
    }


def write_run_info(
    data: dict, output_dir: str | Path, run_name: str, environment: dict | None = None
) -> dict:
    """Write ``config.yaml`` and ``run_info.json`` into the run dir; return the info.

    ``data``: the run's config as ``portable_data`` makes it: run dir and run name are
    interpolations in it, so ``mlplab-train rerun=<run dir>`` re-runs it into a new run dir
    (never over this one); the resolved dir and name are in the info. ``environment``:
    ``run_environment()``, if known (a population's members share one).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# The config of run {run_name}. Re-run it (into a new run dir) with\n"
        f"#   mlplab-train rerun={out} [overrides...]\n"
    )
    (out / "config.yaml").write_text(portable_yaml(data, header=header))
    info = {
        "run_name": run_name,
        "output_dir": str(output_dir),
        "seed": data.get("seed"),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(environment or run_environment()),
    }
    (out / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
