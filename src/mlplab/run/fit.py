"""One training run: seed → data → model → callbacks, loggers → trainer → run info → fit →
test(best) → metrics. ``mlplab.train.train`` calls it for a single run (it holds the run dir's
lock), and a population of a model that can't be stacked calls it once per member."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf

from mlplab.config import portable_data
from mlplab.run import build, interrupt
from mlplab.run.checkpoint import check_resumable, check_weights_only, has_step
from mlplab.run.console import describe_run, print_config
from mlplab.run.provenance import write_run_info
from mlplab.run.rundir import process_rank
from mlplab.run.threads import apply_threads
from mlplab.run.trackers import finish_trackers


def fit(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint. Returns the final train/val/test metrics. The
    tracking run is finished at the end, also on error, so the next run in this process gets
    its own."""
    rank0 = process_rank() == 0
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path, ckpt = build.resume_checkpoint(cfg)
    datamodule = build.build_datamodule(cfg)
    datamodule.setup("fit")  # sizes, task and target scaling feed the model
    model = build.build_model(cfg, datamodule)
    check_weights_only(model, datamodule)  # before training, not at the last step
    rows = datamodule.hparams.get("batch_size")
    rows = len(datamodule.tensors["train"][0]) if rows == "full" else int(rows or 1)
    parameters = sum(p.numel() for p in model.parameters())
    threads = apply_threads(cfg.get("threads", "auto"), parameters, rows)
    if ckpt is not None:
        check_resumable(ckpt, str(ckpt_path), model, datamodule)
    resumed_epoch = ckpt.get("epoch") if ckpt is not None else None
    stop = StopAtEpochEnd()
    callbacks = [*build.build_callbacks(cfg, model), stop]
    loggers = build.build_loggers(cfg, resumed_epoch)
    trainer = build.build_trainer(cfg, callbacks, loggers, model)
    failed = True
    try:
        if rank0:
            output_dir = cfg.paths.output_dir
            print_config(cfg, output_dir, show=bool(cfg.get("print_config")))
            experiment = build.hydra_choice("experiment")
            print(describe_run(datamodule, model, trainer, threads, experiment), flush=True)
            for group in build.unused_groups(cfg):
                print(
                    f"note: {type(model).__name__} takes no {group} argument: its own "
                    f"configure_optimizers decides, {group}= is not used",
                    flush=True,
                )
            info = write_run_info(portable_data(cfg), output_dir, cfg.run_name)
            # Loggers get the whole resolved config and the provenance, not only hparams.
            config = OmegaConf.to_container(cfg, resolve=True)
            for logger in trainer.loggers:
                logger.log_hyperparams({"config": config, "run_info": info})
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        if rank0:
            _say_why_it_stopped(trainer, stop)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test") and not has_step(model, "test_step"):
            print(f"test: skipped, {type(model).__name__} has no test_step", flush=True)
        elif cfg.get("test"):
            best = build.best_checkpoint(trainer)
            trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        failed = False
    finally:
        finish_trackers(failed, loggers)
    return metrics


class StopAtEpochEnd(L.Callback):
    """Stops training at the end of the epoch in which Ctrl-C was pressed (on every process
    of a DDP run once any of them saw it). ``stopped_epoch``: that epoch, or None."""

    def __init__(self) -> None:
        self.stopped_epoch: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        interrupt.take_over()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.strategy.reduce_boolean_decision(interrupt.requested(), all=False):
            trainer.should_stop = True
            # trainer.min_epochs / min_steps don't hold an interrupt back
            trainer.fit_loop.min_epochs, trainer.fit_loop.epoch_loop.min_steps = 0, None
            self.stopped_epoch = trainer.current_epoch


def _say_why_it_stopped(trainer, stop: StopAtEpochEnd) -> None:
    if stop.stopped_epoch is not None:
        print(f"interrupted: stopped after epoch {stop.stopped_epoch}", flush=True)
        return
    stopper = trainer.early_stopping_callback
    if stopper is None or not stopper.stopped_epoch:
        return
    best = float(stopper.best_score)
    print(
        f"early stopping: {stopper.monitor} did not improve for {stopper.patience} epochs "
        f"(best {best:.4g}); stopped after epoch {stopper.stopped_epoch}",
        flush=True,
    )
