"""Bayesian hyperparameter search with Optuna: each trial composes the train config and runs
``train(cfg)`` in this process (no torch/Lightning start-up per trial).

    mlplab-sweep hparams_search=toy [n_trials=20] [workers=4] [storage=URL] [study_name=NAME]
                 [sweep_dir=DIR] [launcher=processes|slurm|submitit_local] [slurm.KEY=VALUE]
                 [any mlplab-train overrides, applied to every trial]

``workers=N`` runs N workers on one study: local processes, or with ``launcher=slurm`` the
tasks of one SLURM job array (submitit; ``slurm.partition=gpu slurm.timeout_min=120`` ...).

The search space, metric, sampler and pruner live in ``conf/hparams_search/NAME.yaml``. The
study is stored in ``<sweep_dir>/study.db`` (default ``logs/sweep/<study_name>``), so running the
same command again resumes it: ``n_trials`` is the study's total. A trial that raises is recorded
as FAILED and the search goes on. At the end the sweep dir holds ``best.yaml`` (re-run it with
``mlplab-train --config-dir <sweep_dir> --config-name best``), ``best_params.yaml``,
``trials.csv`` and two plots.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from mlplab.errors import check, clean_exit
from mlplab.train import CONF_DIR, train

SEARCH_DIR = Path(CONF_DIR) / "hparams_search"
SWEEP_KEYS = (
    "hparams_search",
    "n_trials",
    "workers",
    "storage",
    "study_name",
    "sweep_dir",
    "launcher",
)
LAUNCHERS = ("processes", "slurm", "submitit_local")
# submitit's cluster-independent parameters; any other slurm.KEY becomes slurm_KEY.
SUBMITIT_GENERIC = {
    "timeout_min",
    "mem_gb",
    "nodes",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "name",
    "stderr_to_stdout",
}
HEARTBEAT_S, GRACE_S = 30, 120  # a RUNNING trial silent for GRACE_S seconds is dead
WORKER_KEY = "_worker"  # internal: set on the processes that `workers=N` starts
DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Quiet trials; the command line's overrides come later and win.
TRIAL_DEFAULTS = ("trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
# best.yaml keeps these as interpolations, so each re-run gets its own run dir.
KEEP_UNRESOLVED = {
    "paths.output_dir": "${hydra:runtime.output_dir}",
    "run_name": "${run_id:}",
    "task_name": "train",
}

_active_trial: optuna.Trial | None = None  # the trial train() is running (see TrialPruning)


@dataclass
class SweepArgs:
    hparams_search: str | None = None
    n_trials: int | None = None
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    sweep_dir: str | None = None
    worker: int | None = None
    launcher: str = "processes"
    slurm: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback for the running trial, so it can be built from
    config (``callbacks.optuna_pruning``) by the unchanged ``train()``."""

    def __init__(self, monitor: str) -> None:
        assert _active_trial is not None, "TrialPruning is only built by mlplab-sweep"
        super().__init__(_active_trial, monitor=monitor)


def available_searches() -> list[str]:
    return sorted(p.stem for p in SEARCH_DIR.glob("*.yaml"))


def parse_args(argv: list[str]) -> SweepArgs:
    """Split the sweep's own ``key=value`` arguments from the train overrides."""
    defaults = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / "sweep.yaml"))
    args = SweepArgs(**{k: v for k, v in defaults.items() if k in SWEEP_KEYS})
    args.slurm = dict(defaults.get("slurm") or {})
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in SWEEP_KEYS + (WORKER_KEY,):
            setattr(args, key.lstrip("_"), value)
        elif sep and key.startswith("slurm."):
            args.slurm[key.removeprefix("slurm.")] = yaml.safe_load(value)
        else:
            args.overrides.append(arg)
    check(args.launcher in LAUNCHERS, "launcher", args.launcher, f"one of {list(LAUNCHERS)}")
    for key in ("n_trials", "workers", "worker"):
        value = getattr(args, key)
        if value is not None:
            check(str(value).isdigit(), key, value, "a whole number ≥ 0")
            setattr(args, key, int(value))
    check(args.workers >= 1, "workers", args.workers, "at least 1")
    return args


def load_search(name: str | None) -> DictConfig:
    """``conf/hparams_search/NAME.yaml`` (or a path to a yaml file), checked."""
    path = Path(name) if name and name.endswith(".yaml") else SEARCH_DIR / f"{name}.yaml"
    names = ", ".join(available_searches())
    check(bool(name) and path.is_file(), "hparams_search", name, f"one of {names}")
    search = OmegaConf.load(path)
    check(
        search.get("direction") in ("minimize", "maximize"),
        "direction",
        search.get("direction"),
        "minimize or maximize",
    )
    check(bool(search.get("metric")), "metric", search.get("metric"), "a metric key, e.g. val/loss")
    for key, spec in (search.get("params") or {}).items():
        kind = spec.get("type")
        check(
            kind in ("float", "int", "categorical"),
            f"params.{key}.type",
            kind,
            "float, int or categorical",
        )
        if kind == "categorical":
            check(
                bool(spec.get("choices")),
                f"params.{key}.choices",
                spec.get("choices"),
                "a non-empty list",
            )
        else:
            ok = spec.get("low") is not None and spec.get("high") is not None
            check(ok and spec.low < spec.high, f"params.{key}", dict(spec), "needs low < high")
    return search


def suggest(trial: optuna.Trial, params: DictConfig) -> list[str]:
    """One ``key=value`` override per search parameter. A key naming a config group
    (``optimizer``) picks an option of it, like ``optimizer=adam`` on the command line."""
    overrides = []
    for key, spec in params.items():
        if spec.type == "float":
            value = trial.suggest_float(key, spec.low, spec.high, log=bool(spec.get("log")))
        elif spec.type == "int":
            value = trial.suggest_int(key, spec.low, spec.high, log=bool(spec.get("log")))
        else:
            value = trial.suggest_categorical(key, list(spec.choices))
        overrides.append(f"{key}={_override_value(value)}")
    return overrides


def _override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)  # floats keep full precision; "[64,64]" is parsed by Hydra as a list


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def merge_overrides(*groups) -> list[str]:
    """Later overrides of the same key replace earlier ones (Hydra refuses a group twice)."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            merged.pop(_key(override), None)
            merged[_key(override)] = override
    return list(merged.values())


def compose_train(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (sqlite waits for locks held by other workers), or a ``*.journal`` file."""
    if url.endswith(".journal"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # Heartbeats let a later run tell a trial whose worker was killed (still RUNNING in the
    # storage) from a live one: after the grace period it is marked FAIL.
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9; we know
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
        )


def make_sampler(spec: DictConfig, worker: int | None) -> optuna.samplers.BaseSampler:
    name, seed = spec.get("name", "tpe"), spec.get("seed")
    if seed is not None and worker:  # workers with one seed would propose the same trials
        seed += worker
    check(name in ("tpe", "random"), "sampler.name", name, "tpe or random")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: DictConfig | None) -> optuna.pruners.BasePruner:
    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "median")
    check(name in ("median", "none"), "pruner.name", name, "median or none")
    return optuna.pruners.MedianPruner(**spec) if name == "median" else optuna.pruners.NopPruner()


class Objective:
    """One trial: suggest → compose → ``train(cfg)`` in process → the metric."""

    def __init__(self, search: DictConfig, args: SweepArgs, sweep_dir: Path) -> None:
        self.metric, self.sweep_dir, self.study_name = search.metric, sweep_dir, args.study_name
        self.direction = search.direction
        logger = [] if any(_key(o).startswith("logger") for o in args.overrides) else ["logger=csv"]
        self.base = [*TRIAL_DEFAULTS, *logger, *(search.get("overrides") or [])]
        self.user = args.overrides
        self.params = search.get("params") or {}

    def __call__(self, trial: optuna.Trial) -> float:
        global _active_trial
        overrides = merge_overrides(self.base, suggest(trial, self.params), self.user)
        trial.set_user_attr("overrides", overrides)
        out = self.sweep_dir / f"trial_{trial.number}"
        run = [f"paths.output_dir={out}", "task_name=sweep", f"run_name=trial_{trial.number}"]
        try:
            cfg = compose_train([*overrides, *run])
            with open_dict(cfg):
                if cfg.get("callbacks") is None:
                    cfg.callbacks = {}
                cfg.callbacks.optuna_pruning = {
                    "_target_": f"{__name__}.TrialPruning",
                    "monitor": self.metric,
                }
                if (cfg.get("logger") or {}).get("wandb") is not None:
                    cfg.logger.wandb.group = cfg.logger.wandb.group or self.study_name
            _active_trial = trial
            metrics = train(cfg)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # Optuna records FAIL (catch=...); say why in one line
            msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
            print(f"trial {trial.number} failed: {type(err).__name__}: {msg}", flush=True)
            raise
        finally:
            _active_trial = None
            _finish_wandb_run()
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        check(self.metric in metrics, "metric", self.metric, f"one of {sorted(metrics)}")
        return self._best_epoch_value(trial, metrics[self.metric])

    def _best_epoch_value(self, trial: optuna.Trial, last: float) -> float:
        """The best value the metric reached over the epochs (what the pruning callback
        reported), not the last epoch's: with early stopping the last epoch is `patience`
        epochs past the best one, and the best checkpoint is what the run keeps."""
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        values = [v for v in frozen.intermediate_values.values() if math.isfinite(v)]
        if not values:
            return last
        return max(values) if self.direction == "maximize" else min(values)


def _finish_wandb_run() -> None:
    """Each trial is its own wandb run: Lightning would otherwise log the next trial into the
    run still open in this process."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _print_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    value = "" if trial.value is None else f"{trial.value:.4g}"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    print(
        f"trial {trial.number:>3} {trial.state.name:<8} {value:>9} {seconds:6.1f}s  {params}",
        flush=True,
    )


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def sweep(argv: list[str]) -> optuna.Study:
    """Run (or resume) the study named by ``argv``; returns it. See the module docstring."""
    args = parse_args(argv)
    search = load_search(args.hparams_search)
    args.study_name = args.study_name or Path(args.hparams_search).stem
    sweep_dir = Path(args.sweep_dir or Path("logs") / "sweep" / args.study_name).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    n_trials = args.n_trials if args.n_trials is not None else int(search.get("n_trials", 20))
    user_keys = {_key(o) for o in args.overrides}
    for key in [k for k in (search.get("params") or {}) if k in user_keys]:
        print(f"note: {key} is fixed on the command line, so it is not searched")
        del search.params[key]

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if args.worker is not None:
        torch.set_num_threads(1)  # N workers share the CPU
    storage = open_storage(args.storage or f"sqlite:///{sweep_dir / 'study.db'}")
    study = optuna.create_study(
        study_name=args.study_name,
        storage=storage,
        direction=search.direction,
        sampler=make_sampler(search.get("sampler") or {}, args.worker),
        pruner=make_pruner(search.get("pruner")),
        load_if_exists=True,
    )
    with warnings.catch_warnings():  # trials of killed runs → FAIL, counted as done
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    done = len(study.get_trials(deepcopy=False, states=DONE))
    remaining = max(n_trials - done, 0)
    if args.worker is None:
        print(f"study {args.study_name}: {done} trials done, {remaining} to run → {sweep_dir}")
    if remaining and (args.workers == 1 or args.worker is not None):
        callbacks = [_print_trial]
        if args.worker is not None:  # stop once all workers together reach n_trials
            states = (*DONE, TrialState.RUNNING)
            callbacks.append(optuna.study.MaxTrialsCallback(n_trials, states=states))
        study.optimize(
            Objective(search, args, sweep_dir),
            n_trials=remaining,
            catch=(Exception,),
            callbacks=callbacks,
            gc_after_trial=True,
        )
    elif remaining and args.launcher == "processes":
        _run_workers(argv, args.workers)
    elif remaining:
        _submit_workers(argv, args, sweep_dir)
    if args.worker is None:
        write_reports(study, search, sweep_dir)
    return study


def _run_workers(argv: list[str], workers: int) -> None:
    """``workers`` local processes running ``python -m mlplab.sweep`` on the same study."""
    argv = [a for a in argv if _key(a) != "workers"]
    env_cmd = [sys.executable, "-m", "mlplab.sweep", *argv]
    procs = [subprocess.Popen([*env_cmd, f"{WORKER_KEY}={i}"]) for i in range(workers)]
    failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        print(f"note: workers {failed} exited with an error (see above)")


def _worker_main(argv: list[str]) -> None:
    """What each submitted array task runs (a module-level function, so it pickles)."""
    sweep(argv)


def _submit_workers(argv: list[str], args: SweepArgs, sweep_dir: Path) -> None:
    """``workers`` tasks of one SLURM job array (submitit) sharing the study; waits for them.

    ``launcher=submitit_local`` runs the same jobs as local processes (to try it without a
    cluster). The study's storage must be reachable from the compute nodes: the default
    sqlite file in the sweep dir works on a shared file system.
    """
    import submitit

    cluster = "slurm" if args.launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster=cluster)
    params = {
        k if k in SUBMITIT_GENERIC else f"slurm_{k}": v
        for k, v in args.slurm.items()
        if v is not None
    }
    executor.update_parameters(name=f"sweep-{args.study_name}", **params)
    own = {"workers", "launcher"}
    argv = [a for a in argv if _key(a) not in own and not a.startswith("slurm.")]
    with executor.batch():  # one job array
        jobs = [
            executor.submit(_worker_main, [*argv, f"{WORKER_KEY}={i}"]) for i in range(args.workers)
        ]
    print(f"submitted {len(jobs)} workers as job array {jobs[0].job_id.split('_')[0]}")
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 — one worker's crash must not hide the others
            print(f"note: worker {job.job_id} failed: {str(err).strip().splitlines()[-1]}")


def write_reports(study: optuna.Study, search: DictConfig, sweep_dir: Path) -> None:
    """trials.csv, best.yaml, best_params.yaml, plots and a summary table."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return
    df = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    df["duration"] = df["duration"].dt.total_seconds()
    df.to_csv(sweep_dir / "trials.csv", index=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        (sweep_dir / "best.yaml").write_text(best_config_yaml(best.user_attrs["overrides"]))
        best_params = {
            "metric": search.metric,
            "direction": search.direction,
            "value": best.value,
            "trial": best.number,
            "params": best.params,
        }
        (sweep_dir / "best_params.yaml").write_text(yaml.safe_dump(best_params, sort_keys=False))
    _save_plots(study, len(complete), sweep_dir)
    _print_summary(study, complete, search, sweep_dir)


def best_config_yaml(overrides: list[str]) -> str:
    """The best trial's train config, resolved, with a defaults list that makes it a primary
    config for ``mlplab-train --config-dir <sweep_dir> --config-name best``. Run dir, run name
    and task stay interpolations, so a re-run writes a fresh ``logs/train/<run_id>/``."""
    cfg = compose_train([*overrides, "paths.output_dir=unused"])
    sentinels = {key: f"__mlplab_keep_{i}__" for i, key in enumerate(KEEP_UNRESOLVED)}
    for key, sentinel in sentinels.items():
        OmegaConf.update(cfg, key, sentinel)
    text = OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))
    for key, sentinel in sentinels.items():
        text = text.replace(sentinel, "${" + key + "}")
    resolved = OmegaConf.create(text)
    for key, value in KEEP_UNRESOLVED.items():
        OmegaConf.update(resolved, key, value)
    header = (
        "# The best trial's config from mlplab-sweep. Re-run it with\n"
        "#   mlplab-train --config-dir <this dir> --config-name best [overrides...]\n"
        "defaults:\n  - train_schema\n  - hydra: default\n  - _self_\n\n"
    )
    return header + OmegaConf.to_yaml(resolved)


def _save_plots(study: optuna.Study, n_complete: int, sweep_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    plots = {"optimization_history.png": vis.plot_optimization_history}
    if n_complete >= 2 and study.best_trial.params:
        plots["param_importances.png"] = vis.plot_param_importances
    else:
        print("note: param_importances.png skipped (needs ≥ 2 complete trials)")
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings of optuna's plots
                ax = plot(study)
            ax.figure.savefig(sweep_dir / name, bbox_inches="tight", dpi=120)
            plt.close(ax.figure)
        except Exception as err:  # e.g. importances of a study where nothing varies
            print(f"note: {name} skipped: {type(err).__name__}: {err}")


def _print_summary(study, complete, search: DictConfig, sweep_dir: Path, top: int = 5) -> None:
    counts = {s.name: 0 for s in DONE}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    print("\n" + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n))
    if not complete:
        print(f"no trial completed; see {sweep_dir / 'trials.csv'}")
        return
    ranked = sorted(complete, key=lambda t: t.value, reverse=search.direction == "maximize")
    print(f"{'trial':>5}  {search.metric:>10}  params")
    for t in ranked[:top]:
        params = " ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        print(f"{t.number:>5}  {t.value:>10.4g}  {params}")
    print(f"best: trial {ranked[0].number}; config: {sweep_dir / 'best.yaml'}")
    print(f"re-run: mlplab-train --config-dir {sweep_dir} --config-name best")


def main() -> None:
    with clean_exit():
        sweep(sys.argv[1:])


if __name__ == "__main__":
    main()
