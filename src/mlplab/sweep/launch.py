"""Where trials run: the study's storage (with the heartbeats that tell a killed worker's
trials), ``workers=N`` local processes, or the tasks of one SLURM job array (submitit) whose
defaults come from ``conf/hydra/launcher/slurm.yaml`` — the same settings
``mlplab-train -m hydra/launcher=slurm`` uses."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from omegaconf import OmegaConf

from mlplab.config import compose_config
from mlplab.errors import ConfigError, check
from mlplab.sweep.objective import override_key
from mlplab.sweep.search import did_you_mean

HEARTBEAT_S, GRACE_S = 30, 120  # a RUNNING trial silent for GRACE_S seconds is dead
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
HYDRA_ONLY = {"max_num_timeout", "array_parallelism_limit"}  # the Hydra launcher's own keys


def slurm_defaults() -> dict:
    """The SLURM settings of ``conf/hydra/launcher/slurm.yaml`` (one source for both ways of
    running on SLURM), without the Hydra-only keys."""
    cfg = compose_config("train", ["hydra/launcher=slurm"], return_hydra_config=True)
    node = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    for key in ("_target_", "submitit_folder", "name"):
        node.pop(key, None)
    # setup lines may use ${hydra.launcher.*}: resolve them against that node
    node["setup"] = [
        line.replace("${hydra.launcher.cpus_per_task}", str(node.get("cpus_per_task")))
        for line in node.get("setup") or []
    ]
    known = {k: v for k, v in node.items() if v is not None and k not in HYDRA_ONLY}
    return known


def _submitit_parameter(key: str) -> str:
    """How submitit names the SLURM setting ``key``: a generic parameter, else ``slurm_key``."""
    return key if key in SUBMITIT_GENERIC else f"slurm_{key}"


def check_slurm_parameters(slurm: dict) -> None:
    """Each ``slurm.KEY`` must be a parameter submitit knows (it says which it knows)."""
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


# Optuna 4.9 renamed RDBStorage's failed_trial_callback (deprecated since, gone in 6.0).
_STALE_CALLBACK = (
    "heartbeat_stale_trial_callback"
    if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
    else "failed_trial_callback"
)


def open_storage(url: str, on_stale=None) -> optuna.storages.BaseStorage:
    """An RDB URL (sqlite waits for locks held by other workers), or a ``*.journal`` file.
    ``on_stale(study, trial)``: called once for each trial of a killed worker, when a run
    fails it (``fail_stale_trials``; a journal file has no heartbeats: never)."""
    if url.endswith(".journal"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    # Heartbeats let a later run tell a trial whose worker was killed (still RUNNING in the
    # storage) from a live one: after the grace period it is marked FAIL.
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9; we know
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            **{_STALE_CALLBACK: on_stale},
        )


def open_user_storage(url: str, on_stale=None) -> optuna.storages.BaseStorage:
    check(
        url.endswith(".journal") or "://" in url,
        "storage",
        url,
        "an Optuna storage URL (sqlite:///path/study.db, postgresql://...) or a *.journal file",
    )
    try:
        return open_storage(url, on_stale)
    except Exception as err:  # noqa: BLE001 — a URL the user gave: one line says what failed
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(f"storage={url!r} is invalid: {type(err).__name__}: {first}") from None


@contextmanager
def heartbeats(study: optuna.Study, trials: list[optuna.Trial]) -> Iterator[None]:
    """Record every trial's heartbeat now and every interval, while the batch runs
    (``study.optimize`` does it for the one trial it runs; asked trials have none)."""
    storage = trials[0].storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if not interval:  # a storage without heartbeats (a journal file)
        yield
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            for trial_id in ids:
                storage.record_heartbeat(trial_id)
            stop.wait(interval)

    thread = threading.Thread(target=beat, name="sweep-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def check_launcher(launcher: str, slurm: dict) -> None:
    """SLURM must be there before anything is written; slurm.KEY names a submitit parameter."""
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
    check_slurm_parameters(slurm)


def run_workers(argv: list[str], workers: int) -> None:
    """``workers`` local processes running ``python -m mlplab.sweep`` on the same study."""
    argv = [a for a in argv if override_key(a) != "workers"]
    env_cmd = [sys.executable, "-m", "mlplab.sweep", *argv]
    procs = [subprocess.Popen([*env_cmd, f"{WORKER_KEY}={i}"]) for i in range(workers)]
    failed = [i for i, p in enumerate(procs) if p.wait() != 0]
    if failed:
        print(f"note: workers {failed} exited with an error (see above)")


def submit_workers(
    worker, argv: list[str], launcher: str, workers: int, slurm: dict, study_name: str, sweep_dir
) -> None:
    """``workers`` tasks of one SLURM job array (submitit) sharing the study, each running
    ``worker(argv + [worker=i])`` (a module-level function, so it pickles); waits for them.

    ``launcher=submitit_local`` runs the same jobs as local processes (to try it without a
    cluster). The study's storage must be reachable from the compute nodes: the default
    sqlite file in the sweep dir works on a shared file system.
    """
    import submitit

    cluster = "slurm" if launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=sweep_dir / "submitit", cluster=cluster)
    params = {_submitit_parameter(k): v for k, v in slurm.items() if v is not None}
    executor.update_parameters(name=f"sweep-{study_name}", **params)
    own = {"workers", "launcher"}
    argv = [a for a in argv if override_key(a) not in own and not a.startswith("slurm.")]
    with executor.batch():  # one job array
        jobs = [executor.submit(worker, [*argv, f"{WORKER_KEY}={i}"]) for i in range(workers)]
    print(f"submitted {len(jobs)} workers as job array {jobs[0].job_id.split('_')[0]}")
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 — one worker's crash must not hide the others
            print(f"note: worker {job.job_id} failed: {str(err).strip().splitlines()[-1]}")
