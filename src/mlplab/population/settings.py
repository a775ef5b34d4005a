"""What a population does with the run settings it shares: every ``trainer.*``, ``callbacks.*``
and ``logger.*`` key means what it means for a stand-alone run, or is refused in one line.

Its Trainer is built as a stand-alone run's, so the keys Lightning reads mean the same. The
population does per member: ``limit_train_batches``, gradient clipping, and the callbacks: a
``ModelCheckpoint`` with a monitor picks each member's best weights; one without is the
population's own checkpoint (``resume=auto``); ``EarlyStopping`` stops members one by one;
``LearningCurves`` and ``DecisionBoundary`` draw the population's figures. ``REFUSED`` lists the
trainer keys it can't honour (the README's table); loggers are ``population.tracking``'s.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from mlplab.errors import ConfigError

# key → (the values a population takes, why)
REFUSED = {
    "trainer.devices": ((1, "1", "auto", None), "one device: the members already run in parallel"),
    "trainer.num_nodes": ((1, None), "one device: the members already run in parallel"),
    "trainer.strategy": (("auto", None), "one device: the members already run in parallel"),
    "trainer.precision": (("32-true", "32", 32, None), "members train in float32"),
    "trainer.accumulate_grad_batches": ((1, None), "every member steps each mini-batch"),
    "trainer.max_steps": ((-1, None), "count epochs (trainer.max_epochs)"),
    "trainer.min_steps": ((None, 0), "count epochs (trainer.min_epochs)"),
    "trainer.val_check_interval": ((None, 1, 1.0), "members validate at the end of epochs"),
    "trainer.overfit_batches": ((0, 0.0, None), "use trainer.limit_train_batches"),
    "trainer.fast_dev_run": ((False, 0, None), "use trainer.max_epochs=1"),
    "trainer.reload_dataloaders_every_n_epochs": ((0, None), "members' data is built once"),
}
FIGURES = "mlplab.figures.callbacks"  # by name: with figures off, no figure code is imported
CHECKPOINT_ARGS = {"dirpath", "filename", "monitor", "mode", "save_top_k", "verbose"}
CHECKPOINT_ARGS |= {"auto_insert_metric_name", "enable_version_counter"}
CHECKPOINT_ARGS |= {"save_on_train_epoch_end", "save_last"}
STOPPING_ARGS = {"monitor", "mode", "patience", "min_delta", "verbose", "strict", "check_finite"}
SWEEP_PRUNING = "mlplab.sweep.objective.trial_pruning"  # the sweep prunes members itself


@dataclass
class Settings:
    """What a population's config asks of it (after ``population_settings`` checked it)."""

    best: object = None  # a ModelCheckpoint with a monitor: ``module.Watch`` of members' best
    last: bool = False  # a ModelCheckpoint without one: the population's checkpoint (resume)
    stopping: object = None  # EarlyStopping: ``module.Stopping``, its patience per member at
    patience_key: str | None = None  # this key of each member's config
    curves: str | None = None  # LearningCurves' file name
    boundary: str | None = None  # DecisionBoundary's file name
    limit_train_batches: int | float = 1.0


def check_population_trainer(trainer: dict) -> None:
    """The trainer's keys a population can't honour (``REFUSED``): one ConfigError line."""
    for key, (allowed, why) in REFUSED.items():
        value = trainer.get(key.split(".", 1)[1])
        if value not in allowed:
            _refuse(key, value, f"{why}, e.g. {key}={allowed[0]}")


def population_settings(cfg: DictConfig) -> Settings:
    """The settings of a population of ``cfg``; a ConfigError naming the first key it can't
    honour."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from mlplab.population.module import Stopping, Watch

    honoured = {  # callback class → the arguments a population honours
        ModelCheckpoint: CHECKPOINT_ARGS,
        EarlyStopping: STOPPING_ARGS,
        f"{FIGURES}.LearningCurves": {"filename"},
        f"{FIGURES}.DecisionBoundary": {"filename"},
    }
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_population_trainer(trainer)
    limit = trainer.get("limit_train_batches")
    settings = Settings(limit_train_batches=1.0 if limit is None else limit)
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        node = OmegaConf.to_container(node, resolve=False)
        target = str(node.get("_target_", ""))
        if target == SWEEP_PRUNING:
            continue
        cls = _class(target)
        kind = next((c for c in honoured if cls is not None and _is(cls, c)), None)
        if kind is None:
            names = ", ".join(c if isinstance(c, str) else c.__name__ for c in honoured)
            _refuse(
                f"callbacks.{name}",
                target,
                f"a population honours {names}: set callbacks.{name}=null, or train the "
                "members one by one",
            )
        _check_arguments(f"callbacks.{name}", cls, node, honoured[kind])
        args = OmegaConf.to_container(cfg.callbacks[name], resolve=True)
        if issubclass(cls, ModelCheckpoint) and args.get("monitor"):
            if args.get("save_top_k", 1) != 1:
                _refuse(f"callbacks.{name}.save_top_k", args["save_top_k"], "1 (one best)")
            settings.best = Watch(
                args["monitor"], args.get("mode", "min"), key=f"callbacks.{name}.monitor"
            )
            settings.last = settings.last or bool(args.get("save_last"))
        elif issubclass(cls, ModelCheckpoint):
            settings.last = True
        elif issubclass(cls, EarlyStopping):
            settings.stopping = Stopping(
                args["monitor"],
                args.get("mode", "min"),
                key=f"callbacks.{name}.monitor",
                strict=bool(args.get("strict", True)),
                min_delta=float(args.get("min_delta", 0.0)),
                min_epochs=int(trainer.get("min_epochs") or 0),
            )
            settings.patience_key = f"callbacks.{name}.patience"
        elif kind == f"{FIGURES}.LearningCurves":
            settings.curves = args.get("filename", "learning_curves.png")
        else:
            settings.boundary = args.get("filename", "decision_boundary.png")
    return settings


def _is(cls: type, kind: type | str) -> bool:
    if not isinstance(kind, str):
        return issubclass(cls, kind)
    return any(f"{base.__module__}.{base.__qualname__}" == kind for base in cls.__mro__)


def _class(target: str) -> type | None:
    try:
        return get_class(target)
    except Exception:  # noqa: BLE001 — then it is not one a population honours
        return None


def _check_arguments(where: str, cls: type, node: dict, honoured: set[str]) -> None:
    """Arguments outside ``honoured`` must keep the class's default."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    for key, value in node.items():
        if key.startswith("_") or key in honoured:
            continue
        if key not in defaults or value != defaults[key]:
            _refuse(f"{where}.{key}", value, "not honoured by a population: leave it unset")


def _refuse(key: str, value, allowed: str) -> None:
    raise ConfigError(
        f"{key}={value!r} can't be used with a population (seeds=, cv=, population=): {allowed}"
    )
