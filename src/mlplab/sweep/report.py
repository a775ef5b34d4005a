"""What a sweep leaves behind: ``trials.csv`` (with each failure's reason, each repeat's
original and each retry's killed trial), ``best.yaml`` (re-runnable), ``best_params.yaml``, two
plots, and the summary."""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import optuna
import pandas as pd
import yaml
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from mlplab.config import compose_config, portable_data, portable_yaml
from mlplab.sweep.retry import RESUMES, retries

# A FAIL without a recorded reason: its worker never got to say why (heartbeat timed out).
NO_REASON = "no reason recorded (its worker was killed or lost contact)"


def print_trial(trial: FrozenTrial) -> None:
    """The line a finished trial prints."""
    value = "" if trial.value is None else f"{trial.value:.4g}"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    params = _params(trial)
    same, killed = trial.user_attrs.get("duplicate_of"), trial.user_attrs.get(RESUMES)
    note = f"  (same params as trial {same}: not retrained)" if same is not None else ""
    note += f"  (retry of killed trial {killed})" if killed is not None else ""
    print(
        f"trial {trial.number:>3} {trial.state.name:<8} {value:>9} {seconds:6.1f}s  {params}{note}",
        flush=True,
    )


def _params(trial: FrozenTrial) -> str:
    short = {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in trial.params.items()}
    return " ".join(f"{k}={v}" for k, v in short.items())


def trial_fail_reason(trial: FrozenTrial, retry: FrozenTrial | None = None) -> str:
    """Its recorded reason; for a killed trial that was retried (``retry``), what became of it:
    resumed from its population's checkpoint, retried from the start, or not run yet."""
    if retry is None:
        return trial.user_attrs.get("fail_reason") or NO_REASON
    where = retry.user_attrs.get("population")
    if where is not None and where == trial.user_attrs.get("population"):
        return f"worker killed; resumed as trial {retry.number} (from {where}'s checkpoint)"
    how = "" if where is None else " (from the start)"
    return f"worker killed; retried as trial {retry.number}{how}"


def write_reports(study: optuna.Study, search: DictConfig, sweep_dir: Path) -> None:
    """trials.csv, best.yaml, best_params.yaml, plots and a summary table."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return
    df = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    df["duration"] = df["duration"].dt.total_seconds()
    attrs = [t.user_attrs for t in trials]  # the dataframe's rows are the trials, in order
    for key in ("duplicate_of", RESUMES):
        df[key] = pd.array([a.get(key) for a in attrs], dtype="Int64")
    df["population"] = [a.get("population") for a in attrs]
    retried = retries(trials)
    df["fail_reason"] = [
        trial_fail_reason(t, retried.get(t.number)) if t.state == TrialState.FAIL else None
        for t in trials
    ]
    df.to_csv(sweep_dir / "trials.csv", index=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        (sweep_dir / "best.yaml").write_text(best_config_yaml(best.user_attrs["overrides"]))
        best_params = {
            "metric": search.metric,
            "direction": search.direction,
            "value": best.value,
            "trial": best.user_attrs.get("duplicate_of", best.number),
            "params": best.params,
        }
        (sweep_dir / "best_params.yaml").write_text(yaml.safe_dump(best_params, sort_keys=False))
    _save_plots(study, len(complete), sweep_dir)
    _print_summary(trials, search, sweep_dir)


def best_config_yaml(overrides: list[str]) -> str:
    """The best trial's train config as a primary config for
    ``mlplab-train --config-dir <sweep_dir> --config-name best``: resolved, except that run dir
    and run name stay interpolations, so a re-run writes a fresh ``logs/train/<run_id>/``."""
    cfg = compose_config("train", [*overrides, "paths.output_dir=unused"])
    header = (
        "# The best trial's config from mlplab-sweep. Re-run it with\n"
        "#   mlplab-train --config-dir <this dir> --config-name best [overrides...]\n"
    )
    return header + portable_yaml(portable_data(cfg))


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


def _print_summary(trials, search: DictConfig, sweep_dir: Path, top: int = 5) -> None:
    """Counts by state, each failure reason with its trials, the top trials, the best."""
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    line = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n)
    repeats = sum("duplicate_of" in t.user_attrs for t in trials)
    if repeats:
        line += f" ({repeats} repeated an earlier trial's params: not retrained)"
    print(f"\n{len(trials)} trials: {line}")
    failed, retried = defaultdict(list), retries(trials)
    for t in trials:
        if t.state == TrialState.FAIL and t.number not in retried:
            failed[trial_fail_reason(t)].append(str(t.number))
    for reason, numbers in failed.items():
        print(f"  failed {len(numbers)}× {reason}  (trials {', '.join(numbers)})")
    if retried:  # not counted towards n_trials
        pairs = ", ".join(f"{n} as {t.number}" for n, t in sorted(retried.items()))
        print(f"  failed {len(retried)}× worker killed, retried  (trials {pairs})")
    complete = [
        t for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    if not complete:
        print(f"no trial completed; see {sweep_dir / 'trials.csv'}")
        return
    ranked = sorted(complete, key=lambda t: t.value, reverse=search.direction == "maximize")
    print(f"{'trial':>5}  {search.metric:>10}  params")
    for t in ranked[:top]:
        print(f"{t.number:>5}  {t.value:>10.4g}  {_params(t)}")
    print(f"best: trial {ranked[0].number}; config: {sweep_dir / 'best.yaml'}")
    print(f"re-run: mlplab-train --config-dir {sweep_dir} --config-name best")
