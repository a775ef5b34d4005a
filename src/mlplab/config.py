"""Run-level config schema, resolvers, and the one way to compose a config outside ``@hydra.main``.

The schema types the top-level keys (``seed: int`` …) so ``seed=abc`` or a misspelt key fails
at compose time, before anything runs. Groups (data, model, …) stay free-form: their
constructors validate their own values and name the key when one is wrong.

``compose_config`` is what tests, scripts, the sweep and the command-line checks use to build
exactly the config ``mlplab-train`` would; ``portable_yaml`` writes a config that re-runs into
a new run dir. Importing this module is cheap (no torch, no Lightning).
"""

from __future__ import annotations

import copy
import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, ValueNode, open_dict, read_write
from omegaconf._utils import OmegaConfDumper
from omegaconf.errors import OmegaConfBaseException

from mlplab.run.parses import cache_interpolation_parses, to_plain

# The configs ship inside the package, so a wheel or a git-URL install has them too
# (``conf/`` at the top of the repository is a link to this folder).
CONF_DIR = str(resources.files("mlplab") / "conf")
# What identifies one run rather than describes it: a saved config keeps these as
# interpolations, so running it again makes a new run dir instead of writing into the old one.
RUN_IDENTITY = {
    "paths.output_dir": "${hydra:runtime.output_dir}",
    "run_name": "${run_id:}",
}


@dataclass
class TrainConfig:
    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None
    callbacks: Any = None
    logger: Any = None
    trainer: Any = MISSING
    paths: Any = MISSING
    task_name: str = "train"
    run_name: str = MISSING
    seed: int = 42
    seeds: Any = None  # N: train seeds seed, seed+1, ..., seed+N-1 as one population
    cv: Any = None  # K: K-fold cross-validation, the K folds as one population (mlplab.cv)
    threads: Any = "auto"
    print_config: bool = True
    ckpt_path: str | None = None
    resume: str | None = None
    test: bool = True


@dataclass
class SweepConfig:
    """``conf/sweep.yaml``: the arguments of ``mlplab-sweep`` (see ``mlplab-sweep --help``)."""

    hparams_search: Any = None  # the search: a conf/hparams_search option, or a yaml path
    n_trials: int | None = None
    workers: int = 1
    storage: str | None = None
    study_name: str | None = None
    sweep_dir: str | None = None
    launcher: str = "processes"
    slurm: dict[str, Any] = field(default_factory=dict)
    worker: int | None = None  # set on the processes `workers=N` starts
    population: Any = None  # K: ask K trials at a time and train them as one population


def run_id() -> str:
    """``YYYY-mm-dd_HH-MM-SS_<6 hex>``: unique even for runs started in the same second.

    Fixed for the life of the process (and its DDP children, through the environment), so
    every interpolation of it in one run agrees.
    """
    rid = os.environ.get("MLPLAB_RUN_ID")
    if not rid:
        rid = f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"
        os.environ["MLPLAB_RUN_ID"] = rid
    return rid


def wandb_offline() -> bool:
    """wandb stays offline (no network, no prompt) unless ``WANDB_MODE=online``."""
    return os.environ.get("WANDB_MODE", "offline") != "online"


def compose_config(
    config_name: str = "train",
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    return_hydra_config: bool = False,
) -> DictConfig:
    """The config ``mlplab-train OVERRIDES`` would run, composed with Hydra's compose API.

    Args:
        config_name: primary config (``train``, ``eval``, ``predict``, or one in ``config_dir``).
        overrides: command-line overrides, e.g. ``["data=moons", "optimizer.lr=0.01"]``.
        config_dir: an extra config folder searched first (``--config-dir``), e.g. a run dir
            holding a saved ``config.yaml``.
        return_hydra_config: keep the ``hydra`` node (run dir, launcher, ...).
    """
    primary = str(Path(config_dir).resolve()) if config_dir else CONF_DIR
    extra = [f"hydra.searchpath=[file://{CONF_DIR}]"] if config_dir else []
    with initialize_config_dir(primary, version_base="1.3"):
        return compose(
            config_name,
            overrides=[*overrides, *extra],
            return_hydra_config=return_hydra_config,
        )


# A run started by a script, a test or a notebook: CSV logging only, no progress bar, CPU.
QUIET = (
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)


def compose_run(output_dir: str | Path, *overrides: str, quiet: bool = True) -> DictConfig:
    """The train config of a run writing into ``output_dir`` (``QUIET`` first unless
    ``quiet=False``, then ``overrides``): what scripts and tests pass to ``train(cfg)``."""
    head = [f"paths.output_dir={output_dir}", *(QUIET if quiet else ())]
    return compose_config("train", [*head, *overrides])


def portable_data(cfg: DictConfig) -> dict:
    """``cfg`` resolved as plain data, except ``RUN_IDENTITY``: run dir and run name stay
    interpolations, and so does every value derived from them (a callback's dirpath →
    ``${paths.output_dir}/checkpoints``). The same for every run of one config."""
    if "hydra" in cfg:  # a job's config: resolve a copy without Hydra's node
        cfg = copy.deepcopy(cfg)
        with read_write(cfg), open_dict(cfg):
            cfg.pop("hydra")
    # Resolve with placeholders for the identity keys, then turn every use of a placeholder
    # back into a reference to its key. The placeholders go into ``cfg`` itself and come out
    # again (a copy of a whole config costs more than resolving it: ~3 ms a run).
    sentinels = {f"__mlplab_keep_{i}__": key for i, key in enumerate(RUN_IDENTITY)}
    with _placeholders(cfg, sentinels):
        data = to_plain(cfg, enum_to_str=True)
    data = _keep_references(data, sentinels)
    for key, value in RUN_IDENTITY.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    return data


_ABSENT = object()


@contextmanager
def _placeholders(cfg: DictConfig, sentinels: dict[str, str]) -> Iterator[None]:
    """Inside the block each key of ``sentinels`` holds its placeholder; after it, its own
    value again. Where every key is a plain value node, the nodes' values are swapped (~20 µs);
    otherwise (a key absent, a container, a typed node refusing text) through OmegaConf."""
    nodes = [_leaf(cfg, key) for key in sentinels.values()]
    if all(isinstance(node, ValueNode) for node in nodes):
        saved, done = [node._value() for node in nodes], 0
        try:
            for node, sentinel in zip(nodes, sentinels, strict=True):
                node._set_value(sentinel)
                done += 1
        except OmegaConfBaseException:  # read-only, or a type the text doesn't fit
            pass
        try:
            if done == len(nodes):
                yield
                return
        finally:
            for node, value in zip(nodes[:done], saved, strict=False):
                node._set_value(value)
    saved = {key: _raw_value(cfg, key) for key in RUN_IDENTITY}
    try:
        with read_write(cfg), open_dict(cfg):
            for sentinel, key in sentinels.items():
                OmegaConf.update(cfg, key, sentinel, force_add=True)
        yield
    finally:
        with read_write(cfg), open_dict(cfg):
            for key, value in saved.items():
                *parents, last = key.split(".")
                node = OmegaConf.select(cfg, ".".join(parents)) if parents else cfg
                if value is _ABSENT:
                    node.pop(last, None)
                else:
                    node[last] = value


def _leaf(cfg: DictConfig, key: str):
    """The node at dotted ``key``, or None."""
    node = cfg
    for part in key.split("."):
        node = node._get_node(part, validate_access=False) if isinstance(node, DictConfig) else None
        if node is None:
            return None
    return node


def _raw_value(cfg: DictConfig, key: str):
    """The value at dotted ``key`` as written (an interpolation stays ``${...}``), or _ABSENT."""
    node = _leaf(cfg, key)
    return _ABSENT if node is None else node._value()


class _Dumper(getattr(yaml, "CDumper", yaml.Dumper)):
    """What ``OmegaConf.to_yaml`` writes (strings that read as numbers or booleans quoted),
    with libyaml's emitter where there is one."""


_Dumper.add_representer(str, OmegaConfDumper.str_representer)


def portable_yaml(cfg: DictConfig, header: str = "", data: dict | None = None) -> str:
    """``cfg`` as a primary config that re-runs with
    ``mlplab-train --config-dir <its folder> --config-name <its name>``: ``portable_data``
    (pass it as ``data`` if already made), so later edits of ``conf/`` can't change what it
    means, and a re-run gets its own run dir."""
    data = portable_data(cfg) if data is None else data
    defaults = "defaults:\n  - train_schema\n  - hydra: default\n  - _self_\n\n"
    return header + defaults + "".join(_yaml_entry(key, value) for key, value in data.items())


_ENTRIES: dict[tuple[str, str], str] = {}


def _yaml_entry(key: str, value) -> str:
    """``yaml.dump({key: value})``: a top-level entry of a block-style mapping is written
    alone, so the entries joined are the whole dump. Kept by ``repr`` (which tells 1, 1.0,
    True and "1" apart): a population's members share most of theirs (~1 ms a member)."""
    memo = (key, repr(value))
    if memo not in _ENTRIES:
        if len(_ENTRIES) > 512:
            _ENTRIES.clear()
        _ENTRIES[memo] = yaml.dump(
            {key: value},
            default_flow_style=False,
            allow_unicode=True,
            sort_keys=False,
            Dumper=_Dumper,
        )
    return _ENTRIES[memo]


def _keep_references(value, sentinels: dict[str, str]):
    if isinstance(value, dict):
        return {k: _keep_references(v, sentinels) for k, v in value.items()}
    if isinstance(value, list):
        return [_keep_references(v, sentinels) for v in value]
    if isinstance(value, str):
        for sentinel, key in sentinels.items():
            value = value.replace(sentinel, "${" + key + "}")
    return value


cache_interpolation_parses()  # every member of a population resolves the same strings
OmegaConf.register_new_resolver("run_id", run_id, replace=True)
OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
ConfigStore.instance().store(name="train_schema", node=TrainConfig)
ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)
