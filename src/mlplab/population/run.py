"""Train several runs' configs as one population and write each member out as a normal run.

``train_population(cfgs, out_dir)``: the configs must share the architecture, the data shape,
the batch size, the optimizer and scheduler types (they may differ in seed — weights, split
and shuffle —, cross-validation fold, every numeric optimizer and scheduler hyperparameter,
dropout, L1, early-stopping patience and gradient clipping value). Member k:

- starts from the weights ``mlplab-train`` would build for ``cfgs[k]`` (same seeding order);
- trains on its own split and shuffle, with its own hyperparameters (``PopulationModule``);
- ends as ``out_dir/<member>/`` (or ``member_dirs[k]``) with ``config.yaml``,
  ``run_info.json``, ``metrics.json`` and ``checkpoints/best.ckpt`` that ``mlplab-eval`` /
  ``mlplab-predict`` load like any run's; its val metrics are those of its last weights and
  its test metrics those of its best weights — the numbers its stand-alone run reports
  (``population.metrics``: MLPModule's metrics, computed for all members at once).

``out_dir`` gets ``summary.csv`` (one row per member) and ``metrics.csv`` (one row per epoch
and member: train and val metrics), ``checkpoints/population.ckpt`` (after the first epoch,
every 10 s and after the last: ``resume=True`` continues from it, ``population.resume``), and
``learning_curves.png`` and one wandb run for the whole population when the members' config
asks for them (``population.tracking``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from omegaconf import DictConfig

from mlplab.config import portable_data
from mlplab.errors import ConfigError, check
from mlplab.population.batches import PopulationBatches, StackedSplit
from mlplab.population.members import Member, build_members, mean_and_std  # noqa: F401
from mlplab.population.module import PopulationModule
from mlplab.population.resume import (
    PopulationCheckpoint,
    checkpoint_path,
    find_checkpoint,
    fingerprint,
)
from mlplab.population.stacked import StackedMLP
from mlplab.population.tracking import PopulationTracker, closes_trackers
from mlplab.run import build
from mlplab.run.checkpoint import AtomicCheckpointIO
from mlplab.run.heap import heap_frozen
from mlplab.run.provenance import run_environment
from mlplab.run.threads import apply_threads

# Keys members may differ in (prefixes of flattened config keys); anything else splits them.
MEMBER_KEYS = (
    "seed",
    "data.seed",
    "data.cv_fold",  # cross-validation: member k holds out fold k
    "optimizer.",
    "scheduler.",
    "model.dropout",
    "model.l1",
    "callbacks.early_stopping.patience",
    "trainer.gradient_clip_val",
    "paths.",
    "run_name",
    "logger.wandb.name",  # one wandb run per population, named after its dir
)
SHARED = (  # one per population
    "optimizer._target_",
    "scheduler._target_",
    "scheduler.monitor",
    "trainer.gradient_clip_algorithm",
)
NOT_YET: dict[str, str] = {}  # what a population can't do (yet): {key: what}, refused in a line


def _flat(data: dict) -> dict:
    """``{"optimizer.lr": 0.01, ...}``: a config's (``portable_data``) leaves by dotted key."""
    out: dict = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(data, "")
    return out


def _differing(flats: list[dict]) -> list[str]:
    keys = sorted(set().union(*flats))
    return [k for k in keys if any(repr(f.get(k)) != repr(flats[0].get(k)) for f in flats)]


def check_stackable(cfgs: list[DictConfig], flats: list[dict] | None = None) -> list[str]:
    """The keys the members differ in; a ConfigError if one of them can't be stacked.
    ``flats``: the configs' ``_flat`` if already known."""
    check(len(cfgs) >= 1, "population", len(cfgs), "at least one member")
    flats = flats or [_flat(portable_data(c)) for c in cfgs]
    differ = _differing(flats)
    fixed = [k for k in differ if not k.startswith(MEMBER_KEYS) or k in SHARED]
    if fixed:
        raise ConfigError(
            f"population members differ in {fixed[0]}, which can't be stacked: members share "
            "the architecture, data, batch size and optimizer type (train them as separate "
            "populations)"
        )
    flat = flats[0]
    for key, what in NOT_YET.items():
        if flat.get(key):
            raise ConfigError(f"{key}={flat[key]} is not supported in a population yet ({what})")
    trainer = cfgs[0].trainer
    devices = trainer.get("devices", 1)
    check(
        devices in (1, "auto") and "ddp" not in str(trainer.get("strategy", "auto")),
        "trainer.devices",
        devices,
        "one device for a population (its members already run in parallel)",
    )
    return differ


def _stack(tensors: list[torch.Tensor], what: str) -> torch.Tensor:
    if all(t is tensors[0] for t in tensors):  # one shared split: a view, no copies
        return tensors[0].expand(len(tensors), *tensors[0].shape)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ConfigError(f"population members' {what} splits differ in size {sorted(shapes)}")
    return torch.stack(tensors)


def _member_options(cfg: DictConfig) -> dict:
    return {k: v for k, v in build.container(cfg.optimizer).items() if k != "_target_"}


def _split(datamodules, name: str, batch_size: int) -> StackedSplit:
    tensors = [dm.tensors[name] for dm in datamodules]
    return StackedSplit(
        _stack([t[0] for t in tensors], name), _stack([t[1] for t in tensors], name), batch_size
    )


def resume_point(cfgs: list[DictConfig], out_dir: str | Path) -> tuple[Path, dict] | None:
    """``find_checkpoint`` for these configs: what ``train_population(..., resume=True)``
    continues from, checked (one ConfigError line) before the caller writes anything."""
    return find_checkpoint(out_dir, [_flat(portable_data(c)) for c in cfgs])


@closes_trackers
@heap_frozen()  # a 64-member population would set off full collections of torch's objects
def train_population(
    cfgs: list[DictConfig],
    out_dir: str | Path,
    member_dirs: list[Path] | None = None,
    on_epoch: Callable[[int, list[dict]], Iterable[int]] | None = None,
    resume: bool = False,
    tracker: PopulationTracker | None = None,
    before_fit: Callable[[], None] | None = None,
    portable: list[dict] | None = None,
) -> pd.DataFrame:
    """Train ``cfgs`` as one population; returns the summary (one row per member).

    Member k is written into ``member_dirs[k]`` (default ``out_dir/member_<k>``); ``on_epoch``
    is ``PopulationModule``'s hook (report each epoch's metrics, prune members). ``resume``:
    continue from ``out_dir``'s population checkpoint when there is one (a ConfigError before
    anything is written if it is damaged or of other members), else start fresh. ``tracker``:
    the figure and wandb run (``population.tracking``; default: this population's own).
    ``before_fit``: called once the members are built and checked, before training (the
    caller's own files, e.g. the run info of ``seeds=N``: a bad member value writes nothing).
    ``portable``: ``portable_data`` of each config, when the caller has resolved them already."""
    out_dir = Path(out_dir)
    dirs = member_dirs or [out_dir / f"member_{k:03d}" for k in range(len(cfgs))]
    check(len(dirs) == len(cfgs), "member_dirs", len(dirs), f"one dir per member ({len(cfgs)})")
    portable = portable or [portable_data(c) for c in cfgs]  # resolved once: config, rows
    flats = [_flat(p) for p in portable]
    differ = check_stackable(cfgs, flats)
    start = find_checkpoint(out_dir, flats) if resume else None
    datamodules, nets, hparams, template = build_members(cfgs)
    check(
        all(dm.class_weights == datamodules[0].class_weights for dm in datamodules),
        "data.balance_classes",
        True,
        "the same class weights for every member (members' splits differ in class counts)",
    )
    first, hp = cfgs[0], hparams[0]
    tracker = tracker or PopulationTracker(cfgs, out_dir, flats)
    train = [dm.tensors["train"] for dm in datamodules]
    x, y = _stack([t[0] for t in train], "train"), _stack([t[1] for t in train], "train")
    batch_size = datamodules[0].hparams.batch_size
    batch_size = x.shape[1] if batch_size == "full" else int(batch_size)
    stopping = [(c.get("callbacks") or {}).get("early_stopping") for c in cfgs]
    module = PopulationModule(
        StackedMLP.from_members(nets),
        x,
        y,
        task=datamodules[0].task,
        optimizer=first.optimizer._target_,
        members=[_member_options(c) for c in cfgs],
        l1=[float(c.model.get("l1", 0.0)) for c in cfgs],
        class_weights=datamodules[0].class_weights,
        patience=[s.patience if s else None for s in stopping],
        min_delta=float(stopping[0].get("min_delta", 0.0)) if stopping[0] else 0.0,
        num_classes=int(hp["out_features"]),
        target_scale=(  # per member: each scales by its own training split
            [float(h.get("target_mean") or 0.0) for h in hparams],
            [float(h.get("target_std") or 1.0) for h in hparams],
        ),
        on_epoch=tracker.on_epoch(on_epoch),
        scheduler=(first.get("scheduler") or {}).get("_target_"),
        schedules=[build.container(c.scheduler) if c.get("scheduler") else {} for c in cfgs],
        monitor=(first.get("scheduler") or {}).get("monitor", "val/loss"),
        clip=(
            [float(c.trainer.get("gradient_clip_val") or 0.0) for c in cfgs],
            first.trainer.get("gradient_clip_algorithm") or "norm",
        ),
    )
    # threads= as a stand-alone run chooses them, for the whole population's step.
    apply_threads(
        first.get("threads", "auto"), sum(p.numel() for p in module.net.parameters()), batch_size
    )
    trainer = L.Trainer(
        accelerator=first.trainer.get("accelerator", "auto"),
        devices=1,
        max_epochs=first.trainer.max_epochs,
        check_val_every_n_epoch=first.trainer.get("check_val_every_n_epoch", 1),
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[PopulationCheckpoint(checkpoint_path(out_dir), [fingerprint(f) for f in flats])],
        plugins=[AtomicCheckpointIO()],  # a kill mid-write leaves the previous checkpoint whole
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    eval_size = int(datamodules[0].hparams.eval_batch_size)
    seeds = [int(dm.hparams.seed) for dm in datamodules]
    if start is not None:
        print(f"population: resuming from {start[0]} (after epoch {start[1]['epoch']})", flush=True)
    if before_fit is not None:  # every member is built and checked: nothing half-written
        before_fit()
    trainer.fit(
        module,
        train_dataloaders=PopulationBatches(x.shape[1], batch_size, seeds),
        val_dataloaders=_split(datamodules, "val", eval_size),
        ckpt_path=None if start is None else str(start[0]),
        weights_only=True,
    )
    # What a stand-alone run reports: val of its last weights, test of its best checkpoint.
    final = module.evaluate(_split(datamodules, "val", eval_size), "val")
    module.use_best_weights()
    if first.get("test", True):
        final |= module.evaluate(_split(datamodules, "test", eval_size), "test")
    environment = run_environment()
    rows = []
    for k, (cfg, hp, dm) in enumerate(zip(cfgs, hparams, datamodules, strict=True)):
        metrics = {name: float(values[k]) for name, values in final.items()}
        member = Member(
            k, cfg, template, hp, dm, Path(dirs[k]), flats[k], portable[k], not member_dirs
        )
        rows.append(member.write(module, metrics, differ, environment))
    summary = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_dir / "summary.csv", index=False)
    pd.DataFrame(module.history).to_csv(out_dir / "metrics.csv", index=False)
    tracker.done(module.history, summary)
    return summary
