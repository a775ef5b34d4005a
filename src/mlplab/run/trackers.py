"""Experiment trackers that keep what they already wrote.

- ``CSVLogger``: Lightning's, except that a resumed run keeps the per-epoch history its run
  dir already has (Lightning deletes ``metrics.csv`` when the folder exists) and every row
  reaches the disk when it is logged (so a killed run loses nothing it had logged);
- ``finish_trackers``: end the process's wandb run, so the next run in this process (a
  multirun job, a sweep trial) gets its own instead of logging into this one.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from lightning.fabric.loggers.csv_logs import _ExperimentWriter as _FabricWriter
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _KeepingWriter(ExperimentWriter):
    """Starts from the rows of an existing ``metrics.csv`` up to ``keep_until_epoch``."""

    def __init__(self, log_dir: str, keep_until_epoch: int | None) -> None:
        self._keep_until_epoch = keep_until_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self._keep_until_epoch is None or not path.is_file():
            _FabricWriter._check_log_dir_exists(self)  # a fresh run: Lightning's behaviour
            return
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        # The checkpoint was saved at the end of epoch k: rows of later epochs (and a test
        # phase) came from the interrupted attempt after it and are logged again now.
        kept = [
            {k: v for k, v in row.items() if v != ""}
            for row in rows
            if _epoch(row) is not None
            and _epoch(row) <= self._keep_until_epoch
            and not any(k.startswith("test/") and v != "" for k, v in row.items())
        ]
        self.metrics = kept
        self.metrics_keys = sorted({k for row in kept for k in row})
        path.unlink()  # rewritten, header and kept rows first, at the next save


def _epoch(row: dict) -> int | None:
    try:
        value = float(row.get("epoch", ""))
    except ValueError:
        return None
    return int(value) if math.isfinite(value) else None


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends instead of starting over.

    Args:
        keep_until_epoch: resuming from a checkpoint of this epoch: keep the existing rows of
            epochs ≤ it. None (a fresh run) behaves like Lightning's logger.
        flush_logs_every_n_steps: default 1 — rows are logged once per epoch anyway, and a
            killed run should lose none of them.
    """

    def __init__(self, *args, keep_until_epoch: int | None = None, **kwargs) -> None:
        kwargs.setdefault("flush_logs_every_n_steps", 1)
        super().__init__(*args, **kwargs)
        self.keep_until_epoch = keep_until_epoch

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self.keep_until_epoch)
        return self._experiment


def finish_trackers(failed: bool = False) -> None:
    """Finish the process's wandb run, if one is open (exit code 1 when the run failed)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
