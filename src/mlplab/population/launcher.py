"""``hydra/launcher=population``: a multirun's jobs trained as populations, not one by one.

    mlplab-train -m hydra/launcher=population data=moons optimizer.lr=0.001,0.01,0.1 seed=0,1,2

trains the 9 jobs as ONE population (``train_population``: one process, stacked weights).
Each job is composed as Hydra's basic launcher composes it (its ``hydra.job.num``, its dir
``<sweep dir>/<job num>``, its ``${hydra:...}`` values) and ends as a normal job dir
(``.hydra/``, config, metrics or ``error.txt``), so ``SweepSummary`` writes the sweep's
``summary.csv`` as for any launcher; population i's own files are in ``population_<i>/``.
Jobs equal outside what members may differ in (``check_stackable``'s rule) form populations
of at most ``hydra.launcher.max_members`` that fit in memory (``population.chunks``), trained
one after another, never mixed; jobs with what a population can't do yet (``NOT_YET``) run
one by one as plain jobs. A failed job is reported as ``mlplab-train`` reports one in a
multirun: its ``error.txt``, an ``error: job N: ...`` line and a COMPLETED JobReturn holding
None (a FAILED one makes Hydra's sweeper re-raise it: a traceback, no summary). Bad input
for the whole sweep (``trainer.devices=2``, ``seeds=N``, ``ckpt_path=``) is one ``error:``
line before anything trains (its sweep dir removed). ``resume=auto`` continues each
population from its checkpoint (``population_<i>/checkpoints/``)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    env_override,
    run_job,
    setup_globals,
)
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from mlplab.config import portable_data
from mlplab.errors import check, fail, user_error
from mlplab.run.console import one_console_handler, silence_known_noise
from mlplab.run.rundir import RunLock, check_run_dir
from mlplab.sweep.multirun import ERROR_FILE

WHY = "hydra/launcher=population"


@dataclass
class Job:
    """One job of the sweep: its Hydra config and its task config, resolved for its dir."""

    num: int
    config: DictConfig  # the whole config (hydra node included) of this job
    task: DictConfig  # without the hydra node, as Hydra saves it (.hydra/config.yaml)
    cfg: DictConfig  # the task config with this job's ${hydra:...} values pinned
    dir: Path
    flat: dict | None = None

    def stacked(self, out_dir: Path) -> DictConfig:
        """The config the population trains: one output dir for all members, so the keys
        derived from it are equal (train_population writes each member into its job dir)."""
        cfg = copy.deepcopy(self.cfg)
        OmegaConf.update(cfg, "paths.output_dir", str(out_dir), force_add=True)
        return cfg


@contextmanager
def _as_job(config: DictConfig):
    """HydraConfig is this job's while inside (``${hydra:...}`` resolves to its values)."""
    hydra, before = HydraConfig.instance(), HydraConfig.instance().cfg
    hydra.set_config(config)
    try:
        yield
    finally:
        hydra.cfg = before


def _pin_hydra(cfg: DictConfig) -> DictConfig:
    """``cfg`` with every value that uses ``${hydra:...}`` replaced by its current value; all
    other interpolations (``${paths.output_dir}/checkpoints``) stay references."""

    def pin(node, path: str):
        if isinstance(node, dict):
            return {k: pin(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [pin(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and "${hydra:" in node:
            value = OmegaConf.select(cfg, path)
            if isinstance(value, DictConfig | ListConfig):
                value = OmegaConf.to_container(value, resolve=True)
            return value
        return node

    return OmegaConf.create(pin(OmegaConf.to_container(cfg, resolve=False), ""))


def _prepare(launcher, overrides: Sequence[str], num: int) -> Job:
    """Compose job ``num`` as Hydra's basic launcher and ``run_job`` do, without running it."""
    loader = launcher.hydra_context.config_loader
    config = loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(config):
        config.hydra.job.id = num
        config.hydra.job.num = num
    with _as_job(config):
        job_dir = Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(job_dir)
        HydraConfig.instance().set_config(config)
        task = copy.deepcopy(config)
        with read_write(task), open_dict(task):
            del task["hydra"]
        cfg = _pin_hydra(task)
    return Job(num, config, task, cfg, Path(config.hydra.runtime.output_dir))


def _check_job(job: Job) -> None:
    """What no job of a population sweep may ask for: one line naming the key."""
    cfg = job.cfg
    own = f"not set with {WHY}: a population continues from its own checkpoint, add resume=auto"
    check(not cfg.get("ckpt_path"), "ckpt_path", cfg.get("ckpt_path"), own)
    seeds = f"not set with {WHY} (it makes the populations): sweep seed=0,1,2,... instead"
    check(cfg.get("seeds") is None, "seeds", cfg.get("seeds"), seeds)
    trainer = cfg.trainer
    strategy, devices = str(trainer.get("strategy") or "auto"), trainer.get("devices", 1)
    one = f"one device per job with {WHY} (a population's members already run in parallel)"
    check("ddp" not in strategy, "trainer.strategy", strategy, one)
    check(devices in (1, "auto", None), "trainer.devices", devices, one)
    check((trainer.get("num_nodes") or 1) == 1, "trainer.num_nodes", trainer.get("num_nodes"), one)
    check_run_dir(job.dir, cfg.get("resume"))  # never write over a run, unless resumed


def plan(jobs: list[Job], max_members: int | None, sweep_dir: Path) -> list[tuple[list, str]]:
    """The jobs in groups, in order of their first job: ``(jobs, why)`` where ``why`` names
    what keeps them out of a population ("" for a population). Raises a ConfigError first."""
    ok = max_members is None or (type(max_members) is int and max_members >= 1)
    check(ok, "hydra.launcher.max_members", max_members, "null or an integer >= 1 (per population)")
    for job in jobs:
        _check_job(job)
    # Imports Lightning (seconds): after the checks, so bad input answers at once.
    from mlplab.population.chunks import chunks
    from mlplab.population.run import MEMBER_KEYS, NOT_YET, SHARED, _flat, check_stackable

    groups: dict[str, tuple[list, str]] = {}
    for job in jobs:
        job.flat = _flat(OmegaConf.to_container(job.stacked(sweep_dir), resolve=True))
        # check_stackable's rule: what members may not differ in decides the group
        fixed = [
            (k, v) for k, v in job.flat.items() if not k.startswith(MEMBER_KEYS) or k in SHARED
        ]
        why = ", ".join(f"{k}={job.flat[k]} ({w})" for k, w in NOT_YET.items() if job.flat.get(k))
        groups.setdefault(repr(sorted(fixed, key=lambda kv: kv[0])), ([], why))[0].append(job)
    planned = []
    for group, why in groups.values():  # chunks of <= max_members that fit in memory
        cfgs = [job.stacked(sweep_dir) for job in group]
        flats = [_flat(portable_data(c)) for c in cfgs] if not why else []
        if not why:  # the whole group stacks, so every chunk of it does
            check_stackable(cfgs, flats)
        parts = chunks(cfgs, max_members, flats) if not why else [range(len(group))]
        planned += [([group[i] for i in part], why) for part in parts]
    return planned


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """``PopulationLauncher.launch``: plan every job first, then train group by group."""
    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    jobs = [_prepare(launcher, o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
    try:
        check(not config.hydra.job.chdir, "hydra.job.chdir", True, f"false with {WHY}")
        groups = plan(jobs, launcher.max_members, sweep_dir)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        _remove_stub(sweep_dir)
        fail(cause)
    returns, context = {}, launcher.hydra_context
    for group, why in groups:
        if why:  # one by one, exactly as Hydra's basic launcher runs a job
            for job in group:
                print(f"job {job.num}: {why} can't be in a population yet: a plain run", flush=True)
                dirs = ("hydra.sweep.dir", "hydra.sweep.subdir")
                returns[job.num] = run_job(launcher.task_function, job.config, *dirs, context)
        else:
            returns |= _run_population(launcher, group, sweep_dir)
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return [returns[job.num] for job in jobs]


def _run_population(launcher, jobs: list[Job], sweep_dir: Path) -> dict[int, JobReturn]:
    from mlplab.population.run import train_population

    index, launcher.populations = launcher.populations, launcher.populations + 1
    out_dir = sweep_dir / f"population_{index}"
    nums = ", ".join(str(job.num) for job in jobs)
    differ = [k for k in jobs[0].flat if len({repr(j.flat.get(k)) for j in jobs}) > 1]
    differ = [k for k in differ if not k.startswith(("paths.", "run_name"))]
    what = f" (differ in {', '.join(differ)})" if differ else ""
    print(f"population {index}: jobs {nums} as one population of {len(jobs)}{what}", flush=True)
    callbacks = launcher.hydra_context.callbacks
    failure, statuses = None, {}
    with ExitStack() as held:
        for job in jobs:
            held.enter_context(RunLock(job.dir))
            _save_hydra_files(job)
            with _as_job(job.config):
                callbacks.on_job_start(config=job.config, task_function=launcher.task_function)
        _configure_job_log(jobs[0].config, out_dir)
        with env_override(jobs[0].config.hydra.job.env_set):
            try:
                summary = train_population(
                    [job.stacked(out_dir) for job in jobs],
                    out_dir,
                    member_dirs=[job.dir for job in jobs],
                    resume=jobs[0].cfg.get("resume") == "auto",
                )
                statuses = dict(zip((j.num for j in jobs), summary.status, strict=True))
            except Exception as err:
                failure = user_error(err)
                if failure is None:
                    raise
                print(
                    f"error: population {index} (jobs {nums}): {failure}",
                    file=sys.stderr,
                    flush=True,
                )
    returns = {}
    for job in jobs:
        with _as_job(job.config):
            returns[job.num] = _job_return(job, statuses.get(job.num), failure)
            callbacks.on_job_end(config=job.config, job_return=returns[job.num])
    done = sum(r.return_value is not None for r in returns.values())
    print(f"population {index}: {done} of {len(jobs)} jobs trained ({out_dir})", flush=True)
    return returns


def _overrides(job: Job) -> list[str]:
    return list(OmegaConf.to_container(job.config.hydra.overrides.task))


def _save_hydra_files(job: Job) -> None:
    """``<job dir>/.hydra/``: what ``run_job`` saves (SweepSummary reads overrides.yaml)."""
    subdir = job.config.hydra.output_subdir
    if subdir is None:
        return
    out = job.dir / str(subdir)
    out.mkdir(parents=True, exist_ok=True)
    with _as_job(job.config):
        hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    files = {"config.yaml": job.task, "hydra.yaml": hydra_cfg, "overrides.yaml": _overrides(job)}
    for name, node in files.items():
        (out / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


def _configure_job_log(config: DictConfig, out_dir: Path) -> None:
    """Hydra's job logging for a population: its ``train.log`` goes into ``out_dir``."""
    config = copy.deepcopy(config)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configure_log(config.hydra.job_logging, config.hydra.verbose)
    one_console_handler()
    silence_known_noise()


def _job_return(job: Job, status: str | None, failure: Exception | None) -> JobReturn:
    """The JobReturn ``run_job`` would give for this job (its metrics; None if it failed)."""
    ret = JobReturn(overrides=_overrides(job), cfg=job.cfg, working_dir=os.getcwd())
    ret.hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    ret.task_name = JobRuntime.instance().get("name")
    ret.status = JobStatus.COMPLETED
    metrics, error = job.dir / "metrics.json", job.dir / ERROR_FILE
    if metrics.is_file():
        ret.return_value = json.loads(metrics.read_text())
    elif failure is not None:  # already said once for the whole population
        error.write_text(" ".join(str(failure).split()) + "\n")
    else:
        if not error.is_file():
            error.write_text(f"the population ended this job without results ({status})\n")
        print(f"error: job {job.num}: {error.read_text().strip()}", file=sys.stderr, flush=True)
    return ret


def _remove_stub(sweep_dir: Path) -> None:
    """A sweep refused before any job ran leaves no dir: drop what Hydra wrote (multirun.yaml)."""
    entries = list(sweep_dir.iterdir())
    if all(p.is_file() and (p.name == "multirun.yaml" or p.suffix == ".log") for p in entries):
        shutil.rmtree(sweep_dir)
