"""A run dir belongs to one run: written by one process at a time, never written over.

- ``check_run_dir``: refuse to start in a dir that already holds another run (unless
  ``resume=auto`` asks to continue it) or that a live process is writing;
- ``RunLock``: held by the process writing the run dir, for as long as it runs;
- ``holds_run`` and ``remove``: a run that failed before writing anything leaves no dir behind;
- ``expand_rerun``: ``rerun=<run dir>`` runs that dir's saved config again, in a new dir.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import zipfile
from pathlib import Path

from mlplab.errors import ConfigError

try:  # POSIX; elsewhere runs go unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

LOCK_NAME = ".lock"
POPULATION_CHECKPOINT = Path("checkpoints") / "population.ckpt"  # mlplab.population.checkpoint
RERUN_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn")


def expand_rerun(argv: list[str]) -> list[str]:
    """``rerun=<run dir> [overrides]`` → ``--config-dir <run dir> --config-name config
    [overrides]``: the run's resolved ``config.yaml`` again (its output dir and run name are
    interpolations, so the re-run gets a new dir and the old run is left as it was)."""
    given = [a for a in argv if a.startswith("rerun=")]
    if not given:
        return list(argv)
    value = given[-1].split("=", 1)[1]
    if len(given) > 1:
        raise ConfigError(f"rerun={value} is given {len(given)} times: give one run dir")
    clash = [a for a in argv if a.split("=", 1)[0] in RERUN_FLAGS]
    if clash:
        raise ConfigError(f"rerun={value} names the config itself: drop {clash[0]}")
    run_dir = saved_run_dir("rerun", value, "a run dir (e.g. logs/train/<run name>)")
    rest = [a for a in argv if not a.startswith("rerun=")]
    return ["--config-dir", str(run_dir), "--config-name", "config", *rest]


def saved_run_dir(key: str, value: str, allowed: str) -> Path:
    """The run dir ``key=value`` names (``rerun=``, ``resume=``): it must hold the config.yaml
    that mlplab-train writes."""
    run_dir = Path(value).expanduser()
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(
            f"{key}={value!r} is invalid: {allowed} holding the config.yaml mlplab-train writes"
        )
    return run_dir.resolve()


def _is_stub(path: Path) -> bool:
    """Files Hydra writes before the run starts (and our lock) — not a run's results."""
    return path.name in (".hydra", LOCK_NAME) or path.suffix == ".log"


def holds_run(run_dir: str | Path) -> bool:
    """True when ``run_dir`` has anything besides Hydra's start-up files."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(not _is_stub(p) for p in run_dir.iterdir())


def check_run_dir(run_dir: str | Path, resume: str | None) -> None:
    """Raise a ConfigError if starting a run in ``run_dir`` would write over another run."""
    run_dir = Path(run_dir)
    owner = lock_owner(run_dir)
    if owner is not None:
        raise _in_use(run_dir, owner)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume == "auto" and last.is_file() and not zipfile.is_zipfile(last):
        raise ConfigError(f"resume=auto: checkpoint {str(last)!r} is invalid: {damaged_hint(last)}")
    population = run_dir / POPULATION_CHECKPOINT
    if resume == "auto" and population.is_file() and not zipfile.is_zipfile(population):
        raise ConfigError(
            f"resume=auto: population checkpoint {str(population)!r} is invalid: the file is "
            f"damaged or truncated; {population_hint(population)}"
        )
    if resume != "auto" and holds_run(run_dir):
        raise ConfigError(
            f"run dir {run_dir} already holds a run: choose another run_name (or leave it "
            "unset for a fresh one), or add resume=auto to continue that run"
        )


def damaged_hint(last: Path) -> str:
    return (
        "the file is damaged or truncated (the earlier attempt was probably killed while "
        "writing it): delete it to start this run over, or continue from the best checkpoint "
        f"with ckpt_path={last.parent / 'best.ckpt'}"
    )


def population_hint(path: Path) -> str:
    return f"delete {path} to train the population again from the start"


def check_sweep_dir(sweep_dir: str | Path, resume: str | None) -> None:
    """The multirun version: no job dir of ``sweep_dir`` may hold a run (unless resuming)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        check_run_dir(job_dir, resume)


def lock_owner(run_dir: str | Path) -> str | None:
    """``"pid N on HOST"`` if a live process holds the run dir's lock, else None."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return None
    with open(path, "a+") as f:  # closing it drops a lock taken here
        return _lock(f)


def _lock(f) -> str | None:
    """Lock the open lock file ``f``; if a live process holds it, its ``"pid N on HOST"``."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        return f.read().strip() or "unknown process"
    return None


def _in_use(run_dir: Path, owner: str) -> ConfigError:
    return ConfigError(
        f"run dir {run_dir} is in use by another running process ({owner}): wait for it to "
        "finish, or choose another run_name"
    )


class RunLock:
    """Hold ``<run dir>/.lock`` while this process writes the run dir (released at exit, also
    when the process is killed: the kernel drops the lock with the file descriptor)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._file = None
        self._made_dir = False

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        self._made_dir = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 — held open for the life of the run
        owner = _lock(f)
        if owner is not None:
            f.close()
            raise _in_use(self.path.parent, owner)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: no one else holds it now
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None
        if self._made_dir and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()  # a run that failed before writing anything


def remove(run_dir: str | Path) -> None:
    """Delete ``run_dir``, first closing the log files this process keeps open in it (Hydra's
    ``train.log`` handler): a handler left on a deleted file fails the next logging call
    anywhere in the process with FileNotFoundError."""
    inside = Path(run_dir).resolve()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):
            name = getattr(handler, "baseFilename", None)
            if name is not None and inside in Path(name).resolve().parents:
                logger.removeHandler(handler)
                handler.close()
    shutil.rmtree(run_dir, ignore_errors=True)


# The variables Lightning reads for a process's global rank (DDP, SLURM, torchrun, LSF).
RANK_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def process_rank() -> int:
    """This process's rank from the environment (0 outside distributed runs), known before
    Lightning is imported: only rank 0 checks, locks and writes the run dir."""
    for var in RANK_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0
