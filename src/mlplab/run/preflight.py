"""Check a command line before Hydra starts: config mistakes answer fast, in one line.

``@hydra.main`` writes ``.hydra/`` into the run dir before the task runs, and reports its own
errors (an unknown option, a misspelt key, a missing value) in several lines with exit code 1.
So each entry point first composes its command line with the compose API — cheap: no torch,
no Lightning — and turns every mistake into one ``ConfigError`` naming the closest valid name:

- ``optimizer=adm``        → optimizer=adm is not an option; did you mean optimizer=adam?
- ``model.hidden_size=[8]`` → model.hidden_size is not a key of model; did you mean hidden_sizes?
- a wrong type, bad override syntax, a required value left out (``???``) → the key named;
- (train) a launcher that can't run here, DDP inside a multirun, a run dir that already holds
  another run or that a live process is writing.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from mlplab.config import CONF_DIR, compose_config
from mlplab.errors import ArgumentParser, ConfigError, first_line
from mlplab.run.rundir import check_run_dir, check_sweep_dir, saved_run_dir
from mlplab.run.values import check_values


@dataclass
class CommandLine:
    """What ``argv`` asks Hydra for."""

    config_name: str
    config_dir: str | None = None
    overrides: list[str] = field(default_factory=list)
    multirun: bool = False
    prints_only: bool = False  # --help, --cfg, --info …: Hydra prints something, nothing runs


def _parser() -> argparse.ArgumentParser:
    """The flags ``@hydra.main`` takes (Hydra's own parser is not public), parsed alike."""
    parser = ArgumentParser(add_help=False)
    parser.add_argument("overrides", nargs="*")
    switches = (
        "--help -h|--hydra-help|--version|--resolve|--run -r|--multirun -m|--shell-completion -sc"
    )
    for names in switches.split("|"):
        parser.add_argument(*names.split(), action="store_true")
    for names in "--package -p|--config-path -cp|--config-name -cn|--config-dir -cd".split("|"):
        parser.add_argument(*names.split())
    parser.add_argument("--experimental-rerun")
    parser.add_argument("--cfg", "-c", choices=["job", "hydra", "all"])
    info = ["all", "config", "defaults", "defaults-tree", "plugins", "searchpath"]
    parser.add_argument("--info", "-i", nargs="?", const="all", choices=info)
    return parser


def import_from_here() -> None:
    """Modules in the folder a command runs from import, as with ``python -m``: a model of
    one's own (``_target_: my_model.LitMLP``) trains, evaluates and predicts from its folder.
    Console scripts don't put that folder on ``sys.path``; it goes last, so it shadows
    nothing installed."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with Hydra's flags before the overrides, which is the only order Hydra's parser
    takes: ``mlplab-train optimizer=sgd,adam -m`` then works like ``-m optimizer=sgd,adam``."""
    argv = list(argv)
    try:
        _parser().parse_args(argv)
        return argv
    except ConfigError:
        pass
    try:
        args = _parser().parse_intermixed_args(argv)
    except (ConfigError, TypeError):  # TypeError: argparse can't intermix this parser
        return argv
    overrides = list(args.overrides)
    flags = list(argv)
    for override in overrides:
        flags.remove(override)
    return [*flags, *overrides]


def parse_command_line(argv: Sequence[str], config_name: str) -> CommandLine:
    """Hydra's own argument parser on ``argv`` (in Hydra's order, see ``normalize_argv``)."""
    args = _parser().parse_args(list(argv))
    prints = (args.help, args.hydra_help, args.version, args.cfg, args.info, args.shell_completion)
    return CommandLine(
        config_name=args.config_name or config_name,
        config_dir=args.config_dir,
        overrides=list(args.overrides),
        multirun=bool(args.multirun),
        prints_only=any(prints) or bool(args.experimental_rerun),
    )


def preflight(argv: Sequence[str], config_name: str, train: bool = False) -> list[DictConfig]:
    """Compose what ``argv`` (without the program name) would run, one config per distinct job
    of ``config_name`` (``train``, ``eval``, ``predict``), or raise a ConfigError; ``train``: also
    check what only a training run needs (launcher, DDP, run dir)."""
    line = parse_command_line(argv, config_name)
    configs = [compose_checked(line, job) for job in job_overrides(line.overrides, line.multirun)]
    if line.prints_only:
        return configs
    for cfg in configs:
        check_required(cfg)
    if train and configs:
        check_train(configs, line.multirun)
        for cfg in configs:  # the values, before Lightning is imported
            check_values(cfg)
    return configs


# ---- resume -------------------------------------------------------------------------------
IDENTITY = ("hydra", "paths", "run_name", "resume")  # what says where a run is, not what it is
POPULATION = ("seeds", "cv")


def expand_resume(argv: Sequence[str]) -> list[str]:
    """``resume=<run dir>``, or ``resume=auto`` with a run dir that already holds a run: that
    run's saved ``config.yaml`` again, in that dir, so it continues with what it was started
    with (``mlplab-train resume=auto run_name=long`` needs none of the first command's
    overrides). Overrides given too apply on top of it (``trainer.max_epochs=50``); a config
    group given again (``experiment=…``, e.g. a requeued SLURM job's command) must ask for
    what the run has, else a ConfigError names the key. Other command lines come back as
    they are (``resume=auto`` for a fresh run dir starts it; a multirun resumes its jobs)."""
    argv = list(argv)
    line = parse_command_line(argv, "train")
    given = [o for o in line.overrides if o.startswith("resume=")]
    if not given or line.multirun or line.config_dir or line.prints_only:
        return argv
    value = given[-1].split("=", 1)[1]
    others = [o for o in line.overrides if not o.startswith("resume=")]
    if value in ("null", "auto"):
        run_dir = _run_dir(compose_checked(line, line.overrides)) if value == "auto" else None
        if run_dir is None or not (run_dir / "config.yaml").is_file():
            return argv
    else:
        allowed = "'auto' (continue this run_name's dir if it holds a run) or a run dir"
        run_dir = saved_run_dir("resume", value, allowed)
    run_dir = run_dir.resolve()
    groups = [o for o in others if _is_group(o)]
    values = [o for o in others if o not in groups and _key_of(o) not in IDENTITY]
    name, where = _quoted(run_dir.name), _quoted(str(run_dir))
    overrides = [*values, f"run_name={name}", f"hydra.run.dir={where}", "resume=auto"]
    has = compose_checked(CommandLine("config", str(run_dir), overrides), overrides)
    saved = OmegaConf.load(run_dir / "config.yaml")
    for key in POPULATION:  # what the run is: one run, or a population of seeds or folds
        if saved.get(key) != has.get(key):
            raise ConfigError(
                f"{key}={has.get(key)} is invalid here: the run in {run_dir} has "
                f"{key}={saved.get(key)}, and resume continues a run as it was started; drop "
                f"{key}=, or start a new run"
            )
    if groups:
        _check_groups(line, groups, values, has, run_dir)
    flags = [a for a in argv if a not in line.overrides]
    return [*flags, "--config-dir", str(run_dir), "--config-name", "config", *overrides]


def _run_dir(cfg: DictConfig) -> Path | None:
    """Where ``cfg`` (composed with its hydra node) would run."""
    output_dir = OmegaConf.to_container(cfg.paths, resolve=False).get("output_dir", "")
    if "${hydra:" not in str(output_dir):
        return Path(cfg.paths.output_dir)
    run_dir = OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=False)
    return Path(run_dir) if run_dir else None


def _is_group(override: str) -> bool:
    """``data=moons``, ``experiment=…``: an override that picks a config of mlplab's groups."""
    key = _key_of(override).split("@")[0]
    return "." not in key and key != "hydra" and (Path(CONF_DIR) / key).is_dir()


def _quoted(text: str) -> str:
    """``text`` as one quoted value of Hydra's override grammar."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_groups(line, groups, values, resumed: DictConfig, run_dir: Path) -> None:
    """Each key that the config groups of ``groups`` set must hold the resumed run's value."""
    composed = compose_checked(line, [*values, *groups])
    asked = _leaves(composed)
    without = _leaves(compose_checked(line, []))  # values may need a group: not values alone
    has = _leaves(resumed)
    nodes = {_key_of(g).split("@")[0] for g in groups}  # data=…: all of data.*
    for key, value in asked.items():
        top = key.split(".")[0]
        if top in IDENTITY or (top not in nodes and without.get(key, _NONE) == value):
            continue
        if has.get(key, _NONE) != value and not _resolves_to(composed, key, has.get(key, _NONE)):
            raise ConfigError(
                f"{' '.join(groups)} sets {key}={value!r}, but the run in {run_dir} has "
                f"{key}={has.get(key)!r}: resume continues a run with its saved config; drop "
                f"{' '.join(groups)}, or start a new run"
            )


_NONE = object()


def _resolves_to(cfg: DictConfig, key: str, saved) -> bool:
    """Whether ``key`` of ``cfg`` resolves to the value the run saved: its ``config.yaml``
    holds values, resolved when it started (``${wandb_offline:}`` → ``true``)."""
    try:
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=True) == saved
    except OmegaConfBaseException:  # it needs what only a started run has (Hydra's runtime)
        return False


def _leaves(node, prefix: str = "") -> dict:
    """A config as dotted key → value (lists are values), interpolations as written."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=False)
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---- overrides ----------------------------------------------------------------------------
def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to compose: one for a single run; for a multirun the first job plus
    one job per other value of each swept key (every value gets composed once)."""
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as err:
            raise ConfigError(f"{text!r} is invalid: {first_line(err)}") from None
    sweeps = [p for p in parsed if p.is_sweep_override()]
    if sweeps and not multirun:
        raise ConfigError(
            f"{sweeps[0].input_line} lists several values: add -m (--multirun) to run one "
            "job per value"
        )
    base, swept = [], []
    for p in parsed:
        if not p.is_sweep_override():
            base.append(p.input_line)
            continue
        try:
            values = [f"{p.get_key_element()}={v}" for v in p.sweep_string_iterator()]
        except Exception:  # noqa: BLE001 — e.g. glob(): Hydra expands it itself
            values = []
        if values:
            base.append(values[0])
            swept.append(values)
    jobs = [base]
    for values in swept:
        jobs += [[value if o == values[0] else o for o in base] for value in values[1:]]
    return jobs


# ---- composing, with Hydra's errors explained ----------------------------------------------
def compose_checked(line: CommandLine, overrides: list[str]) -> DictConfig:
    """``compose_config`` (with the hydra node); any failure becomes one ConfigError."""
    try:
        return compose_config(
            line.config_name, overrides, config_dir=line.config_dir, return_hydra_config=True
        )
    except MissingConfigException as err:
        raise ConfigError(_missing_option(err, line)) from None
    except ConfigCompositionException as err:
        raise ConfigError(_composition(err, line, overrides)) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"{key or 'the config'}: {first_line(err)}") from None


def _missing_option(err: MissingConfigException, line: CommandLine) -> str:
    missing = err.missing_cfg_file or ""
    group, _, choice = missing.rpartition("/")
    if not group or not err.options:
        where = line.config_dir or "mlplab's conf/"
        return f"there is no config named {line.config_name!r} (looked in {where})"
    options = sorted(err.options)
    close = difflib.get_close_matches(choice, options, n=1, cutoff=0.5)
    guess = f"did you mean {group}={close[0]}? " if close else ""
    return f"{group}={choice} is not an option: {guess}(options: {', '.join(options)})"


def _composition(err: ConfigCompositionException, line: CommandLine, overrides) -> str:
    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and key:
        return _unknown_key(key, line, overrides)
    if isinstance(cause, ValidationError) and key:
        given = next((o for o in overrides if _key_of(o) == key), key)
        return f"{given} is invalid: {first_line(cause)}"
    return first_line(err)


def _unknown_key(key: str, line: CommandLine, overrides: list[str]) -> str:
    parent, _, leaf = key.rpartition(".")
    where = f"a key of {parent}" if parent else "a config key"
    known, below = [], []  # below: one level down, max_epochs → trainer.max_epochs
    try:  # the same config without the offending override: what keys are there?
        rest = [o for o in overrides if _key_of(o) != key]
        cfg = compose_config(line.config_name, rest, config_dir=line.config_dir)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        known = _keys(node)
        below = [f"{k}.{leaf}" for k in known if leaf in _keys(node.get(k))]
    except Exception:  # noqa: BLE001 — then no suggestion, the message still stands
        pass
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    prefix = f"{parent}." if parent else ""
    if below or close:
        hint = f"did you mean {' or '.join(prefix + k for k in below or close)}?"
    elif known:
        hint = f"its keys: {', '.join(sorted(known))}"
    else:
        hint = "check the spelling"
    return f"{key} is not {where}: {hint} (to add a new key on purpose: +{key}=...)"


def _keys(node) -> list[str]:
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _key_of(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


# ---- checks on the composed config --------------------------------------------------------
def check_required(cfg: DictConfig) -> None:
    """Every ``???`` value outside the hydra node must be set."""
    missing = [k for k in _missing_keys(cfg) if not k.startswith("hydra.")]
    if missing:
        which = ", ".join(missing)
        verb, it = ("is", "it") if len(missing) == 1 else ("are", "them")
        example = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"{which} {verb} required: set {it} on the command line ({example})")


def _missing_keys(node: DictConfig | ListConfig, prefix: str = "") -> list[str]:
    """Dotted keys whose value is ``???``. Unlike ``OmegaConf.missing_keys`` this resolves
    nothing, so ``${hydra:runtime.output_dir}`` (unset before a run starts) is no problem."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    found = []
    for key in keys:
        name = f"{prefix}{key}"
        if OmegaConf.is_interpolation(node, key):
            continue
        if OmegaConf.is_missing(node, key):
            found.append(name)
            continue
        child = node[key]
        if isinstance(child, DictConfig | ListConfig):
            found.extend(_missing_keys(child, f"{name}."))
    return found


def check_train(configs: list[DictConfig], multirun: bool) -> None:
    """Launcher, DDP and run dir checks of a training command line."""
    cfg = configs[0]
    resume = cfg.get("resume")
    if resume not in (None, "auto"):
        raise ConfigError(f"resume={resume!r} is invalid: 'auto' or a run dir")
    if multirun:
        for job in configs:
            _check_no_ddp(job)
        _check_launcher(cfg)
    output_dir = OmegaConf.to_container(cfg.paths, resolve=False).get("output_dir", "")
    fixed = "${hydra:" not in str(output_dir)
    if multirun and fixed:
        raise ConfigError(
            f"paths.output_dir={cfg.paths.output_dir!r} is fixed, so every job of this "
            "multirun would write into that one dir: leave it unset (jobs get <sweep dir>/<n>)"
        )
    if fixed:
        check_run_dir(cfg.paths.output_dir, resume)
    elif multirun:
        check_sweep_dir(OmegaConf.select(cfg, "hydra.sweep.dir"), resume)
    else:
        check_run_dir(OmegaConf.select(cfg, "hydra.run.dir"), resume)


def _check_no_ddp(cfg: DictConfig) -> None:
    """DDP relaunches ``sys.argv`` for its other ranks; inside ``--multirun`` that re-runs the
    whole sweep in each child (silently wrong). Sweeps use one device per trial."""
    strategy = str(cfg.trainer.get("strategy") or "auto")
    devices, nodes = cfg.trainer.get("devices"), cfg.trainer.get("num_nodes") or 1
    if "ddp" in strategy and not (devices == 1 and nodes == 1):
        raise ConfigError(
            f"trainer.strategy={strategy!r} is invalid: DDP can't run inside --multirun (each "
            "rank would re-run the sweep): use one device per trial, e.g. trainer=cpu or "
            "trainer=gpu"
        )


def _check_launcher(cfg: DictConfig) -> None:
    target = str(OmegaConf.select(cfg, "hydra.launcher._target_") or "")
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None:
        raise ConfigError(
            "hydra/launcher=slurm needs SLURM, but sbatch is not on this machine's PATH: "
            "run the jobs here with hydra/launcher=local (in parallel) or without "
            "hydra/launcher (one after another)"
        )
