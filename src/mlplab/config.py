"""Run-level config schema, resolvers, and the one way to compose a config outside ``@hydra.main``.

The schema types the top-level keys (``seed: int`` …) so ``seed=abc`` or a misspelt key fails
at compose time, before anything runs. Groups (data, model, …) stay free-form: their
constructors validate their own values and name the key when one is wrong.

``compose_config`` is what tests, scripts, the sweep and the command-line checks use to build
exactly the config ``mlplab-train`` would; ``portable_yaml`` writes a config that re-runs into
a new run dir. Importing this module is cheap (no torch, no Lightning).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

# The configs ship inside the package, so a wheel or a git-URL install has them too
# (``conf/`` at the top of the repository is a link to this folder).
CONF_DIR = str(resources.files("mlplab") / "conf")
# What identifies one run rather than describes it: a saved config keeps these as
# interpolations, so running it again makes a new run dir instead of writing into the old one.
RUN_IDENTITY = {
    "paths.output_dir": "${hydra:runtime.output_dir}",
    "run_name": "${run_id:}",
}


@dataclass
class TrainConfig:
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None
    callbacks: Any = None
    logger: Any = None
    trainer: Any = MISSING
    paths: Any = MISSING
    task_name: str = "train"
    run_name: str = MISSING
    seed: int = 42
    seeds: Any = None  # N: train seeds seed, seed+1, ..., seed+N-1 as one population
    threads: Any = "auto"
    print_config: bool = True
    ckpt_path: str | None = None
    resume: str | None = None
    test: bool = True


@dataclass
class SweepConfig:
    """``conf/sweep.yaml``: the arguments of ``mlplab-sweep`` (see ``mlplab-sweep --help``)."""

    hparams_search: Any = None  # the search: a conf/hparams_search option, or a yaml path
    n_trials: int | None = None
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    sweep_dir: str | None = None
    launcher: str = "processes"
    slurm: dict[str, Any] = field(default_factory=dict)
    worker: int | None = None  # set on the processes `workers=N` starts


def run_id() -> str:
    """``YYYY-mm-dd_HH-MM-SS_<6 hex>``: unique even for runs started in the same second.

    Fixed for the life of the process (and its DDP children, through the environment), so
    every interpolation of it in one run agrees.
    """
    rid = os.environ.get("MLPLAB_RUN_ID")
    if not rid:
        rid = f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"
        os.environ["MLPLAB_RUN_ID"] = rid
    return rid


def wandb_offline() -> bool:
    """wandb stays offline (no network, no prompt) unless ``WANDB_MODE=online``."""
    return os.environ.get("WANDB_MODE", "offline") != "online"


def compose_config(
    config_name: str = "train",
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    return_hydra_config: bool = False,
) -> DictConfig:
    """The config ``mlplab-train OVERRIDES`` would run, composed with Hydra's compose API.

    Args:
        config_name: primary config (``train``, ``eval``, ``predict``, or one in ``config_dir``).
        overrides: command-line overrides, e.g. ``["data=moons", "optimizer.lr=0.01"]``.
        config_dir: an extra config folder searched first (``--config-dir``), e.g. a run dir
            holding a saved ``config.yaml``.
        return_hydra_config: keep the ``hydra`` node (run dir, launcher, ...).
    """
    primary = str(Path(config_dir).resolve()) if config_dir else CONF_DIR
    extra = [f"hydra.searchpath=[file://{CONF_DIR}]"] if config_dir else []
    with initialize_config_dir(primary, version_base="1.3"):
        return compose(
            config_name,
            overrides=[*overrides, *extra],
            return_hydra_config=return_hydra_config,
        )


# A run started by a script, a test or a notebook: CSV logging only, no progress bar, CPU.
QUIET = (
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)


def compose_run(output_dir: str | Path, *overrides: str, quiet: bool = True) -> DictConfig:
    """The train config of a run writing into ``output_dir`` (``QUIET`` first unless
    ``quiet=False``, then ``overrides``): what scripts and tests pass to ``train(cfg)``."""
    head = [f"paths.output_dir={output_dir}", *(QUIET if quiet else ())]
    return compose_config("train", [*head, *overrides])


def portable_yaml(cfg: DictConfig, header: str = "") -> str:
    """``cfg`` resolved, as a primary config that re-runs with
    ``mlplab-train --config-dir <its folder> --config-name <its name>``.

    Everything is resolved (so later edits of ``conf/`` can't change what it means) except
    ``RUN_IDENTITY``: run dir and run name stay interpolations, so a re-run gets its own dir.
    """
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if "hydra" in cfg:
        del cfg["hydra"]
    # Resolve with placeholders for the identity keys, then turn every use of a placeholder
    # back into a reference to its key (callbacks' dirpath → ${paths.output_dir}/checkpoints).
    sentinels = {key: f"__mlplab_keep_{i}__" for i, key in enumerate(RUN_IDENTITY)}
    for key, sentinel in sentinels.items():
        OmegaConf.update(cfg, key, sentinel, force_add=True)
    text = OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    for key, sentinel in sentinels.items():
        text = text.replace(sentinel, "${" + key + "}")
    portable = OmegaConf.create(text)
    for key, value in RUN_IDENTITY.items():
        OmegaConf.update(portable, key, value)
    defaults = "defaults:\n  - train_schema\n  - hydra: default\n  - _self_\n\n"
    return header + defaults + OmegaConf.to_yaml(portable)


OmegaConf.register_new_resolver("run_id", run_id, replace=True)
OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
ConfigStore.instance().store(name="train_schema", node=TrainConfig)
ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)
