"""``hydra/launcher=population``: a multirun's jobs trained as populations, not one by one.

    mlplab-train -m hydra/launcher=population data=moons optimizer.lr=0.001,0.01,0.1 seed=0,1,2

trains the 9 jobs as ONE population (``train_population``: one process, stacked weights).
Each job is composed as Hydra's basic launcher composes it (its ``hydra.job.num``, its dir
``<sweep dir>/<job num>``, its ``${hydra:...}`` values: ``population.jobs``; Hydra composes
once per set of group choices: ``population.sweep_compose``) and ends as a normal job dir
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

import shutil
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, env_override, run_job, setup_globals
from omegaconf import DictConfig, open_dict, read_write

from mlplab.composer import copy_config
from mlplab.config import portable_data
from mlplab.errors import check, fail, user_error
from mlplab.population.jobs import (
    Job,
    as_job,
    job_return,
    prepare,
    save_hydra_files,
)
from mlplab.run.console import one_console_handler, silence_known_noise
from mlplab.run.parses import to_plain
from mlplab.run.rundir import RunLock, check_run_dir

WHY = "hydra/launcher=population"


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
    stacked = {job.num: job.stacked(sweep_dir) for job in jobs}  # read here, never changed
    for job in jobs:
        job.flat = _flat(to_plain(stacked[job.num]))
        # check_stackable's rule: what members may not differ in decides the group
        fixed = [
            (k, v) for k, v in job.flat.items() if not k.startswith(MEMBER_KEYS) or k in SHARED
        ]
        why = ", ".join(f"{k}={job.flat[k]} ({w})" for k, w in NOT_YET.items() if job.flat.get(k))
        groups.setdefault(repr(sorted(fixed, key=lambda kv: kv[0])), ([], why))[0].append(job)
    planned = []
    for group, why in groups.values():  # chunks of <= max_members that fit in memory
        cfgs = [stacked[job.num] for job in group]
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
    jobs = [prepare(launcher, o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
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
            save_hydra_files(job)
            with as_job(job.view):
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
        with as_job(job.view):
            returns[job.num] = job_return(job, statuses.get(job.num), failure)
            callbacks.on_job_end(config=job.config, job_return=returns[job.num])
    done = sum(r.return_value is not None for r in returns.values())
    print(f"population {index}: {done} of {len(jobs)} jobs trained ({out_dir})", flush=True)
    return returns


def _configure_job_log(config: DictConfig, out_dir: Path) -> None:
    """Hydra's job logging for a population: its ``train.log`` goes into ``out_dir``."""
    config = copy_config(config)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configure_log(config.hydra.job_logging, config.hydra.verbose)
    one_console_handler()
    silence_known_noise()


def _remove_stub(sweep_dir: Path) -> None:
    """A sweep refused before any job ran leaves no dir: drop what Hydra wrote (multirun.yaml)."""
    entries = list(sweep_dir.iterdir())
    if all(p.is_file() and (p.name == "multirun.yaml" or p.suffix == ".log") for p in entries):
        shutil.rmtree(sweep_dir)
