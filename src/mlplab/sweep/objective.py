"""One trial: suggest → compose the train config → ``train(cfg)`` in this process → the
metric's best epoch; and a failure's one-line reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from mlplab.config import compose_config
from mlplab.errors import ConfigError
from mlplab.population.members import shared_params
from mlplab.run.preflight import CommandLine, compose_checked
from mlplab.run.values import check_loggers
from mlplab.sweep.search import check_group_choices, override_value, suggest
from mlplab.train import train

# Quiet trials; the command line's overrides come later and win.
TRIAL_DEFAULTS = ("trainer.enable_progress_bar=false", "print_config=false")

_active_trial: optuna.Trial | None = None  # the trial train() is running (see trial_pruning)


class MissingMetric(ConfigError):
    """train() does not produce the search's metric: every trial would fail alike."""


def trial_pruning(monitor: str):
    """Optuna's Lightning pruning callback for the running trial, built from config
    (``callbacks.optuna_pruning``) by the unchanged ``train()``. Imported here: Lightning
    takes seconds to import, and ``--help`` or a wrong argument should answer at once."""
    from optuna_integration import PyTorchLightningPruningCallback

    assert _active_trial is not None, "trial_pruning is only built by mlplab-sweep"
    return PyTorchLightningPruningCallback(_active_trial, monitor=monitor)


def override_key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def merge_overrides(*groups) -> list[str]:
    """Later overrides of the same key replace earlier ones and move to where the later one
    stands (Hydra refuses a group twice)."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            merged.pop(override_key(override), None)
            merged[override_key(override)] = override
    return list(merged.values())


def best_epoch_value(trial: optuna.Trial, direction: str, last: float) -> float:
    """The best value the metric reached over the epochs (what the pruning callback reported),
    not the last epoch's (with early stopping `patience` epochs past the best, whose checkpoint
    the run keeps); ``last`` when nothing was reported (a ``test/`` metric)."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    return best_of(frozen.intermediate_values.values(), direction, last)


def best_of(values, direction: str, last: float) -> float:
    """The best finite value of ``values`` (the epochs' metric); ``last`` when there is none."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return last
    return max(values) if direction == "maximize" else min(values)


def fail_reason(err: BaseException) -> str:
    """``Type: first line of the message``; Hydra's instantiation wrapper is looked through."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].strip()}" if lines else type(err).__name__


class Objective:
    """One trial: suggest → compose → ``train(cfg)`` in process → the metric."""

    def __init__(
        self, search: DictConfig, overrides: list[str], study_name: str, sweep_dir: Path
    ) -> None:
        self.metric, self.sweep_dir, self.study_name = search.metric, sweep_dir, study_name
        self.direction = search.direction
        own_logger = any(override_key(o).startswith("logger") for o in overrides)
        logger = [] if own_logger else ["logger=csv"]
        self.base = [*TRIAL_DEFAULTS, *logger, *(search.get("overrides") or [])]
        self.user = overrides
        self.params = search.get("params") or {}
        self.shared = shared_params(self.params)  # sampled once per population
        self.fatal: ConfigError | None = None  # set when the whole sweep must stop

    def check(self) -> None:
        """Every override a trial will get composes (each parameter at its first value): a wrong
        key or group option in the search file or on the command line is one error line now
        (the same one mlplab-train gives), not a failure in every trial."""
        first = []
        for key, spec in self.params.items():
            value = spec.choices[0] if spec.type == "categorical" else spec.low
            first.append(f"{key}={override_value(value)}")
        check_group_choices(self.params)
        overrides = [*merge_overrides(self.base, first, self.user), "paths.output_dir=unused"]
        check_loggers(compose_checked(CommandLine("train"), overrides))

    def trial_overrides(self, trial: optuna.Trial) -> list[str]:
        """The trial's train overrides (search file, suggestions, command line), recorded."""
        overrides = merge_overrides(self.base, suggest(trial, self.params), self.user)
        trial.set_user_attr("overrides", overrides)
        return overrides

    def trial_dir(self, trial: optuna.Trial) -> Path:
        return self.sweep_dir / f"trial_{trial.number}"

    def train_trial(self, trial: optuna.Trial, overrides: list[str]) -> float:
        """``train()`` the trial's config, in its own ``trial_<number>`` dir, with Optuna's
        pruning callback; its value."""
        global _active_trial
        out = self.trial_dir(trial)
        cfg = self._compose(overrides, out)
        pruning = {"_target_": f"{__name__}.trial_pruning", "monitor": self.metric}
        OmegaConf.update(cfg, "callbacks.optuna_pruning", pruning, force_add=True)
        _active_trial = trial
        try:
            metrics = train(cfg)  # which finishes its tracking run: one per trial
        finally:
            _active_trial = None
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return self.finite(best_epoch_value(trial, self.direction, self.metric_of(metrics)))

    def population_config(self, shared: list[str], out: Path) -> DictConfig:
        """The config a population of trials shares (``shared``: the overrides of its shared
        parameters), writing into ``out``; each member's parameters are set on it as data."""
        return self._compose(merge_overrides(self.base, shared, self.user), out)

    def _compose(self, overrides: list[str], out: Path) -> DictConfig:
        run = [f"paths.output_dir={out}", "task_name=sweep", f"run_name={out.name}"]
        cfg = compose_config("train", [*overrides, *run])
        if (cfg.get("logger") or {}).get("wandb") is not None:
            with open_dict(cfg):
                cfg.logger.wandb.group = cfg.logger.wandb.group or self.study_name
        return cfg

    def metric_of(self, metrics: dict) -> float:
        """The search's metric in what train() returned (a trial's, a member's, their mean)."""
        if self.metric not in metrics:  # every trial would fail alike: the sweep stops
            raise MissingMetric(
                f"metric={self.metric!r} is invalid: train() returned {sorted(metrics)}"
            )
        return float(metrics[self.metric])

    def finite(self, value: float) -> float:
        """The trial's value; Optuna would fail a nan or inf without saying why."""
        if not math.isfinite(value):
            raise FloatingPointError(f"{self.metric} was {value} in every epoch")
        return value
