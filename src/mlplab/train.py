"""Train an MLP: ``mlplab-train [experiment=NAME] [overrides...]`` (or ``python -m mlplab.train``);
``mlplab-train rerun=<run dir> [overrides...]`` runs a past run's saved config again.

seed → data → model → callbacks, loggers → trainer → run info → fit → test(best) → metrics

The command line is composed and checked before Hydra starts and before Lightning is imported
(``mlplab.run.preflight``), so ``--help`` and config mistakes answer in about a second.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mlplab.config import CONF_DIR
from mlplab.cv import train_cv
from mlplab.errors import DivergedError, check, clean_exit, fail, user_error
from mlplab.run.console import (
    describe_run,
    one_console_handler,
    print_config,
    print_metrics,
    silence_known_noise,
)
from mlplab.run.parses import to_plain
from mlplab.run.preflight import normalize_argv, preflight
from mlplab.run.provenance import write_run_info
from mlplab.run.rundir import RunLock, check_run_dir, expand_rerun, process_rank, remove_stub
from mlplab.sweep.multirun import ERROR_FILE


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then test the best checkpoint. Returns the final train/val/test metrics.

    The run dir is locked while this runs and never written over: a dir that holds another
    run is refused unless ``resume=auto`` continues it. The tracking run is finished at the
    end, also on error, so the next run in this process gets its own.
    """
    # Imported here, not at the top: `mlplab-train --help` and config mistakes then answer
    # without waiting ~6 s for Lightning.
    import lightning as L

    from mlplab.run import build
    from mlplab.run.checkpoint import check_resumable, check_weights_only, has_step
    from mlplab.run.threads import apply_threads
    from mlplab.run.trackers import finish_trackers

    silence_known_noise()
    one_console_handler()
    output_dir = cfg.paths.output_dir
    rank0 = process_rank() == 0
    if rank0:
        check_run_dir(output_dir, cfg.get("resume"))
    with RunLock(output_dir) if rank0 else nullcontext():
        if cfg.get("cv") is not None:  # before seeds: cv refuses seeds= itself
            return train_cv(cfg)
        if cfg.get("seeds") is not None:
            return train_seeds(cfg)
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
        callbacks = build.build_callbacks(cfg)
        loggers = build.build_loggers(cfg, resumed_epoch)
        trainer = build.build_trainer(cfg, callbacks, loggers, model)
        failed = True
        try:
            if rank0:
                if cfg.get("print_config", True):
                    print_config(cfg, output_dir)
                print(describe_run(datamodule, model, trainer, threads, _experiment()), flush=True)
                for group in build.unused_groups(cfg):
                    print(
                        f"note: {type(model).__name__} takes no {group} argument: its own "
                        f"configure_optimizers decides, {group}= is not used",
                        flush=True,
                    )
                info = write_run_info(cfg, output_dir)
                # Loggers get the whole resolved config and the provenance, not only hparams.
                for logger in trainer.loggers:
                    logger.log_hyperparams({"config": _container(cfg), "run_info": info})
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            if rank0:
                _say_why_it_stopped(trainer)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            if cfg.get("test") and not has_step(model, "test_step"):
                print(f"test: skipped, {type(model).__name__} has no test_step", flush=True)
            elif cfg.get("test"):
                best = build.best_checkpoint(trainer)
                trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
                metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
            failed = False
        finally:
            finish_trackers(failed)
    return metrics


def train_seeds(cfg: DictConfig) -> dict[str, float]:
    """``seeds=N``: seeds ``seed … seed+N−1`` of this config as one population (weights, split
    and shuffle differ); each is a run dir inside this one. Returns mean and std per metric.
    ``resume=auto`` continues the population from its checkpoint (``population.resume``).
    Members that don't fit in memory at once train in chunks (``population.chunks``)."""
    from mlplab.population.chunks import train_in_chunks
    from mlplab.population.resume import refuse_ckpt_path
    from mlplab.population.run import mean_and_std

    n = cfg.seeds
    refuse_ckpt_path(cfg.get("ckpt_path"), "seeds=")
    members = seed_members(cfg)
    # rerun=<this dir> trains the population again (run info written once resume is checked)
    resume = cfg.get("resume") == "auto"
    summary = train_in_chunks(members, cfg.paths.output_dir, resume=resume, run_info=cfg)
    failed = summary[summary.status == "diverged"]
    ok = len(summary) - len(failed)
    print(f"population: {ok} of {len(summary)} seeds trained ({cfg.seed}..{cfg.seed + n - 1})")
    for _, row in failed.iterrows():
        print(f"  member {row.member} (seed {row.seed}): {row.error}", flush=True)
    return mean_and_std(summary)


def seed_members(cfg: DictConfig) -> list[DictConfig]:
    """The N configs of ``cfg``'s ``seeds=N``: seeds ``seed … seed+N−1``, ``seeds=null``."""
    n = cfg.seeds
    check(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1,
        "seeds",
        n,
        "an integer >= 1 (the number of seeds trained as one population)",
    )
    members = []
    for i in range(n):
        member = cfg.copy()
        member.seed = cfg.seed + i
        member.seeds = None
        members.append(member)
    return members


def _container(node) -> dict:
    return to_plain(node)


def _experiment() -> str | None:
    """The ``experiment=`` option of this run, when Hydra runs it."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get("experiment")


def _say_why_it_stopped(trainer) -> None:
    stopper = trainer.early_stopping_callback
    if stopper is None or not stopper.stopped_epoch:
        return
    best = float(stopper.best_score)
    print(
        f"early stopping: {stopper.monitor} did not improve for {stopper.patience} epochs "
        f"(best {best:.4g}); stopped after epoch {stopper.stopped_epoch}",
        flush=True,
    )


def _metric_sources(output_dir: str) -> dict[str, str]:
    """Which final metrics come from the last epoch and which from the best checkpoint."""
    import torch  # loaded by training already

    ckpts = Path(output_dir) / "checkpoints"

    def epoch(name: str) -> str:
        path = ckpts / name
        if not path.is_file():
            return ""
        return f" (epoch {torch.load(path, map_location='cpu', weights_only=True)['epoch']})"

    best = ckpts / "best.ckpt"
    test = f"best checkpoint{epoch('best.ckpt')}" if best.is_file() else "last weights"
    last = f"last epoch{epoch('last.ckpt')}"
    return {"train": last, "val": last, "test": test}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _run(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    try:
        metrics = train(cfg)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one job failed: say why, go on with the rest
            Path(output_dir, ERROR_FILE).write_text(f"{cause}\n")
            print(f"error: job {hydra_cfg.job.num}: {cause}", file=sys.stderr, flush=True)
            return
        last = Path(output_dir, "checkpoints", "last.ckpt")
        if isinstance(cause, DivergedError) and last.is_file():
            cause = DivergedError(f"{cause}; the last good checkpoint is {last}")
        remove_stub(output_dir)
        fail(cause)
    finally:
        # CPU DDP (gloo) aborts at interpreter exit ~20% of the time unless the group is gone.
        torch = sys.modules.get("torch")
        if torch is not None and torch.distributed.is_available():
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    if process_rank() == 0:
        # one small file per run: sweep summaries and scripts read it
        (Path(output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if cfg.get("cv") is not None:
            print_metrics(metrics, title=f"mean and std over {cfg.cv} folds (summary.csv)")
        elif cfg.get("seeds") is not None:
            print_metrics(metrics, title=f"mean and std over {cfg.seeds} seeds (summary.csv)")
        else:
            print_metrics(metrics, sources=_metric_sources(output_dir))
        print(f"run dir: {output_dir}")


def main(argv: list[str] | None = None) -> None:
    """``mlplab-train``: check the command line, then let Hydra run it."""
    with clean_exit():
        argv = normalize_argv(expand_rerun(sys.argv[1:] if argv is None else argv))
    # DDP ranks > 0 re-run this command line: rank 0 has checked it and holds the run dir.
    if process_rank() == 0:
        with clean_exit():
            preflight(argv, "train", train=True)
    sys.argv = [sys.argv[0], *argv]
    _run()


if __name__ == "__main__":
    main()
