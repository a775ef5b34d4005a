"""Train an MLP: ``mlplab-train [experiment=NAME] [overrides...]`` (or ``python -m mlplab.train``);
``mlplab-train rerun=<run dir> [overrides...]`` runs a past run's saved config again.

seed → data → model → callbacks, loggers → trainer → run info → fit → test(best) → metrics
(``mlplab.run.fit``); ``seeds=N`` / ``cv=K`` train a population (``mlplab.population``).

The command line is composed and checked before Hydra starts and before Lightning is imported
(``mlplab.run.preflight``), so ``--help`` and config mistakes answer in about a second.
"""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mlplab.config import CONF_DIR, portable_data
from mlplab.errors import DivergedError, clean_exit, fail, user_error
from mlplab.run import interrupt
from mlplab.run.console import one_console_handler, print_metrics, print_where, silence_known_noise
from mlplab.run.preflight import expand_resume, import_from_here, normalize_argv, preflight
from mlplab.run.provenance import write_run_info
from mlplab.run.rundir import RunLock, check_run_dir, expand_rerun, holds_run, process_rank, remove
from mlplab.sweep.multirun import ERROR_FILE


def train(cfg: DictConfig) -> dict[str, float]:
    """One run, or with ``seeds=N`` / ``cv=K`` a population of them; returns the metrics (a
    population's: the mean and ``.std`` over its members).

    The run dir is locked while this runs and never written over: a dir that holds another
    run is refused unless ``resume=auto`` continues it.
    """
    from mlplab.data.sources import resolve_paths  # torch-free: before Lightning loads

    resolve_paths(cfg.get("data"))  # recorded absolute: re-run, eval work from any folder
    # Imported here, not at the top: `mlplab-train --help` and config mistakes then answer
    # without waiting for Lightning.
    from mlplab.population.members import population_members
    from mlplab.run.fit import fit

    silence_known_noise()
    one_console_handler()
    output_dir = cfg.paths.output_dir
    rank0 = process_rank() == 0
    if rank0:
        check_run_dir(output_dir, cfg.get("resume"))
    with RunLock(output_dir) if rank0 else nullcontext():
        members = population_members(cfg)
        if members is None:
            return fit(cfg)
        return train_members(cfg, members)


def train_members(cfg: DictConfig, members: list[dict]) -> dict[str, float]:
    """``seeds=N`` / ``cv=K``: the members as one population (``population.engine``), each a
    run dir inside this one; this dir's ``config.yaml`` re-runs the whole population.
    ``resume=auto`` continues it from its checkpoint."""
    from mlplab.population.engine import train_population
    from mlplab.population.stats import mean_and_std

    out_dir = Path(cfg.paths.output_dir)
    keys = sorted({key for member in members for key in member})

    def run_info() -> None:  # once the members are built and checked: a bad value writes nothing
        write_run_info(portable_data(cfg, keep=keys), out_dir, cfg.run_name)

    resume = cfg.get("resume") == "auto"
    summary = train_population(cfg, members, out_dir, resume=resume, before_fit=run_info)
    failed = summary[summary.status == "diverged"]
    done = f"{len(summary) - len(failed)} of {len(members)}"
    if cfg.get("cv") is not None:
        from mlplab.data.splits import check_folds

        held_out, leftover = check_folds(cfg.data, cfg.cv)
        rows = "row" if leftover == 1 else "rows"
        extra = f", {leftover} left-over {rows} held out by none" if leftover else ""
        print(
            f"cross-validation: {done} folds trained ({held_out} held-out rows each{extra}; "
            "test: the same rows for every fold)",
            flush=True,
        )
    else:
        print(f"population: {done} seeds trained ({cfg.seed}..{cfg.seed + len(members) - 1})")
    for _, row in failed.iterrows():
        print(f"  member {row.member}: {row.error}", flush=True)
    return mean_and_std(summary)


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
        with interrupt.session():
            metrics = train(cfg)
    except KeyboardInterrupt:  # before training started
        if cfg.get("resume") == "auto":
            _exit_interrupted("interrupted while starting: the run dir is left as it was")
        remove(output_dir)  # preflight found it empty: all ours
        _exit_interrupted("interrupted while starting: nothing was written")
    except interrupt.StopNow:
        _exit_interrupted(
            "interrupted: stopped at once; checkpoints/last.ckpt holds the last finished "
            f"epoch. Continue with: {resume_command(output_dir)}"
        )
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
        if not holds_run(output_dir):  # a failed start leaves nothing
            remove(output_dir)
        fail(cause)
    finally:
        # CPU DDP (gloo) aborts at interpreter exit ~20% of the time unless the group is gone.
        dist = getattr(sys.modules.get("torch"), "distributed", None)
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if process_rank() == 0:
        # one small file per run: sweep summaries and scripts read it
        (Path(output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if cfg.get("cv") is not None:
            print_metrics(metrics, title=f"mean and std over {cfg.cv} folds (summary.csv)")
        elif cfg.get("seeds") is not None:
            print_metrics(metrics, title=f"mean and std over {cfg.seeds} seeds (summary.csv)")
        else:
            print_metrics(metrics, sources=_metric_sources(output_dir))
        print_where(output_dir)
    if interrupt.requested():
        _exit_interrupted(f"interrupted: continue with: {resume_command(output_dir)}")


def resume_command(run_dir: str | Path) -> str:
    """The command that continues the run in ``run_dir`` with its saved config."""
    return f"mlplab-train resume={shlex.quote(str(run_dir))}"


def _exit_interrupted(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    sys.exit(interrupt.EXIT_CODE)


def main(argv: list[str] | None = None) -> None:
    """``mlplab-train``: check the command line, then let Hydra run it."""
    import_from_here()
    with clean_exit():
        argv = normalize_argv(expand_rerun(sys.argv[1:] if argv is None else argv))
        argv = expand_resume(argv)
        # DDP ranks > 0 re-run this command line: rank 0 has checked it and holds the run dir.
        if process_rank() == 0:
            preflight(argv, "train", train=True)
    sys.argv = [sys.argv[0], *argv]
    _run()


if __name__ == "__main__":
    main()
