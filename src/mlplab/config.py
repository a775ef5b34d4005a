"""Run-level config schema, resolvers, and the one way to compose a config outside ``@hydra.main``.

The schema types the top-level keys (``seed: int`` …) so ``seed=abc`` or a misspelt key fails
at compose time, before anything runs. Groups (data, model, …) stay free-form: their
constructors validate their own values and name the key when one is wrong.

``compose_config`` is what tests, scripts, the sweep and the command-line checks use to build
exactly the config ``mlplab-train`` would; ``portable_yaml`` writes a config that re-runs into
a new run dir. Importing this module is cheap (no torch, no Lightning).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict, read_write

# The configs ship inside the package, so a wheel or a git-URL install has them too
# (``conf/`` at the top of the repository is a link to this folder).
CONF_DIR = str(resources.files("mlplab") / "conf")
# What identifies one run rather than describes it: a saved config keeps these as
# interpolations, so running it again makes a new run dir instead of writing into the old one.
RUN_IDENTITY = {"paths.output_dir": "${hydra:runtime.output_dir}", "run_name": "${run_id:}"}


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
    print_config: bool = False
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
    """``YYYY-mm-dd_HH-MM-SS_<6 hex>``, unique even within a second; fixed for the process (and
    its DDP children, through the environment), so every interpolation of it in one run agrees."""
    rid = os.environ.get("MLPLAB_RUN_ID")
    if not rid:
        rid = f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"
        os.environ["MLPLAB_RUN_ID"] = rid
    return rid


def wandb_offline() -> bool:
    """wandb stays offline (no network, no prompt) unless ``WANDB_MODE=online``."""
    return os.environ.get("WANDB_MODE", "offline") != "online"


def abspath(path: str) -> str:
    """``path`` made absolute against the folder the command runs from: a URI built from it
    (``sqlite:///${abspath:${paths.log_dir}}/mlflow.db``) names the same file from anywhere."""
    return os.path.abspath(os.path.expanduser(path))


def compose_config(
    config_name: str = "train",
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    return_hydra_config: bool = False,
) -> DictConfig:
    """The config ``mlplab-train OVERRIDES`` would run (or ``mlplab-eval``, ``mlplab-predict``:
    ``config_name``), composed with Hydra's compose API. ``config_dir``: an extra config folder
    searched first, as ``--config-dir`` (a run dir holding a saved ``config.yaml``)."""
    primary, extra = CONF_DIR, []
    if config_dir:  # as Hydra's --config-dir: searched first, mlplab's conf/ still found
        here = Path(config_dir).resolve()
        if (here / f"{config_name}.yaml").is_file():  # a run dir's config.yaml
            primary, extra = str(here), [f"hydra.searchpath=[file://{CONF_DIR}]"]
        else:  # a folder of one's own groups (model/mine.yaml)
            extra = [f"hydra.searchpath=[file://{here}]"]
    with initialize_config_dir(primary, version_base="1.3"):
        return compose(
            config_name, overrides=[*overrides, *extra], return_hydra_config=return_hydra_config
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


def portable_data(cfg: DictConfig, keep: Iterable[str] = ()) -> dict:
    """``cfg`` (without a ``hydra`` node) resolved as plain data, except what must stay a
    reference to re-run it: ``RUN_IDENTITY`` (so a re-run gets a new dir) and every value derived
    from those, from ``seed`` (``data.seed: ${seed}``: a re-run with ``seed=7`` also splits with
    7) or from a key in ``keep`` (a population's member keys). The data's file paths are made
    absolute, so the config reads that data from any folder.

    The identity keys hold a placeholder while the rest resolves (a ``${hydra:...}`` run dir
    resolves only inside a Hydra run), then their references are put back."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    present = [key for key in RUN_IDENTITY if get_key(raw, key) is not ABSENT]
    with read_write(cfg), open_dict(cfg):
        try:
            for key in present:
                OmegaConf.update(cfg, key, "__run_identity__")
            data = OmegaConf.to_container(cfg, resolve=True)
        finally:
            for key in present:
                OmegaConf.update(cfg, key, get_key(raw, key))
    for key in derived(raw, {*RUN_IDENTITY, "seed", *keep}):
        set_key(data, key, get_key(raw, key))
    for key, value in RUN_IDENTITY.items():
        set_key(data, key, value)
    from mlplab.data.sources import resolve_paths  # pandas: imported when a run records

    resolve_paths(data.get("data"))
    return data


ABSENT = object()  # get_key: no such key
_REFERENCE = re.compile(r"\$\{([^{}]*)\}")
_NAME = re.compile(r"\.*[A-Za-z_][\w.]*")


def derived(raw: dict, keys: Iterable[str]) -> list[str]:
    """The dotted keys of ``raw`` (an unresolved config) whose value is an interpolation that
    references one of ``keys`` (a key, a node above it or a value below it), directly or
    through other interpolations."""
    leaves = {key: refs for key, refs in _references(raw, "") if refs}
    found: set[str] = set()
    wanted = set(keys)
    while True:
        new = {
            key
            for key, refs in leaves.items()
            if key not in found and any(_related(r, w) for r in refs for w in wanted)
        }
        if not new:
            return sorted(found)
        found |= new
        wanted |= new


def _references(node, prefix: str):
    """(dotted key, the absolute keys its interpolations name) of every leaf."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, dict | list):
            yield from _references(value, f"{name}.")
        elif isinstance(value, str) and "${" in value:
            refs = set()
            for inner in _REFERENCE.findall(value):
                _, _, args = inner.rpartition(":")  # a resolver's arguments, or the key
                for token in _NAME.findall(args):
                    refs.add(_absolute(token, prefix))
            yield name, refs


def _absolute(token: str, prefix: str) -> str:
    """``${..a.b}`` is relative to the node holding it: its absolute key."""
    dots = len(token) - len(token.lstrip("."))
    if not dots:
        return token
    parents = prefix.rstrip(".").split(".") if prefix else []
    return ".".join([*parents[: len(parents) - dots + 1], token[dots:]])


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


def get_key(data, key: str, default=ABSENT):
    """``data``'s value at a dotted ``key`` (list items by index), or ``default``."""
    for part in key.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return default
    return data


def flatten(data: dict, prefix: str = "") -> dict:
    """``{"optimizer": {"lr": 0.01}}`` → ``{"optimizer.lr": 0.01}`` (lists stay values)."""
    out: dict = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def set_key(data, key: str, value) -> None:
    """Set ``data``'s dotted ``key``; a missing or null parent becomes a dict."""
    *parents, last = key.split(".")
    for part in parents:
        if isinstance(data, list):
            data = data[int(part)]
        else:
            if not isinstance(data.get(part), dict | list):
                data[part] = {}
            data = data[part]
    data[int(last) if isinstance(data, list) else last] = value


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """YAML that OmegaConf reads back as written: a string that OmegaConf's loader would read
    as a number or a bool (``1e-3``, ``"true"``, ``"1"``) is quoted."""


_LOOKS_TYPED = re.compile(
    r"[-+]?(\d[\d_]*)?\.?\d*([eE][-+]?\d+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
    r"|0x[0-9a-fA-F_]+|0o?[0-7_]+|(?i:y|yes|n|no|true|false|on|off|null|~)|"
)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if _LOOKS_TYPED.fullmatch(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def portable_yaml(data: dict, header: str = "") -> str:
    """``data`` (``portable_data`` of a config) as a primary config that re-runs with
    ``mlplab-train --config-dir <its folder> --config-name <its name>``: resolved, so later
    edits of ``conf/`` can't change what it means, and a re-run gets its own run dir."""
    defaults = "defaults:\n  - train_schema\n  - hydra: default\n  - _self_\n\n"
    body = yaml.dump(
        data, Dumper=_Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False
    )
    return header + defaults + body


OmegaConf.register_new_resolver("run_id", run_id, replace=True)
OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
OmegaConf.register_new_resolver("abspath", abspath, replace=True)
ConfigStore.instance().store(name="train_schema", node=TrainConfig)
ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)
