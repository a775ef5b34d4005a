"""A training config's values, checked before Lightning is imported: a wrong value, a data file
that isn't there or a precision that can't run answers in about a second, in one line naming
the key (``mlplab.run.preflight`` calls ``check_values`` for every job).

These are the checks the objects make when they are built — the DataModule's arguments and its
data source, the MLP's and MLPModule's arguments, the optimizer's numbers and the shipped
schedulers' arguments, the trainer's numbers, what a population refuses, a logger's package
that isn't installed — called on the config's values first, without torch. What only the data
can tell (a column, a class count) or only a built optimizer (an argument of another class) is
checked when it is built.
"""

from __future__ import annotations

import importlib.util

from omegaconf import DictConfig, OmegaConf

from mlplab.errors import ConfigError, check

DATAMODULE = "mlplab.data.TabularDataModule"
MODEL = "mlplab.models.MLPModule"
# What Lightning runs (``trainer.precision``): float64, float32, and bf16/16 mixed or true.
PRECISIONS = ("64-true", "64", 64, "32-true", "32", 32, "bf16-mixed", "bf16-true", "bf16")
PRECISIONS += ("16-mixed", "16-true", "16", 16, None)
# Loggers whose package is an extra of mlplab (pyproject.toml): class name → (package, extra).
LOGGER_EXTRAS = {"MLFlowLogger": ("mlflow", "mlflow")}


def _int(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _limit(v) -> bool:  # Lightning's limit_*_batches: a count, or a fraction of the batches
    return _int(0)(v) or (isinstance(v, float) and 0.0 <= v <= 1.0)


# Trainer arguments Lightning takes without checking (max_epochs="abc" fails deep inside fit).
TRAINER_CHECKS = {
    "max_epochs": (lambda v: v is None or _int(-1)(v), "an integer >= 0 (-1 = no limit)"),
    "min_epochs": (lambda v: v is None or _int(0)(v), "an integer >= 0"),
    "max_steps": (_int(-1), "an integer >= 1 (-1 = no limit)"),
    "check_val_every_n_epoch": (lambda v: v is None or _int(1)(v), "an integer >= 1"),
    "log_every_n_steps": (_int(1), "an integer >= 1"),
    "num_sanity_val_steps": (_int(-1), "an integer >= 0 (-1 = all)"),
    "limit_train_batches": (lambda v: v is None or _limit(v), "a count >= 0 or a fraction"),
    "limit_val_batches": (lambda v: v is None or _limit(v), "a count >= 0 or a fraction"),
    "limit_test_batches": (lambda v: v is None or _limit(v), "a count >= 0 or a fraction"),
    "overfit_batches": (_limit, "a count >= 0 or a fraction"),
    "precision": (lambda v: v in PRECISIONS, f"one of {[p for p in PRECISIONS if p]}"),
}


def check_trainer(trainer: dict) -> None:
    """The trainer's values Lightning takes without checking them."""
    for key, (ok, allowed) in TRAINER_CHECKS.items():
        if key in trainer:
            check(ok(trainer[key]), f"trainer.{key}", trainer[key], allowed)


def check_loggers(cfg: DictConfig) -> None:
    """A logger whose package is not installed: one line naming the extra that brings it (not
    Lightning's ModuleNotFoundError after the run dir is made)."""
    for name, node in (cfg.get("logger") or {}).items():
        target = str((node or {}).get("_target_", ""))
        package, extra = LOGGER_EXTRAS.get(target.rpartition(".")[2], (None, None))
        if package is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logger={name} needs the {package} package: pip install 'mlplab[{extra}]'"
            )


def check_values(cfg: DictConfig) -> None:
    """Every value of ``cfg`` (a composed train config) that can be checked without Lightning;
    a ConfigError naming the first that is wrong."""
    check_loggers(cfg)
    trainer = _resolved(cfg, "trainer")
    if cfg.get("seeds") is not None or cfg.get("cv") is not None:
        from mlplab.population.members import check_population_args
        from mlplab.population.settings import check_population_trainer

        check_population_args(cfg)
        check_population_trainer(trainer)
    check_trainer(trainer)
    data = _resolved(cfg, "data")
    if data.get("_target_") == DATAMODULE:
        from mlplab.data.sources import check_source
        from mlplab.data.splits import check_cv_args, check_data_args

        fractions = data.get("val_fraction", 0.2), data.get("test_fraction", 0.2)
        check_data_args(data.get("batch_size", 64), *fractions, data.get("eval_batch_size", 4096))
        check_cv_args(data.get("cv_folds"), data.get("cv_fold"))
        check_source(data.get("source"), data.get("options") or {})
    model = _resolved(cfg, "model")
    if model.get("_target_") == MODEL:
        from mlplab.models.arguments import check_mlp, check_module, check_optimization_numbers

        hidden, activation = model.get("hidden_sizes") or [], model.get("activation", "relu")
        check_mlp(1, hidden, 1, activation, model.get("dropout", 0.0), model.get("layer", "torch"))
        clip = trainer.get("gradient_clip_val") or 0.0
        algorithm = trainer.get("gradient_clip_algorithm") or "norm"
        check_module(model.get("l1", 0.0), clip, algorithm, model.get("group_batches", "auto"))
        check_optimization_numbers(_resolved(cfg, "optimizer"), _resolved(cfg, "scheduler"))


def _resolved(cfg: DictConfig, key: str) -> dict:
    """``cfg[key]`` as plain data, each interpolation resolved where it can be before the run
    starts (``${trainer.max_epochs}`` yes, ``${hydra:runtime.output_dir}`` not: it stays as
    written, and nothing here checks it)."""
    node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    if not isinstance(node, DictConfig):
        return {}

    def walk(value, where: str):
        if isinstance(value, dict):
            return {k: walk(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            found = OmegaConf.select(cfg, where, throw_on_resolution_failure=False)
            if OmegaConf.is_config(found):
                found = OmegaConf.to_container(found, resolve=False)
            return value if found is None else found
        return value

    return walk(OmegaConf.to_container(node, resolve=False), key)
