"""Train an MLP: ``mlplab-train [experiment=NAME] [overrides...]`` (or ``python -m mlplab.train``).

seed → data → model → callbacks, loggers → trainer → run info → fit → test(best) → metrics
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import mlplab.config  # noqa: F401 — registers the schema and the ${run_id:} resolver
from mlplab.errors import ConfigError, check, clean_exit
from mlplab.noise import silence_known_noise
from mlplab.report import print_metrics
from mlplab.runinfo import write_run_info

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
CLIP_KEYS = ("gradient_clip_val", "gradient_clip_algorithm")


def _container(node) -> dict | None:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def _instantiate(node, **kwargs):
    """``hydra.utils.instantiate``, but a ConfigError from a constructor comes out as itself
    (Hydra wraps it in an InstantiationException with a traceback-sized message)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = _config_error(err)
        if cause is None:
            raise
        raise cause from None


def _config_error(err: BaseException | None) -> ConfigError | None:
    """The ConfigError that caused ``err``, if any."""
    while err is not None:
        if isinstance(err, ConfigError):
            return err
        err = err.__cause__ or err.__context__
    return None


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [_instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is None:
            continue
        if str(node.get("_target_", "")).endswith("WandbLogger") and node.get("id") is None:
            node = OmegaConf.merge(node, {"id": _wandb_id(cfg.paths.output_dir)})
        loggers.append(_instantiate(node))
    return loggers


def build_model(cfg: DictConfig, datamodule) -> L.LightningModule:
    """The model config plus what only the data knows (sizes, task, target scaling)."""
    pre = datamodule.preprocessor
    trainer_cfg = cfg.trainer
    return _instantiate(
        cfg.model,
        _recursive_=False,  # optimizer/scheduler stay plain dicts, built in configure_optimizers
        in_features=datamodule.in_features,
        out_features=datamodule.out_features,
        task=datamodule.task,
        optimizer=_container(cfg.optimizer),
        scheduler=_container(cfg.get("scheduler")) or None,
        # Clipping is configured on the trainer, as in any Lightning project, but done by
        # the module: Lightning refuses Trainer(gradient_clip_val) under manual optimization.
        gradient_clip_val=float(trainer_cfg.get("gradient_clip_val") or 0.0),
        gradient_clip_algorithm=trainer_cfg.get("gradient_clip_algorithm") or "norm",
        target_mean=pre.target_mean,
        target_std=pre.target_std,
        class_weights=datamodule.class_weights,
    )


def build_trainer(cfg: DictConfig, callbacks: list, loggers: list) -> L.Trainer:
    trainer_cfg = _container(cfg.trainer)
    for key in CLIP_KEYS:
        trainer_cfg.pop(key, None)
    return _instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)


def _refuse_ddp_in_multirun(cfg: DictConfig) -> None:
    """DDP relaunches ``sys.argv`` for its other ranks; inside ``--multirun`` that re-runs the
    whole sweep in each child (silently wrong). Sweeps use one device per trial."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    strategy = str(cfg.trainer.get("strategy") or "auto")
    devices, nodes = cfg.trainer.get("devices"), cfg.trainer.get("num_nodes") or 1
    check(
        "ddp" not in strategy or (devices == 1 and nodes == 1),
        "trainer.strategy",
        strategy,
        "DDP can't run inside --multirun (each rank would re-run the sweep): "
        "use one device per trial, e.g. trainer=cpu or trainer=gpu",
    )


def _resume_from(cfg: DictConfig) -> str | None:
    """The checkpoint to continue from: ``ckpt_path``, or with ``resume=auto`` this run dir's
    ``last.ckpt`` when a previous attempt left one (a killed or requeued job)."""
    resume = cfg.get("resume")
    check(resume in (None, "auto"), "resume", resume, "null or 'auto'")
    if cfg.get("ckpt_path"):
        check(Path(cfg.ckpt_path).is_file(), "ckpt_path", cfg.ckpt_path, "no such checkpoint file")
        return cfg.ckpt_path
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return str(last) if resume == "auto" and last.is_file() else None


def _wandb_id(output_dir: str) -> str:
    """One wandb run id per run dir, kept in a file: a resumed run logs to the same run."""
    path = Path(output_dir) / "wandb_id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(4))
    return path.read_text().strip()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint. Returns the final train/val/test metrics."""
    silence_known_noise()
    _refuse_ddp_in_multirun(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = _resume_from(cfg)
    datamodule = _instantiate(cfg.data)
    datamodule.setup("fit")  # sizes, task and target scaling feed the model
    model = build_model(cfg, datamodule)
    trainer = build_trainer(cfg, build_callbacks(cfg), build_loggers(cfg))
    if rank_zero_only.rank == 0:  # set from the environment: right before fit() under DDP too
        info = write_run_info(cfg, cfg.paths.output_dir)
        # Loggers get the whole resolved config and the provenance, not only model hparams.
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": _container(cfg), "run_info": info})
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics


def _remove_empty_run_dir(output_dir: str) -> None:
    """Drop a run dir that holds only Hydra's bookkeeping: a failed start leaves nothing."""
    out = Path(output_dir)
    if out.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    output_dir = HydraConfig.get().runtime.output_dir
    try:
        with clean_exit(cleanup=lambda: _remove_empty_run_dir(output_dir)):
            metrics = train(cfg)
    finally:
        # CPU DDP (gloo) aborts at interpreter exit ~20% of the time unless the group is gone.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank_zero_only.rank == 0:
        # one small file per run: sweep summaries and scripts read it
        (Path(output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print_metrics(metrics)
        print(f"run dir: {output_dir}")


if __name__ == "__main__":
    main()
