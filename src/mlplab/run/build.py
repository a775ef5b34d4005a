"""Config → objects for one training run: DataModule, model, callbacks, loggers, trainer, and
the checkpoint to resume from. ``mlplab.run.fit`` calls these in order, a population
(``mlplab.population.engine``) the same ones with its members' configs (plain data: a
``DictConfig`` or a dict, read alike)."""

from __future__ import annotations

import copy
import inspect
import os
import secrets
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks import ProgressBar as ProgressBarBase
from omegaconf import DictConfig, OmegaConf

from mlplab.config import CONF_DIR
from mlplab.errors import ConfigError, check, import_target, user_error
from mlplab.models.grouped import QuietStep
from mlplab.run.checkpoint import AtomicCheckpointIO, RunRecord, read_checkpoint
from mlplab.run.progress import ProgressBar
from mlplab.run.rundir import damaged_hint
from mlplab.run.trackers import CSVLogger
from mlplab.run.values import check_trainer


def container(node) -> dict | None:
    """A config node as plain data (resolved)."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return copy.deepcopy(node)


def instantiate_checked(node, **kwargs):
    """``hydra.utils.instantiate``, but a ConfigError from a constructor comes out as itself
    (Hydra wraps it in an InstantiationException with a traceback-sized message)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = user_error(err)
        if cause is None:
            raise
        raise cause from None


def build_datamodule(cfg) -> L.LightningDataModule:
    # _convert_=all whatever the data config says: a DictConfig among the hyperparameters
    # would make every checkpoint of the run unloadable with weights_only.
    return instantiate_checked(cfg["data"], _convert_="all")


def model_arguments(cfg, datamodule) -> dict:
    """What only the data and the other config groups know, for the model's constructor."""
    pre = datamodule.preprocessor
    trainer_cfg = cfg["trainer"]
    return {
        "in_features": datamodule.in_features,
        "out_features": datamodule.out_features,
        "task": datamodule.task,
        "optimizer": container(cfg["optimizer"]),
        "scheduler": container(cfg.get("scheduler")) or None,
        # Clipping is configured on the trainer, as in any Lightning project; a module with
        # manual optimization does it itself (Lightning refuses Trainer(gradient_clip_val)).
        "gradient_clip_val": float(trainer_cfg.get("gradient_clip_val") or 0.0),
        "gradient_clip_algorithm": trainer_cfg.get("gradient_clip_algorithm") or "norm",
        "target_mean": pre.target_mean,
        "target_std": pre.target_std,
        "class_weights": datamodule.class_weights,
    }


def accepted(cls: type, arguments: dict) -> tuple[dict, list[str]]:
    """The arguments ``cls(...)`` takes (all of them with ``**kwargs``), and the rest."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(arguments), []
    names = {p.name for p in params}
    rest = [k for k in arguments if k not in names]
    return {k: v for k, v in arguments.items() if k in names}, rest


def model_class(cfg) -> type:
    target = cfg["model"].get("_target_")
    check(isinstance(target, str) and target, "model._target_", target, "a LightningModule class")
    cls = import_target(target, f"model._target_={target!r} can't be imported")
    ok = isinstance(cls, type) and issubclass(cls, L.LightningModule)
    check(ok, "model._target_", target, "a LightningModule subclass")
    return cls


def build_model(cfg, datamodule) -> L.LightningModule:
    """The model config plus what only the data knows (sizes, task, target scaling), as far
    as the constructor takes them, so any LightningModule can be used. ``model._target_=...``
    keeps the rest of the model group: keys the class doesn't take are left out with a note
    if they are that group's own values, else a ConfigError."""
    cls = model_class(cfg)
    kwargs, _ = accepted(cls, model_arguments(cfg, datamodule))
    node = cfg["model"]
    own = {k: v for k, v in container(node).items() if not k.startswith("_")}
    _, foreign = accepted(cls, own)
    if foreign:
        choice, inherited = _model_group(cfg)
        for key in foreign:
            check(
                key in inherited and inherited[key] == own[key],
                f"model.{key}",
                own[key],
                f"not an argument of {node['_target_']}; it takes "
                f"{', '.join(inspect.signature(cls.__init__).parameters) or 'none'}",
            )
        print(
            f"note: {cls.__name__} takes no {', '.join(foreign)}: left out (they come from "
            f"model={choice}; a model config of its own sets only its arguments)",
            flush=True,
        )
        node = {k: v for k, v in container(node).items() if k not in foreign}
    # _recursive_=False: optimizer/scheduler stay plain dicts, built in configure_optimizers.
    return instantiate_checked(node, _recursive_=False, _convert_="all", **kwargs)


def _model_group(cfg) -> tuple[str, dict]:
    """The ``model=`` option the run was composed with (``mlp`` outside a Hydra run: the
    default) and its values."""
    choice = hydra_choice("model") or "mlp"
    path = Path(CONF_DIR) / "model" / f"{choice}.yaml"
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}
    return choice, values


def hydra_choice(group: str) -> str | None:
    """The option of config group ``group`` this run was composed with, when Hydra runs it."""
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def unused_groups(cfg: DictConfig) -> list[str]:
    """Config groups a brought model doesn't take (it configures its own optimizer, ...)."""
    _, rest = accepted(model_class(cfg), {"optimizer": 1, "scheduler": 1})
    return [g for g in rest if cfg.get(g)]


def build_callbacks(cfg: DictConfig, model: L.LightningModule | None = None) -> list[L.Callback]:
    """The configured callbacks. A ModelCheckpoint or (strict) EarlyStopping of an ``MLPModule``
    must watch a metric it logs: Lightning would find out after the first epoch, in a
    traceback."""
    from mlplab.models.module import MLPModule, check_monitor

    nodes = {name: node for name, node in (cfg.get("callbacks") or {}).items() if node}
    callbacks = {name: instantiate_checked(node) for name, node in nodes.items()}
    if type(model) is MLPModule:  # a subclass may log metrics of its own
        task, classes = model.hparams.task, model.hparams.out_features
        for name, cb in callbacks.items():
            watching = isinstance(cb, ModelCheckpoint) or getattr(cb, "strict", False)
            if isinstance(cb, ModelCheckpoint | EarlyStopping) and cb.monitor and watching:
                check_monitor(f"callbacks.{name}.monitor", cb.monitor, task, classes)
    return [*callbacks.values(), RunRecord()]


def build_loggers(cfg: DictConfig, resumed_epoch: int | None = None) -> list:
    """The configured loggers; a resumed run keeps its CSV history up to ``resumed_epoch`` and
    logs to the same wandb run (one id per run dir)."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is None:
            continue
        target = str(node.get("_target_", ""))
        if target.endswith("WandbLogger"):
            quiet_wandb(bool(node.get("offline")))
            if node.get("id") is None:
                node = OmegaConf.merge(node, {"id": wandb_id(cfg.paths.output_dir)})
        logger = instantiate_checked(node)
        if isinstance(logger, CSVLogger):
            logger.keep_until_epoch = resumed_epoch
        loggers.append(logger)
    return loggers


def quiet_wandb(offline: bool) -> None:
    """No wandb lines on the terminal (``WANDB_SILENT=false`` shows them): the run dir says
    where everything is. wandb reads its environment once, at setup: that happens here."""
    os.environ.setdefault("WANDB_SILENT", "true")
    if offline:
        os.environ["WANDB_MODE"] = "offline"
    import wandb

    wandb.setup()


def wandb_id(output_dir: str | Path) -> str:
    """One wandb run id per run dir, kept in a file: a resumed run logs to the same run."""
    path = Path(output_dir) / "wandb_id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(4))
    return path.read_text().strip()


def build_trainer(
    cfg: DictConfig,
    callbacks: list,
    loggers: list,
    model: L.LightningModule | None = None,
    **overrides,
) -> L.Trainer:
    """The configured Trainer (``overrides``: arguments the caller sets itself, e.g. a
    population's ``limit_train_batches``). Gradient clipping stays with it for a module with
    automatic optimization; a module with manual optimization was given the clipping settings."""
    trainer_cfg = container(cfg["trainer"]) | overrides
    if model is None or not model.automatic_optimization:
        for key in ("gradient_clip_val", "gradient_clip_algorithm"):
            trainer_cfg.pop(key, None)
    check_trainer(trainer_cfg)
    # No ModelCheckpoint configured (callbacks=none) means no checkpoints, not Lightning's
    # default one in some folder of its own.
    has_checkpoints = any(isinstance(c, Checkpoint) for c in callbacks)
    trainer_cfg.setdefault("enable_checkpointing", has_checkpoints)
    plugins = [AtomicCheckpointIO()] if has_checkpoints else []
    if model is not None and not model.automatic_optimization:
        if str(trainer_cfg.get("precision", "32-true")) in ("32", "32-true"):
            trainer_cfg.pop("precision", None)  # the plugin says it
            plugins.append(QuietStep())
    has_bar = any(isinstance(c, ProgressBarBase) for c in callbacks)
    if trainer_cfg.get("enable_progress_bar", True) and not has_bar:
        callbacks = [*callbacks, ProgressBar()]  # train/val loss on the bar, no version id
    try:
        return instantiate_checked(
            trainer_cfg, callbacks=callbacks, logger=loggers or False, plugins=plugins or None
        )
    except InstantiationException as err:  # Lightning's own checks: name the trainer config
        cause = err.__cause__ or err
        message = " ".join(str(cause).split()) or type(cause).__name__
        raise ConfigError(f"the trainer config is invalid: {message}") from None


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint's path: the first ModelCheckpoint that monitors a metric."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return callback.best_model_path
    return None


def resume_checkpoint(cfg: DictConfig) -> tuple[str | None, dict | None]:
    """The checkpoint to continue from and its contents: ``ckpt_path``, or with
    ``resume=auto`` this run dir's ``last.ckpt`` when an earlier attempt left one."""
    if cfg.get("ckpt_path"):
        return cfg.ckpt_path, read_checkpoint(cfg.ckpt_path)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if cfg.get("resume") != "auto" or not last.is_file():
        return None, None
    hint = damaged_hint(last)
    return str(last), read_checkpoint(last, key="resume=auto: checkpoint", damaged_hint=hint)
