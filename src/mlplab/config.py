"""Run-level config schema and resolvers, registered with Hydra when this module is imported.

The schema types the top-level keys (``seed: int`` …) so ``seed=abc`` or a misspelt key fails
at compose time, before anything runs. Groups (data, model, …) stay free-form: their
constructors validate their own values and name the key when one is wrong.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


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
    ckpt_path: str | None = None
    resume: str | None = None
    test: bool = True


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


OmegaConf.register_new_resolver("run_id", run_id, replace=True)
OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
ConfigStore.instance().store(name="train_schema", node=TrainConfig)
