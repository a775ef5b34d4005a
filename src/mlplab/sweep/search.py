"""The search file (``conf/hparams_search/NAME.yaml``, a config group of ``conf/sweep.yaml``):
its checks, the overrides a trial gets from it, the sampler and the pruner."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig, ListConfig

from mlplab.config import CONF_DIR
from mlplab.errors import ConfigError, check

SEARCH_DIR = Path(CONF_DIR) / "hparams_search"
SEARCH_KEYS = ("metric", "direction", "n_trials", "sampler", "pruner", "overrides", "params")
PARAM_KEYS = {"float": {"low", "high", "log"}, "int": {"low", "high", "log"}, "categorical": set()}


def available_searches() -> list[str]:
    return sorted(p.stem for p in SEARCH_DIR.glob("*.yaml"))


def did_you_mean(word: str, options, cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else ""


def check_search(search, name: str) -> DictConfig:
    """The composed search node (``hparams_search``), checked key by key."""
    check(isinstance(search, DictConfig), "hparams_search", name, "a mapping of search keys")
    for key in search:
        hint = did_you_mean(key, SEARCH_KEYS)
        check(key in SEARCH_KEYS, key, search[key], f"not a search key{hint}")
    direction, metric = search.get("direction"), search.get("metric")
    check(direction in ("minimize", "maximize"), "direction", direction, "minimize or maximize")
    check(bool(metric), "metric", metric, "a metric key, e.g. val/loss")
    n_trials = search.get("n_trials", 20)
    check(isinstance(n_trials, int) and n_trials >= 0, "n_trials", n_trials, "a whole number ≥ 0")
    overrides = search.get("overrides") or []
    ok = isinstance(overrides, list | ListConfig) and all(isinstance(o, str) for o in overrides)
    check(ok, "overrides", overrides, "a list of train overrides (key=value strings)")
    params = search.get("params") or {}
    check(isinstance(params, DictConfig), "params", params, "a mapping of key → distribution")
    for key, spec in params.items():
        _check_param(key, spec)
    return search


def _check_param(key: str, spec) -> None:
    """One search parameter: ``{type: float|int, low, high, log?}`` or
    ``{type: categorical, choices: [...]}``."""
    example = "e.g. {type: float, low: 1.0e-4, high: 0.1, log: true}"
    check(isinstance(spec, DictConfig), f"params.{key}", spec, f"a distribution, {example}")
    kind = spec.get("type")
    check(kind in PARAM_KEYS, f"params.{key}.type", kind, "float, int or categorical")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", *PARAM_KEYS[kind]}
    for name in spec:
        hint = did_you_mean(name, allowed)
        check(name in allowed, f"params.{key}.{name}", spec[name], f"not a {kind} key{hint}")
    if kind == "categorical":
        choices = spec.get("choices")
        ok = isinstance(choices, ListConfig) and len(choices) > 0
        check(ok, f"params.{key}.choices", choices, "a non-empty list")
        return
    low, high = spec.get("low"), spec.get("high")
    number = int if kind == "int" else (int, float)
    ok = all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high))
    check(ok and low < high, f"params.{key}", dict(spec), f"needs {kind} low < high")
    if spec.get("log"):
        check(low > 0, f"params.{key}.low", low, "> 0 for a log-scale range")


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
        overrides.append(f"{key}={override_value(value)}")
    return overrides


def override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)  # floats keep full precision; "[64,64]" is parsed by Hydra as a list


def check_group_choices(params: DictConfig) -> None:
    """A categorical parameter naming a config group (``optimizer``) must name its options."""
    for key, spec in params.items():
        group = Path(CONF_DIR, key.replace(".", "/"))
        if spec.type != "categorical" or not group.is_dir():
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for choice in spec.choices:
            hint = did_you_mean(choice, options)
            where = f"params.{key}.choices"
            check(str(choice) in options, where, choice, f"one of {options}{hint}")


def derive_seed(seed: int, worker: int, n_history: int) -> int:
    """The sampler seed of one worker of one run: distinct for each (search seed, worker index,
    trials already in the study), and the same for the same commands. (``seed + worker +
    n_history`` would give worker 1 of a fresh run the stream of worker 0 resumed after 1.)"""
    return int(np.random.SeedSequence([seed, worker, n_history]).generate_state(1)[0])


def make_sampler(
    spec: DictConfig, worker: int | None = None, n_history: int = 0
) -> optuna.samplers.BaseSampler:
    """``{name: tpe|random, seed: N|null}``; the seed becomes this worker's (``derive_seed``)."""
    name, seed = spec.get("name", "tpe"), spec.get("seed")
    check(name in ("tpe", "random"), "sampler.name", name, "tpe or random")
    ok = seed is None or (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0)
    check(ok, "sampler.seed", seed, "a whole number ≥ 0 or null")
    if seed is not None:
        seed = derive_seed(seed, worker or 0, n_history)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: DictConfig | None) -> optuna.pruners.BasePruner:
    spec = dict(spec or {"name": "none"})
    name = spec.pop("name", "median")
    check(name in ("median", "none"), "pruner.name", name, "median or none")
    if name == "none":
        return optuna.pruners.NopPruner()
    known = list(inspect.signature(optuna.pruners.MedianPruner).parameters)
    for key in spec:
        check(key in known, f"pruner.{key}", spec[key], f"one of {known}{did_you_mean(key, known)}")
    try:
        return optuna.pruners.MedianPruner(**spec)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pruner={spec} is invalid: {err}") from None
