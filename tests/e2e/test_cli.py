"""End to end: ``mlplab-train`` in a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli

TINY = ["trainer.max_epochs=2", "data.options.n_samples=200"]
OPTIMIZERS = sorted(p.stem for p in (ROOT / "conf" / "optimizer").glob("*.yaml"))


def test_train_cli_writes_a_complete_run_dir(tmp_path):
    out = run_cli(*TINY, f"paths.log_dir={tmp_path}", "run_name=e2e", cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "train" / "e2e"
    assert f"run dir: {run_dir}" in out.stdout
    assert "test/acc" in out.stdout and "test/auroc" in out.stdout
    # the console: one line before training (the config tree goes to a file), where things are
    lines = out.stdout.splitlines()
    assert lines[0].startswith("run: data pass_fail") and "├── data" not in out.stdout
    assert (
        "│   └── _target_: mlplab.data.TabularDataModule"
        in (run_dir / "config_tree.log").read_text()
    )
    assert lines[-2:] == [
        "figures: decision_boundary.png, learning_curves.png",
        f"evaluate: mlplab-eval ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
    ]
    assert not [line for line in out.stderr.splitlines() if "wandb" in line.lower()], out.stderr
    # resolved config, overrides, provenance
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    # re-runnable: everything resolved except what names this run (a re-run gets a new dir)
    assert config["seed"] == 42 and config["paths"]["output_dir"] == "${hydra:runtime.output_dir}"
    assert config["run_name"] == "${run_id:}" and config["optimizer"]["lr"] == 0.001
    assert "trainer.max_epochs=2" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["output_dir"] == str(run_dir) and info["run_name"] == "e2e"
    assert len(info["git"]["sha"]) == 40 and isinstance(info["git"]["dirty"], bool)
    assert info["packages"]["torch"] and info["packages"]["lightning"] and info["seed"] == 42
    # metrics, checkpoints, wandb offline files — no network, no prompt, no key
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert {"train/loss", "val/loss", "val/acc", "test/auroc"} <= set(header.split(","))
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    offline = list((run_dir / "wandb").glob("offline-run-*"))  # what wandb got: test_fit.py
    assert len(offline) == 1 and (run_dir / "wandb_id").read_text() in offline[0].name
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert hparams["config"]["seed"] == 42 and hparams["in_features"] == 2
    # the two known start-up messages are gone; nothing else is muted
    assert "litlogger" not in out.stdout + out.stderr
    assert "LeafSpec" not in out.stderr
    # the console: config tree (also saved), what runs where, losses on the progress bar,
    # the final table saying where each number comes from; no wandb warnings, no FLOPs
    assert "config_tree.log" and "optimizer" in (run_dir / "config_tree.log").read_text()
    assert "run: data pass_fail: 120/40/40 rows × 2 features, binary" in out.stdout
    before_table = out.stdout.split("final metrics")[0]
    assert "train/loss:" in before_table and "val/loss:" in before_table  # the progress bar
    assert "best checkpoint (epoch" in out.stdout and "last epoch (epoch 1)" in out.stdout
    assert "WARNING" not in out.stderr and "FLOPs" not in out.stdout
    assert "Run history" not in out.stderr + out.stdout


def test_unknown_group_option_is_one_line_with_a_suggestion(tmp_path):
    out = run_cli("optimizer=adamm", f"paths.log_dir={tmp_path}", cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.startswith("error: optimizer=adamm is not an option: did you mean")
    assert "optimizer=adam?" in out.stderr and "rmsprop" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not out.stdout.strip()
    assert not (tmp_path / "train").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-0.1", "error: optimizer.lr=-0.1 is invalid: must be a finite number > 0"),
        ("data.batch_size=full_batch", "error: data.batch_size='full_batch' is invalid"),
    ],
)
def test_bad_value_is_one_clear_line_and_leaves_no_run(override, message, tmp_path):
    out = run_cli(override, f"paths.log_dir={tmp_path}", cwd=ROOT)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no half-written run


def test_multirun_over_every_optimizer(tmp_path):
    # default logger (CSV + wandb offline), jobs in this one process: each gets its own run
    out = run_cli(
        "-m",
        f"optimizer={','.join(OPTIMIZERS)}",
        *TINY,
        "trainer.enable_progress_bar=false",
        f"paths.log_dir={tmp_path}",
        "run_name=sweep",
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted((tmp_path / "train" / "multirun" / "sweep").glob("[0-9]*"))
    assert len(jobs) == len(OPTIMIZERS)
    chosen = set()
    for job in jobs:
        config = yaml.safe_load((job / "config.yaml").read_text())
        chosen.add(config["optimizer"]["_target_"] + str(config["optimizer"].get("momentum")))
        assert (job / "checkpoints" / "last.ckpt").is_file()
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, job  # its own tracking run
        assert (job / "wandb_id").read_text() in runs[0].name
    assert len(chosen) >= 6  # SGD variants differ by momentum; the adaptive ones by class
    ids = {(job / "wandb_id").read_text() for job in jobs}
    assert len(ids) == len(jobs)


def test_rerunning_a_saved_config_makes_a_new_run_and_leaves_the_old_one_alone(tmp_path):
    args = [*TINY, "logger=csv", "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}"]
    out = run_cli(*args, "run_name=orig", "seed=7", cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    orig = tmp_path / "train" / "orig"
    before = {p: p.read_bytes() for p in orig.rglob("*") if p.is_file()}
    out = run_cli(f"rerun={orig}", cwd=tmp_path)  # = --config-dir <orig> --config-name config
    assert out.returncode == 0, out.stderr[-3000:]
    assert {p: p.read_bytes() for p in orig.rglob("*") if p.is_file()} == before
    new_dir = Path(out.stdout.split("run dir: ")[1].split()[0])
    assert new_dir.resolve() != orig.resolve() and (new_dir / "checkpoints" / "best.ckpt").is_file()
    a = json.loads((orig / "metrics.json").read_text())
    b = json.loads((new_dir / "metrics.json").read_text())
    assert b == a  # same resolved config, same seed, CPU: the same numbers


def test_a_run_name_in_use_is_refused_before_hydra_writes_anything(tmp_path):
    args = [*TINY, "logger=csv", "trainer.enable_progress_bar=false", f"paths.log_dir={tmp_path}"]
    assert run_cli(*args, "run_name=x", cwd=ROOT).returncode == 0
    run_dir = tmp_path / "train" / "x"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    out = run_cli(*args, "run_name=x", "seed=3", cwd=ROOT)
    assert out.returncode == 2 and "already holds a run" in out.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_ddp_cpu_two_processes(tmp_path):
    out = run_cli(
        "trainer=ddp_cpu",
        *TINY,
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"paths.log_dir={tmp_path}",
        "run_name=ddp",
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test/acc" in out.stdout
    assert "terminate called" not in out.stderr
    run_dir = tmp_path / "train" / "ddp"
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()


def test_run_names_are_unique_within_a_second():
    code = "from mlplab.config import run_id; print(run_id())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
        )
        for _ in range(4)
    ]
    names = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert len(set(names)) == 4 and all(len(n) > 20 for n in names)


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "mlplab-train"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for own in ("seeds=N", "cv=K", "rerun=RUN_DIR", "resume=auto|RUN_DIR", "optimizer: "):
        assert own in out.stdout, out.stdout
    assert "powered by Hydra" not in out.stdout and len(out.stdout.splitlines()) < 60


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("max_epochs=3", "trainer.max_epochs"),
        ("lr=0.1", "optimizer.lr"),
        ("dropout=0.2", "model.dropout"),
    ],
)
def test_a_top_level_key_that_lives_one_level_down_gets_a_did_you_mean(given, meant, tmp_path):
    out = run_cli(given, cwd=tmp_path)
    assert out.returncode == 2
    assert f"did you mean {meant}?" in out.stderr.strip().splitlines()[-1], out.stderr


def test_multirun_refuses_ddp(tmp_path):
    out = run_cli("-m", "trainer=ddp_cpu", "seed=1,2", f"paths.log_dir={tmp_path}", cwd=ROOT)
    assert out.returncode == 2
    assert "error: trainer.strategy='ddp' is invalid: DDP can't run inside --multirun" in out.stderr
