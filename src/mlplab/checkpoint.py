"""Rebuild a trained model and its data preprocessing from one checkpoint file.

A checkpoint holds the model's hyperparameters (flat primitives), its weights, the
DataModule's hyperparameters and its fitted preprocessing state — all loadable with
``torch.load(weights_only=True)`` — so it alone is enough to evaluate or predict.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mlplab.data import TabularDataModule
from mlplab.errors import ConfigError, check
from mlplab.models import MLPModule


def load_checkpoint(path: str | Path) -> tuple[MLPModule, TabularDataModule]:
    """The model (eval mode, on CPU) and a DataModule carrying the fitted preprocessor."""
    path = Path(path)
    check(path.is_file(), "ckpt_path", str(path), "no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — truncated file, not a torch file, pickled objects
        raise ConfigError(f"ckpt_path={str(path)!r} is invalid: can't be loaded ({err})") from err
    state, data_hparams = raw.get("TabularDataModule"), raw.get("datamodule_hyper_parameters")
    if not state or not data_hparams or "hyper_parameters" not in raw:
        raise ConfigError(
            f"ckpt_path={str(path)!r} is invalid: not an mlplab training checkpoint "
            "(no model hyperparameters or fitted preprocessing inside)"
        )
    model = MLPModule(**raw["hyper_parameters"])
    model.load_state_dict(raw["state_dict"])
    model.eval()
    datamodule = TabularDataModule(**data_hparams)
    datamodule.load_state_dict(state)
    return model, datamodule
