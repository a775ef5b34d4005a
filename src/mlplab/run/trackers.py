"""Experiment trackers that keep what they already wrote.

- ``CSVLogger``: the files of Lightning's, except that a resumed run keeps the per-epoch
  history its run dir already has (Lightning's starts it over) and every row reaches the disk
  when it is logged (so a killed run loses nothing it had logged);
- ``finish_trackers``: end the run's tracker runs (MLflow's: FINISHED or FAILED) and the
  process's wandb run, so the next run in this process (a multirun job, a sweep trial) gets
  its own instead of logging into this one.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Iterable
from pathlib import Path

from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only


class CSVLogger(Logger):
    """The files of Lightning's CSVLogger: ``<save_dir>/<name>/<version>/metrics.csv`` (a row
    per ``log_metrics``: the values and ``step``; columns sorted) and ``hparams.yaml``.

    Args:
        save_dir, name, version: where (the run dir, ``csv``, ``""``: ``<run dir>/csv/``).
        keep_until_epoch: resuming from a checkpoint of this epoch: the existing rows of
            epochs ≤ it stay (later ones, and a test phase, came from the interrupted attempt
            and are logged again). None: a fresh file.
    """

    def __init__(
        self, save_dir: str, name: str = "csv", version: str | int = "", keep_until_epoch=None
    ) -> None:
        super().__init__()
        self._save_dir, self._name, self._version = str(save_dir), name, version
        self._dir = Path(save_dir, name, str(version))
        self.keep_until_epoch = keep_until_epoch
        self.hparams: dict = {}
        self.rows: list[dict] | None = None  # read on the first row (after a resume is known)
        self._columns: list[str] = []  # of the file as written

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str | int:
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return str(self._dir)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self.hparams.update(dict(params) if not isinstance(params, dict) else params)
        self._dir.mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(self._dir / "hparams.yaml", self.hparams)

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.rows is None:
            self.rows = self._kept()
        row = {k: v.item() if hasattr(v, "item") else v for k, v in metrics.items()}
        self.rows.append(row | {"step": len(self.rows) if step is None else step})
        self._write()

    def _kept(self) -> list[dict]:
        path = self._dir / "metrics.csv"
        if self.keep_until_epoch is None or not path.is_file():
            return []
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [
            {k: v for k, v in row.items() if v != ""}
            for row in rows
            if _epoch(row) is not None
            and _epoch(row) <= self.keep_until_epoch
            and not any(k.startswith("test/") and v != "" for k, v in row.items())
        ]

    def _write(self) -> None:
        """Append the new row; write the whole file when it brings a new column."""
        keys = sorted(set(self._columns) | set(self.rows[-1]))
        path = self._dir / "metrics.csv"
        if keys == self._columns:
            with path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=keys).writerow(self.rows[-1])
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for row in self.rows for k in row})
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        self._columns = keys


def _epoch(row: dict) -> int | None:
    try:
        value = float(row.get("epoch", ""))
    except ValueError:
        return None
    return int(value) if math.isfinite(value) else None


def finish_trackers(failed: bool = False, loggers: Iterable[Logger] = ()) -> None:
    """End the tracker runs: each of ``loggers`` is finalized (an MLflow run ends FINISHED, or
    FAILED when the run failed, also outside Lightning's fit and test), then the process's
    wandb run, if one is open, is finished (exit code 1 when the run failed)."""
    for logger in loggers:
        logger.finalize("failed" if failed else "success")
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
