"""A population's members as runs: built as ``mlplab.train.train`` builds them, written out as
the run dir a stand-alone ``mlplab-train`` leaves (config, run info, best checkpoint,
metrics), and summarised (``mean_and_std``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from mlplab.data.sources import shared_sources
from mlplab.errors import check
from mlplab.models.mlp import MLP
from mlplab.models.module import MLPModule
from mlplab.models.optimization import check_optimization
from mlplab.population.module import DIVERGED, PopulationModule
from mlplab.run import build
from mlplab.run.checkpoint import write_model_checkpoint
from mlplab.run.provenance import write_run_info


def build_members(cfgs: list[DictConfig]):
    with shared_sources():  # one table for all members' splits
        return _build_members(cfgs)


def _build_members(cfgs: list[DictConfig]):
    """(datamodules, nets, hparams): what ``mlplab.train.train`` builds, seed first.

    Member 0's model is built by ``build_model`` (the template: its class, its checks); the
    others get the same hyperparameters with their own values and a net initialised from
    their own seed, exactly as their ``MLPModule`` would (its net is the only thing in its
    constructor that draws random numbers), without building K LightningModules.
    """
    cache: dict[str, L.LightningDataModule] = {}
    datamodules, nets, hparams = [], [], []
    template = None
    for i, cfg in enumerate(cfgs):
        _seed(cfg.seed, last=i == len(cfgs) - 1)
        data = build.container(cfg.data)
        key = json.dumps(data, sort_keys=True)
        if key not in cache:
            cache[key] = _datamodule(cfg, data, datamodules[0] if datamodules else None)
            cache[key].setup("fit")
        dm = cache[key]
        datamodules.append(dm)
        if template is None:
            template = build.build_model(cfg, dm)
            check(
                type(template) is MLPModule,
                "model._target_",
                cfg.model._target_,
                "mlplab.models.MLPModule for a population (its members are stacked MLPs)",
            )
            nets.append(template.net)
            hparams.append(dict(template.hparams))
            continue
        own = {k: v for k, v in build.container(cfg.model).items() if not k.startswith("_")}
        hp = (
            dict(template.hparams)
            | build.accepted(MLPModule, own | build.model_arguments(cfg, dm))[0]
        )
        check(hp["l1"] >= 0, "model.l1", hp["l1"], "must be >= 0")
        check_optimization(hp["optimizer"], hp["scheduler"])
        nets.append(
            MLP(
                hp["in_features"],
                hp["hidden_sizes"] or [],
                hp["out_features"],
                hp["activation"],
                hp["dropout"],
                hp["layer"],
            )
        )
        hparams.append(hp)
    return datamodules, nets, hparams, template


def _seed(seed, last: bool) -> None:
    """Seed member building as ``mlplab.train`` seeds a run (``seed_everything``). A member's
    build draws only from torch's CPU generator (its net's init), so the others seed just that
    (``torch.manual_seed`` costs ~0.25 ms, seeding CUDA's too); the last member seeds
    everything, which leaves the process's random state as a full seeding of each would."""
    plain = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32
    if last or not plain:  # seed_everything's own error for a seed out of its bounds
        L.seed_everything(seed, workers=True, verbose=False)
    else:
        torch.default_generator.manual_seed(seed)


def _datamodule(cfg: DictConfig, data: dict, like: L.LightningDataModule | None):
    """``build_datamodule(cfg)``; a member whose data config has ``like``'s class and plain
    arguments is constructed directly (Hydra's instantiate costs ~9 ms a member)."""
    target, _ = data.pop("_target_", None), data.pop("_convert_", None)  # plain data already
    plain = like is not None and target is not None and get_class(target) is type(like)
    if plain and not any(str(key).startswith("_") for key in _keys(data)):
        try:
            return type(like)(**data)
        except TypeError:
            pass  # Hydra's instantiate says what is wrong, as for a stand-alone run
    return build.build_datamodule(cfg)


def _keys(node) -> list:
    if isinstance(node, dict):
        return [*node, *(k for v in node.values() for k in _keys(v))]
    if isinstance(node, list):
        return [k for v in node for k in _keys(v)]
    return []


@dataclass
class Member:
    k: int
    cfg: DictConfig
    template: MLPModule  # member 0's module: written with member k's weights and hparams
    hparams: dict
    datamodule: L.LightningDataModule
    run_dir: Path
    flat: dict
    portable: dict
    named: bool  # run_name = the member dir's name

    def write(self, module: PopulationModule, final: dict, differ: list[str], env: dict) -> dict:
        """The member's run dir (config, run info, best checkpoint, metrics); its summary row."""
        k, run_dir, cfg = self.k, self.run_dir, self.cfg
        # member_XXX in the population's dir; a given dir keeps the run's name
        name = run_dir.name if self.named else cfg.get("run_name")
        write_run_info(cfg, run_dir, environment=env, data=self.portable, run_name=name)
        flat = self.flat
        row = {"member": k, "run_dir": str(run_dir), "status": module.status[k]}
        row |= {key: flat.get(key) for key in differ if not key.startswith(("paths.", "run_name"))}
        row |= {"best_epoch": module.best_epoch[k], "stopped_epoch": module.stopped_epoch[k]}
        if (
            module.best_epoch[k] is not None
        ):  # the best weights, also of a member that diverged later
            module.net.copy_member(k, self.template.net, module.best_weights(k))
            path = run_dir / "checkpoints" / "best.ckpt"
            epoch = module.best_epoch[k]
            write_model_checkpoint(path, self.template, self.datamodule, epoch, self.hparams)
        if module.status[k] == DIVERGED or module.best_epoch[k] is None:
            reason = (
                f"training diverged: a non-finite loss at epoch {module.stopped_epoch[k]}; "
                f"try a smaller learning rate than optimizer.lr={cfg.optimizer.get('lr')}"
            )
            (run_dir / "error.txt").write_text(f"{reason}\n")
            return row | {"error": reason}
        last = next(h for h in reversed(module.history) if h["member"] == k)  # its last epoch
        train = {key: v for key, v in last.items() if key.startswith("train/")}
        metrics = train | final
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
