"""Checkpoints: written atomically, read with errors a user can act on, rebuilt into a model.

A training checkpoint holds the model's hyperparameters (flat primitives), its weights, the
DataModule's hyperparameters and its fitted preprocessing — all loadable with
``torch.load(weights_only=True)`` — plus an ``mlplab`` record (written by ``RunRecord``) naming
the classes that made it and keeping the data state under a key that survives a class rename.
So the checkpoint alone is enough to evaluate, predict or resume.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.model_helpers import is_overridden

from mlplab.errors import ConfigError, first_line, import_target

RECORD_KEY = "mlplab"
RECORD_FORMAT = 1
LEGACY_DATA_KEY = "TabularDataModule"  # checkpoints written before RunRecord existed


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temp file next to the target, fsync, then ``os.replace``.

    Lightning's own writer stages the file in /tmp and *moves* it, which is a copy (not
    atomic) when the run dir is on another file system, as on most clusters: a job killed
    mid-copy leaves a truncated ``last.ckpt`` behind. A rename within one folder is atomic.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class RunRecord(L.Callback):
    """Adds ``checkpoint["mlplab"]``: the module and DataModule classes (so eval/predict rebuild
    the right ones) and the data state under a stable key (Lightning files it under the
    DataModule's class name, which a rename would orphan)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint):
        checkpoint[RECORD_KEY] = run_record(pl_module, trainer.datamodule, trainer.current_epoch)


def run_record(model: L.LightningModule, datamodule, epoch: int) -> dict:
    return {
        "format": RECORD_FORMAT,
        "model_class": _class_path(model),
        "datamodule_class": _class_path(datamodule) if datamodule is not None else None,
        "data_state": datamodule.state_dict() if datamodule is not None else {},
        "epoch": epoch,
    }


def write_model_checkpoint(path, model: L.LightningModule, datamodule, epoch: int, hparams: dict):
    """A checkpoint of ``model`` with ``hparams`` as Lightning's ModelCheckpoint + ``RunRecord``
    write it (the parts ``load_checkpoint`` and ``mlplab-eval`` read), for weights trained
    outside a Trainer of their own (a population member). Written atomically."""
    checkpoint = {
        "epoch": epoch,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": model.state_dict(),
        "hyper_parameters": hparams,
        "datamodule_hyper_parameters": dict(datamodule.hparams),
        RECORD_KEY: run_record(model, datamodule, epoch),
    }
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def _class_path(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def read_checkpoint(path: str | Path, key: str = "ckpt_path", damaged_hint: str = "") -> dict:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True`` on the CPU, or a
    ConfigError saying what is wrong with the file (``damaged_hint``: what to do if damaged)."""
    path = Path(path)
    where = f"{key}={str(path)!r}"
    if not path.exists():
        raise ConfigError(f"{where} is invalid: no such file")
    if not path.is_file():
        raise ConfigError(f"{where} is invalid: not a file")
    hint = f"; {damaged_hint}" if damaged_hint else ""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive, whole or not at all
        raise ConfigError(
            f"{where} is invalid: the file is damaged or truncated, or not a checkpoint at all "
            f"(not a torch zip archive){hint}"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Weights only" in str(err):
            raise ConfigError(
                f"{where} is invalid: it holds Python objects that can't be loaded safely "
                "(torch.load weights_only): not a checkpoint written by mlplab"
            ) from None
        raise ConfigError(
            f"{where} is invalid: the file is damaged ({first_line(err)[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(
            f"{where} is invalid: the file is damaged or truncated, not a complete checkpoint "
            f"({first_line(err)[:200]}){hint}"
        ) from None
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise ConfigError(f"{where} is invalid: not a Lightning checkpoint (no state_dict inside)")
    return raw


def data_state(raw: dict) -> dict | None:
    """The DataModule state stored in a checkpoint (fitted preprocessing), wherever it is."""
    record = raw.get(RECORD_KEY)
    if isinstance(record, dict) and record.get("data_state"):
        return record["data_state"]
    return raw.get(LEGACY_DATA_KEY) or None


def load_checkpoint(path: str | Path) -> tuple[L.LightningModule, L.LightningDataModule]:
    """The model (eval mode, on CPU) and a DataModule carrying the fitted preprocessing."""
    raw = read_checkpoint(path)
    state, data_hparams = data_state(raw), raw.get("datamodule_hyper_parameters")
    if not state or not data_hparams or "hyper_parameters" not in raw:
        raise ConfigError(
            f"ckpt_path={str(path)!r} is invalid: not an mlplab training checkpoint "
            "(no model hyperparameters or fitted preprocessing inside)"
        )
    record = raw.get(RECORD_KEY) or {}
    model_cls = _load_class(record.get("model_class") or "mlplab.models.MLPModule", path)
    data_cls = _load_class(record.get("datamodule_class") or "mlplab.data.TabularDataModule", path)
    model = model_cls(**raw["hyper_parameters"])
    model.load_state_dict(raw["state_dict"])
    model.eval()
    datamodule = data_cls(**data_hparams)
    datamodule.load_state_dict(state)
    return model, datamodule


def has_step(model: L.LightningModule, name: str) -> bool:
    """Whether the module defines ``test_step`` / ``validation_step`` (a brought one may not)."""
    return is_overridden(name, model, L.LightningModule)


def _load_class(name: str, path) -> type:
    """A class a checkpoint names (since moved, renamed, or not on the path here: one line)."""
    where = f"ckpt_path={str(path)!r} is invalid: it was written by class {name}"
    return import_target(name, f"{where}, which can't be imported here")


def check_resumable(raw: dict, path: str, model: L.LightningModule, datamodule) -> None:
    """Refuse to resume from a checkpoint that doesn't fit this run, before training starts.

    Lightning would fail on a shape mismatch with a traceback, and — worse — silently restore
    the checkpoint's optimizer settings (its learning rate) over the ones asked for.
    """
    where = f"ckpt_path={path!r}"
    mine = model.state_dict()
    theirs = raw["state_dict"]
    if set(mine) != set(theirs):
        extra, absent = sorted(set(theirs) - set(mine)), sorted(set(mine) - set(theirs))
        raise ConfigError(
            f"{where} does not fit this model: the checkpoint has weights {extra[:4]} this model "
            f"lacks and lacks {absent[:4]}{_hparams_diff(raw, model)}"
        )
    for name, tensor in mine.items():
        if tuple(theirs[name].shape) != tuple(tensor.shape):
            raise ConfigError(
                f"{where} does not fit this model: {name} has shape {tuple(theirs[name].shape)} "
                f"in the checkpoint but {tuple(tensor.shape)} here{_hparams_diff(raw, model)}"
            )
    old, new = raw.get("hyper_parameters") or {}, dict(model.hparams)
    key = _changed(old, new, ("optimizer", "scheduler"))
    if key:
        raise ConfigError(
            f"{where} was trained with {key}={old[key]} but this run asks for {key}={new[key]}: "
            f"resuming restores the checkpoint's {key} state (its learning rate too), so the "
            f"new {key} would be silently ignored — start a new run (no ckpt_path/resume) "
            "to change it"
        )
    old, new = raw.get("datamodule_hyper_parameters") or {}, dict(datamodule.hparams)
    key = _changed(old, new, ("source", "options"))
    if key:
        raise ConfigError(
            f"{where} was trained on data.{key}={old[key]!r}, this run asks for "
            f"data.{key}={new[key]!r}: resume on the same data, or start a new run"
        )


def _changed(old: dict, new: dict, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` that both hold, with different values."""
    return next((k for k in keys if k in old and k in new and old[k] != new[k]), None)


def _hparams_diff(raw: dict, model: L.LightningModule) -> str:
    old, new = raw.get("hyper_parameters") or {}, dict(model.hparams)
    diff = [f"{k}={old[k]!r} (now {new[k]!r})" for k in sorted(old) if old[k] != new.get(k)]
    return f" (the checkpoint was trained with {', '.join(diff[:3])})" if diff else ""


def check_weights_only(model: L.LightningModule, datamodule) -> None:
    """Fail before training if the checkpoints this run will write could not be loaded back
    with ``torch.load(weights_only=True)`` (e.g. a DictConfig or a module in the
    hyperparameters) — otherwise that surfaces only when the best checkpoint is tested."""
    parts = {"model": dict(getattr(model, "hparams", {}))}
    if datamodule is not None:
        parts["data"] = dict(getattr(datamodule, "hparams", {}))
        parts["data state"] = {"state_dict": datamodule.state_dict()}
    for owner, hparams in parts.items():
        for key, value in hparams.items():
            buffer = io.BytesIO()
            torch.save(value, buffer)
            buffer.seek(0)
            try:
                torch.load(buffer, weights_only=True)
            except pickle.UnpicklingError:
                raise ConfigError(
                    f"{owner}.{key} is a {type(value).__name__}, which a checkpoint can't load "
                    "back safely (torch.load weights_only): pass plain numbers, strings, lists "
                    "and dicts (for a config node, add `_convert_: all` to its config)"
                ) from None
