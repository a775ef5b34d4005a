"""Where trials run: the study's storage (and the heartbeats that tell a killed worker's
trials), ``workers=N`` local processes, or the tasks of one SLURM job array (submitit) whose
defaults come from ``conf/hydra/launcher/slurm.yaml`` — the same settings
``mlplab-train -m hydra/launcher=slurm`` uses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from mlplab.config import compose_config
from mlplab.errors import ConfigError, check
from mlplab.sweep.objective import override_key
from mlplab.sweep.search import did_you_mean

HEARTBEAT_S, GRACE_S = 30, 120  # a RUNNING trial silent for GRACE_S seconds is dead
BEAT = "heartbeat"  # user attr: when a running trial was last known alive (time.time())
WORKER_KEY = "worker"  # set on the processes that `workers=N` starts
# submitit's cluster-independent parameters; any other SLURM setting is passed as slurm_KEY.
SUBMITIT_GENERIC = {
    "timeout_min",
    "mem_gb",
    "nodes",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "name",
    "stderr_to_stdout",
}
# Keys of the Hydra launcher node that are not SLURM settings (Hydra's own, or set here).
NOT_SLURM = {"_target_", "submitit_folder", "name", "max_num_timeout", "array_parallelism_limit"}


def slurm_defaults() -> dict:
    """The SLURM settings of ``conf/hydra/launcher/slurm.yaml`` (one source for both ways of
    running on SLURM)."""
    cfg = compose_config("train", ["hydra/launcher=slurm"], return_hydra_config=True)
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    # setup lines may use ${hydra.launcher.*}: resolve them against that node
    node["setup"] = [
        line.replace("${hydra.launcher.cpus_per_task}", str(node.get("cpus_per_task")))
        for line in node.get("setup") or []
    ]
    return {k: v for k, v in node.items() if v is not None and k not in NOT_SLURM}


def _submitit_parameter(key: str) -> str:
    """How submitit names the SLURM setting ``key``: a generic parameter, else ``slurm_key``."""
    return key if key in SUBMITIT_GENERIC else f"slurm_{key}"


def check_launcher(launcher: str, slurm: dict) -> None:
    """SLURM must be there before anything is written; each ``slurm.KEY`` must be a parameter
    submitit knows (it says which it knows)."""
    if launcher == "processes":
        return
    if launcher == "slurm":
        check(
            shutil.which("sbatch") is not None,
            "launcher",
            "slurm",
            "sbatch is not on PATH (no SLURM on this machine): run the workers here with "
            "launcher=processes, or try the job-array path locally with launcher=submitit_local",
        )
    import submitit

    with tempfile.TemporaryDirectory() as folder:
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        for key, value in slurm.items():
            try:
                executor.update_parameters(**{_submitit_parameter(key): value})
            except (NameError, ValueError, TypeError) as err:
                known = re.findall(r"Valid arguments: (.*)", str(err))
                names = [*(known[0].split(", ") if known else []), *SUBMITIT_GENERIC]
                hint = did_you_mean(key, names)
                check(False, f"slurm.{key}", value, f"not a submitit parameter{hint}")


def study_storage(sweep_dir: Path) -> optuna.storages.BaseStorage:
    """The study's storage in ``sweep_dir``: ``study.journal``, an Optuna journal file (one line
    a write, safe for workers sharing it on a network file system), or the ``study.db`` of a
    sweep that began with one."""
    sqlite = sweep_dir / "study.db"
    return open_storage(f"sqlite:///{sqlite}" if sqlite.is_file() else f"{sweep_dir}/study.journal")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """``storage=URL``: an RDB URL (sqlite waits for locks held by other workers), or a
    ``*.journal`` file. What fails to open is one error line."""
    want = "an Optuna storage URL (sqlite:///path/study.db, postgresql://...) or a *.journal file"
    check(url.endswith(".journal") or "://" in url, "storage", url, want)
    try:
        if url.endswith(".journal"):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url))
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as err:  # noqa: BLE001 — a URL the user gave: one line says what failed
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(f"storage={url!r} is invalid: {type(err).__name__}: {first}") from None


@contextmanager
def heartbeats(trials: list[optuna.Trial]) -> Iterator[None]:
    """While inside, every ``HEARTBEAT_S`` seconds (and at once) each trial's ``heartbeat``
    attribute says it is alive: a killed worker's trials stay RUNNING, and a later run tells
    them from live ones by that (``fail_stale``). An attribute, not a storage's own heartbeats:
    the same for every storage."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            for trial in trials:
                trial.set_user_attr(BEAT, time.time())
            stop.wait(HEARTBEAT_S)

    thread = threading.Thread(target=beat, name="sweep-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale(study: optuna.Study, on_stale=None) -> None:
    """Fail the study's RUNNING trials that have been silent for ``GRACE_S`` seconds (their
    worker was killed); ``on_stale(study, trial)`` for each one this process failed (another
    worker may fail it first: then not here)."""
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = trial.user_attrs.get(BEAT)
        if last is None and trial.datetime_start is not None:  # killed before its first beat
            last = trial.datetime_start.timestamp()
        if last is None or now - last <= GRACE_S:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except Exception:  # noqa: BLE001 — finished meanwhile (another worker failed it)
            continue
        if on_stale is not None:
            on_stale(study, trial)


def run_workers(
    worker, argv: list[str], launcher: str, workers: int, slurm: dict, study_name: str, sweep_dir
) -> None:
    """``workers`` workers sharing the study, each running ``worker(argv + [worker=i])``; waits
    for them. ``launcher=processes``: local processes (``python -m mlplab.sweep``); else the
    tasks of one SLURM job array (submitit; ``worker`` is a module-level function, so it
    pickles), with ``slurm`` over ``slurm_defaults()``. The study's storage must be reachable
    from the compute nodes: the default journal file in the sweep dir is, on a shared disk."""
    own = {"workers", "launcher"}
    argv = [a for a in argv if override_key(a) not in own and not a.startswith("slurm.")]
    commands = [[*argv, f"{WORKER_KEY}={i}"] for i in range(workers)]
    if launcher == "processes":
        procs = [subprocess.Popen([sys.executable, "-m", "mlplab.sweep", *c]) for c in commands]
        failed = [i for i, p in enumerate(procs) if p.wait() != 0]
        if failed:
            print(f"note: workers {failed} exited with an error (see above)")
        return
    import submitit

    cluster = "slurm" if launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster=cluster)
    slurm = {**slurm_defaults(), **slurm}
    params = {_submitit_parameter(k): v for k, v in slurm.items() if v is not None}
    executor.update_parameters(name=f"sweep-{study_name}", **params)
    with executor.batch():  # one job array
        jobs = [executor.submit(worker, command) for command in commands]
    print(f"submitted {len(jobs)} workers as job array {jobs[0].job_id.split('_')[0]}")
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 — one worker's crash must not hide the others
            print(f"note: worker {job.job_id} failed: {str(err).strip().splitlines()[-1]}")
