"""Train several runs' configs as one population and write each member out as a normal run.

``train_population(cfgs, out_dir)``: the configs must share the architecture, the data shape,
the batch size and the optimizer type (they may differ in seed — weights, split and shuffle —,
every numeric optimizer hyperparameter, dropout, L1 and early-stopping patience). Member k:

- starts from the weights ``mlplab-train`` would build for ``cfgs[k]`` (same seeding order);
- trains on its own split and shuffle, with its own hyperparameters (``PopulationModule``);
- ends as ``out_dir/<member>/`` with ``config.yaml``, ``run_info.json``, ``metrics.json`` and
  ``checkpoints/best.ckpt`` that ``mlplab-eval`` / ``mlplab-predict`` load like any run's;
  its val metrics are those of its last weights and its test metrics those of its best
  checkpoint, computed by ``MLPModule`` itself — the stand-alone run's numbers.

``out_dir`` gets ``summary.csv`` (one row per member), ``metrics.csv`` (epoch, member, losses).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from mlplab.errors import ConfigError, check
from mlplab.population.module import DIVERGED, PopulationBatches, PopulationModule, StackedSplit
from mlplab.population.stacked import StackedMLP
from mlplab.run import build
from mlplab.run.checkpoint import write_model_checkpoint
from mlplab.run.provenance import write_run_info

# Keys members may differ in (prefixes of flattened config keys); anything else splits them.
MEMBER_KEYS = (
    "seed",
    "data.seed",
    "optimizer.",
    "model.dropout",
    "model.l1",
    "callbacks.early_stopping.patience",
    "paths.",
    "run_name",
)
NOT_YET = {  # what a population can't do (yet): one line instead of a silent difference
    "scheduler._target_": "learning-rate schedulers",
    "trainer.gradient_clip_val": "gradient clipping",
}


def _flat(cfg: DictConfig) -> dict:
    return pd.json_normalize(OmegaConf.to_container(cfg, resolve=True), sep=".").iloc[0].to_dict()


def _differing(cfgs: list[DictConfig]) -> list[str]:
    flats = [_flat(c) for c in cfgs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if any(repr(f.get(k)) != repr(flats[0].get(k)) for f in flats)]


def check_stackable(cfgs: list[DictConfig]) -> list[str]:
    """The keys the members differ in; a ConfigError if one of them can't be stacked."""
    check(len(cfgs) >= 1, "population", len(cfgs), "at least one member")
    differ = _differing(cfgs)
    fixed = [k for k in differ if not k.startswith(MEMBER_KEYS) or k == "optimizer._target_"]
    if fixed:
        raise ConfigError(
            f"population members differ in {fixed[0]}, which can't be stacked: members share "
            "the architecture, data, batch size and optimizer type (train them as separate "
            "populations)"
        )
    flat = _flat(cfgs[0])
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


def _build_members(cfgs: list[DictConfig]):
    """(datamodules, models): built as ``mlplab.train.train`` builds them, seed first."""
    cache: dict[str, L.LightningDataModule] = {}
    datamodules, models = [], []
    for cfg in cfgs:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True)
        if key not in cache:
            cache[key] = build.build_datamodule(cfg)
            cache[key].setup("fit")
        datamodules.append(cache[key])
        models.append(build.build_model(cfg, cache[key]))
    return datamodules, models


def _member_options(cfg: DictConfig) -> dict:
    return {k: v for k, v in build.container(cfg.optimizer).items() if k != "_target_"}


def _final_metrics(cfg, model, datamodule) -> dict:
    trainer = L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    run = {"val": trainer.validate, "test": trainer.test}
    return lambda split: {
        k: float(v) for k, v in run[split](model, datamodule=datamodule, verbose=False)[0].items()
    }


def train_population(cfgs: list[DictConfig], out_dir: str | Path) -> pd.DataFrame:
    """Train ``cfgs`` as one population; returns the summary (one row per member)."""
    out_dir = Path(out_dir)
    differ = check_stackable(cfgs)
    datamodules, models = _build_members(cfgs)
    first = cfgs[0]
    net = StackedMLP.from_members([m.net for m in models])
    train = [dm.tensors["train"] for dm in datamodules]
    val = [dm.tensors["val"] for dm in datamodules]
    x, y = _stack([t[0] for t in train], "train"), _stack([t[1] for t in train], "train")
    batch_size = datamodules[0].hparams.batch_size
    batch_size = x.shape[1] if batch_size == "full" else int(batch_size)
    stopping = [(c.get("callbacks") or {}).get("early_stopping") for c in cfgs]
    module = PopulationModule(
        net,
        x,
        y,
        task=datamodules[0].task,
        optimizer=first.optimizer._target_,
        members=[_member_options(c) for c in cfgs],
        l1=[float(c.model.get("l1", 0.0)) for c in cfgs],
        class_weights=datamodules[0].class_weights,
        patience=[s.patience if s else None for s in stopping],
        min_delta=float(stopping[0].get("min_delta", 0.0)) if stopping[0] else 0.0,
    )
    check(
        all(dm.class_weights == datamodules[0].class_weights for dm in datamodules),
        "data.balance_classes",
        True,
        "the same class weights for every member (members' splits differ in class counts)",
    )
    trainer = L.Trainer(
        accelerator=first.trainer.get("accelerator", "auto"),
        devices=1,
        max_epochs=first.trainer.max_epochs,
        check_val_every_n_epoch=first.trainer.get("check_val_every_n_epoch", 1),
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    eval_size = int(datamodules[0].hparams.eval_batch_size)
    val_split = StackedSplit(
        _stack([t[0] for t in val], "val"), _stack([t[1] for t in val], "val"), eval_size
    )
    seeds = [int(dm.hparams.seed) for dm in datamodules]
    trainer.fit(
        module,
        train_dataloaders=PopulationBatches(x.shape[1], batch_size, seeds),
        val_dataloaders=val_split,
    )
    rows = []
    for k, (cfg, model, dm) in enumerate(zip(cfgs, models, datamodules, strict=True)):
        rows.append(_write_member(k, cfg, model, dm, module, out_dir, differ))
    summary = pd.DataFrame(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_dir / "summary.csv", index=False)
    pd.DataFrame(module.history).to_csv(out_dir / "metrics.csv", index=False)
    return summary


def _write_member(k, cfg, model, dm, module, out_dir: Path, differ: list[str]) -> dict:
    name = f"member_{k:03d}"
    run_dir = out_dir / name
    cfg = cfg.copy()
    OmegaConf.update(cfg, "paths.output_dir", str(run_dir), force_add=True)
    OmegaConf.update(cfg, "run_name", name, force_add=True)
    write_run_info(cfg, run_dir)
    flat = _flat(cfg)
    row = {"member": k, "run_dir": str(run_dir), "status": module.status[k]}
    row |= {key: flat.get(key) for key in differ if not key.startswith(("paths.", "run_name"))}
    row |= {"best_epoch": module.best_epoch[k], "stopped_epoch": module.stopped_epoch[k]}
    if module.status[k] == DIVERGED or module.best_epoch[k] is None:
        reason = "training diverged: a non-finite loss; try a smaller learning rate"
        (run_dir / "error.txt").write_text(f"{reason}\n")
        return row | {"error": reason}
    score = _final_metrics(cfg, model, dm)
    model.net.load_state_dict(module.member_weights(k, best=False))
    history = [h for h in module.history if h["member"] == k]
    metrics = {"train/loss": history[-1]["train/loss"], **score("val")}
    model.net.load_state_dict(module.member_weights(k, best=True))
    write_model_checkpoint(run_dir / "checkpoints" / "best.ckpt", model, dm, module.best_epoch[k])
    if cfg.get("test", True):
        metrics |= score("test")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return row | metrics


def mean_and_std(summary: pd.DataFrame) -> dict[str, float]:
    """``metric`` → mean over the members that finished, ``metric.std`` → their spread."""
    done = summary[summary.status != DIVERGED]
    metrics = [c for c in summary.columns if "/" in c and c != "run_dir"]
    out = {}
    for key in metrics:
        values = done[key].astype(float)
        out[key] = float(values.mean())
        out[f"{key}.std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return out
