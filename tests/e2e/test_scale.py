"""Scaling out: parallel sweeps (joblib), SLURM launcher config, DDP metric sync, kill-and-resume,
and a two-node run simulated with torchrun on this machine."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mlplab.config import compose_config
from mlplab.sweep.multirun import summarize
from tests.conftest import ROOT, run_cli

TINY = [
    "trainer.max_epochs=2",
    "data.options.n_samples=200",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


def _metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


def test_joblib_grid_writes_a_summary(tmp_path):
    out = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "optimizer=sgd,adam",
        "data.batch_size=32,128",
        *TINY,
        f"paths.log_dir={tmp_path}",
        "run_name=grid",
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "train" / "multirun" / "grid"
    assert sorted(p.name for p in sweep.glob("[0-9]*")) == ["0", "1", "2", "3"]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 4 and [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert {(r["optimizer"], r["data.batch_size"]) for r in rows} == {
        (o, b) for o in ("sgd", "adam") for b in ("32", "128")
    }
    assert all(r["status"] == "ok" and float(r["val/loss"]) > 0 for r in rows)
    assert "trainer.max_epochs" not in rows[0]  # shared overrides stay out of the table
    assert "sweep summary" in out.stdout and "val/loss" in out.stdout


def test_summary_lists_failed_jobs(tmp_path):
    ok, failed, missing = (tmp_path / str(i) for i in range(3))
    for job, lr in ((ok, "0.1"), (failed, "0.2")):
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr={lr}\n- seed=1\n")
    (ok / "metrics.json").write_text(json.dumps({"val/loss": 0.5, "test/acc": 0.9}))
    path = summarize(
        tmp_path, expected={2: {"optimizer.lr": "0.3", "seed": "1"}}, print_table=False
    )
    rows = list(csv.DictReader(path.open()))
    assert [(r["job"], r["status"], r["optimizer.lr"]) for r in rows] == [
        ("0", "ok", "0.1"),
        ("1", "failed", "0.2"),
        ("2", "failed", "0.3"),
    ]
    assert rows[0]["val/loss"] == "0.5" and rows[1]["val/loss"] == ""
    assert "seed" not in rows[0]
    assert summarize(tmp_path / "nothing", print_table=False) is None


def test_failed_job_shows_in_the_summary_of_a_failed_sweep(tmp_path):
    # n_samples=2 leaves an empty val split: that job fails, the others run, exit code 1.
    out = run_cli(
        "-m",
        "data.options.n_samples=200,2",
        *TINY[:1],
        *TINY[2:],
        f"paths.log_dir={tmp_path}",
        "run_name=bad",
        cwd=ROOT,
    )
    assert out.returncode == 1 and "leaves the val split of 2 rows empty" in out.stderr
    assert "error: 1 of 2 jobs failed (job 1: data.source=" in out.stderr
    assert "Traceback" not in out.stderr
    rows = list(csv.DictReader((tmp_path / "train/multirun/bad/summary.csv").open()))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed")]
    assert "leaves the val split of 2 rows empty" in rows[1]["error"] and not rows[0]["error"]


def _compose_launcher(name: str, *overrides: str):
    overrides = [f"hydra/launcher={name}", "run_name=sw", *overrides]
    return compose_config("train", overrides, return_hydra_config=True)


def test_local_launcher_is_joblib_with_two_jobs():
    launcher = _compose_launcher("local").hydra.launcher
    assert launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert launcher.n_jobs == 2 and launcher.prefer == "processes"


def test_slurm_launcher_composes_and_renders_an_sbatch_script(tmp_path, monkeypatch):
    cfg = _compose_launcher("slurm", f"paths.log_dir={tmp_path}", "hydra.launcher.partition=gpu")
    node = cfg.hydra.launcher
    assert node._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    keys = {"partition", "gpus_per_task", "cpus_per_task", "mem_gb", "timeout_min", "nodes"}
    keys |= {"array_parallelism", "tasks_per_node", "additional_parameters", "setup"}
    assert keys <= set(node)
    launcher = instantiate(node)  # as Hydra builds it: params resolved to plain values
    assert launcher.params["submitit_folder"].startswith(str(tmp_path / "train/multirun/sw/"))

    # Render the sbatch file the way the launcher's launch() configures submitit. submitit
    # refuses to build a SLURM executor without `srun` on PATH: give it a dummy one.
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    params = dict(launcher.params)
    params.pop("submitit_folder")
    timeouts = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=tmp_path / "submitit", slurm_max_num_timeout=timeouts
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m mlplab.train", "uid")
    for line in ("--partition=gpu", "--gpus-per-task=1", "--cpus-per-task=4", "--mem=16GB"):
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --time=60\n" in script and "#SBATCH --requeue\n" in script
    assert "export OMP_NUM_THREADS=4\n" in script
    assert "srun" in script and "python -m mlplab.train" in script


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path):
    out = run_cli(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "seed=1",
        *TINY,
        f"paths.log_dir={tmp_path}",
        "run_name=sub",
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "train" / "multirun" / "sub"
    assert "test/acc" in _metrics(sweep / "0")
    assert (sweep / ".submitit").is_dir() and (sweep / "summary.csv").is_file()


def test_multinode_trainer_composes():
    cfg = compose_config("train", ["trainer=multinode", "run_name=x"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 2
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.slow
def test_ddp_test_metrics_equal_a_single_process_evaluation(tmp_path):
    """DDP pads an uneven split (DistributedSampler repeats samples); the synced test metrics
    must still be those of the whole split, counted once."""
    from mlplab.evaluate import evaluate
    from mlplab.run.checkpoint import load_checkpoint

    out = run_cli(
        "trainer=ddp_cpu",
        "trainer.max_epochs=3",
        "data.options.n_samples=203",
        *TINY[2:],
        f"paths.log_dir={tmp_path}",
        "run_name=ddp",
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "train" / "ddp"
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    _, datamodule = load_checkpoint(ckpt)
    datamodule.setup("test")
    n_test = sum(len(batch[0]) for batch in datamodule.test_dataloader())
    assert n_test % 2 == 1  # uneven across 2 ranks: the case that double counts if done wrong
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", "accelerator=cpu"])
    single = evaluate(cfg)
    ddp = _metrics(run_dir)
    for key in ("test/acc", "test/loss", "test/auroc"):
        if key in single:
            assert ddp[key] == pytest.approx(single[key], abs=1e-6), key


RESUME = [
    "trainer.max_epochs=8",
    "resume=auto",
    "data=synthetic",
    "data.options.n_samples=40000",
    "data.batch_size=64",
    "model.group_batches=1",  # one optimizer step per mini-batch: epochs long enough to kill
    "model.hidden_sizes=[64,64]",
    "logger=default",  # csv + wandb (offline): the wandb run id must survive the restart
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def _ckpt_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not there yet, or being written
        return -1


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    args = [*RESUME, f"paths.log_dir={tmp_path}"]
    out = run_cli("run_name=a", *args, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLPLAB_RUN_ID", None)
    cmd = [sys.executable, "-m", "mlplab.train", "run_name=b", *args]
    run_b = tmp_path / "train" / "b"
    last = run_b / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while _ckpt_epoch(last) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _ckpt_epoch(last)
    assert 2 <= killed_at < 7 and not (run_b / "metrics.json").exists()  # killed mid-run
    wandb_id = (run_b / "wandb_id").read_text()

    out = run_cli("run_name=b", *args, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run_b / "wandb_id").read_text() == wandb_id
    a, b = _metrics(tmp_path / "train" / "a"), _metrics(run_b)
    for key in [k for k in a if k.startswith("test/")]:
        assert math.isclose(b[key], a[key], rel_tol=1e-6, abs_tol=1e-9), (key, a[key], b[key])
    assert _ckpt_epoch(last) == 7
    # the per-epoch history survived the kill: every epoch exactly once, nothing lost
    rows = list(csv.DictReader((run_b / "csv" / "metrics.csv").open()))
    for key in ("train/loss", "val/loss"):
        assert [int(float(r["epoch"])) for r in rows if r.get(key)] == list(range(8)), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_with_torchrun(tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLPLAB_RUN_ID", None)
    procs = []
    for rank in (0, 1):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--node_rank",
            str(rank),
            "--nproc_per_node",
            "1",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            "-m",
            "mlplab.train",
            "trainer=ddp_cpu",
            "trainer.devices=1",
            "trainer.num_nodes=2",
            *TINY,
            f"paths.log_dir={tmp_path}",
            "run_name=nodes",
        ]
        with (tmp_path / f"node{rank}.log").open("w") as log:  # the child keeps its own fd
            procs.append(
                subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"node{r}.log").read_text() for r in (0, 1)]
    assert codes == [0, 0], "\n".join(text[-3000:] for text in logs)
    # one process per "node", one world of 2 (Lightning found torchrun's environment)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]
    metrics = _metrics(tmp_path / "train" / "nodes")
    assert {"test/acc", "test/loss"} <= set(metrics)
