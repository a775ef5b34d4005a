"""A population's own checkpoint, so that ``resume=auto`` continues a killed population.

``<out dir>/checkpoints/population.ckpt``, written atomically by Lightning's own checkpointing:
the stacked weights, optimizer and scheduler state, epoch and step, the ``PopulationModule``'s
per-member state and the members' configs — what they learn from, so a resume with other
members is refused (``find_checkpoint``) instead of mixing two populations. It loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from mlplab.config import flatten
from mlplab.errors import ConfigError
from mlplab.run.checkpoint import read_checkpoint
from mlplab.run.rundir import POPULATION_CHECKPOINT as CHECKPOINT
from mlplab.run.rundir import population_hint

RUN_KEY = "population_run"  # the members' configs, written by PopulationCheckpoint
FORMAT = 2
CHECKPOINT_EVERY_S = 10.0  # PopulationCheckpoint's interval between saves
# What a member's weights depend on (keys of the flattened config). The rest — paths, run
# name, loggers, threads, max_epochs (training longer is a resume) — may change on a resume.
TRAINED = ("data.", "model.", "optimizer.", "scheduler.", "callbacks.early_stopping.")
TRAINED_EXACT = (
    "seed",
    "callbacks.early_stopping",
    "trainer.check_val_every_n_epoch",
    "trainer.gradient_clip_val",  # a member's own (members.py), as a run's is in its hparams
    "trainer.gradient_clip_algorithm",
)


def fingerprint(config: dict) -> dict[str, str]:
    """The keys of a member's config (plain data) that its training depends on, as ``repr``s."""
    flat = flatten(config)
    return {k: repr(v) for k, v in flat.items() if k in TRAINED_EXACT or k.startswith(TRAINED)}


class PopulationCheckpoint(Checkpoint):
    """Save the population into ``path`` at the end of an epoch (Lightning calls a
    ``Checkpoint``'s ``on_train_epoch_end`` after the module's, its scheduler step included):
    after the first epoch, when ``CHECKPOINT_EVERY_S`` seconds have passed since the last save,
    and after the last. A kill loses at most that much training, and small models don't spend
    their time on checkpoints. ``members``: the members' ``fingerprint``s."""

    def __init__(self, path: Path, members: list[dict[str, str]]) -> None:
        # One string: pickling K × ~50 small strings at every epoch costs more than the rest.
        self.path, self.members = Path(path), json.dumps(members)
        self.every_s = CHECKPOINT_EVERY_S
        self.saved_at: float | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        due = self.saved_at is None or time.monotonic() - self.saved_at >= self.every_s
        if last or due:
            trainer.save_checkpoint(self.path, weights_only=False)  # AtomicCheckpointIO: atomic
            self.saved_at = time.monotonic()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[RUN_KEY] = {"format": FORMAT, "members": self.members}


def find_checkpoint(
    out_dir: str | Path, configs: list[dict], first_of: bool = False
) -> tuple[Path, dict] | None:
    """The checkpoint in ``out_dir`` to continue the population of ``configs`` (the members'
    configs, plain data) from, and its contents; None when there is none (start fresh).
    ``first_of``: the checkpoint's members are the first of ``configs`` (a chunk's).

    Raises:
        ConfigError: one line naming the file: damaged, not a population checkpoint, or of
            other members (their number, or the keys whose values differ).
    """
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        return None
    key = "resume=auto: population checkpoint"
    raw = read_checkpoint(path, key=key, damaged_hint=population_hint(path))
    where = f"resume=auto: {path}"
    run = raw.get(RUN_KEY)
    if not isinstance(run, dict) or "population" not in raw or run.get("format") != FORMAT:
        raise ConfigError(
            f"{where} is not a population checkpoint mlplab can continue (no population state "
            "of this format inside): move it away to train the population from the start"
        )
    saved = json.loads(run["members"])
    configs = configs[: len(saved)] if first_of else configs
    members = [fingerprint(c) for c in configs]
    fresh = "resume with the same members, or start a new run (another run_name)"
    if len(saved) != len(members):
        raise ConfigError(
            f"{where} holds a population of {len(saved)} members, this run has {len(members)}: "
            f"{fresh}"
        )
    for k, (old, new) in enumerate(zip(saved, members, strict=True)):
        names = [n for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
        if names:
            diff = ", ".join(
                f"{n}={old.get(n, '(unset)')} (now {new.get(n, '(unset)')})" for n in names[:3]
            )
            raise ConfigError(
                f"{where}: member {k} was trained with {diff}: resuming would silently keep "
                f"what it learnt with those; {fresh}"
            )
    return path, raw


def find_chunk_checkpoints(out_dir: str | Path, configs: list[dict]) -> tuple[Path, dict] | None:
    """``find_checkpoint`` for a population that may have trained in chunks: each
    ``out_dir/chunk_<i>`` checkpoint checked against the next of ``configs`` (a chunk without
    one had not started); the first checkpoint found, or None (the same ConfigErrors)."""
    out_dir = Path(out_dir)
    chunks = sorted(out_dir.glob("chunk_*"), key=lambda p: int(p.name.split("_")[1]))
    if not chunks:
        return find_checkpoint(out_dir, configs)
    first, offset = None, 0
    for home in chunks:
        found = find_checkpoint(home, configs[offset:], first_of=True)
        if found is None:
            break
        first = first or found
        offset += len(json.loads(found[1][RUN_KEY]["members"]))
    return first
