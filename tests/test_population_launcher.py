"""``mlplab-train -m hydra/launcher=population``: a sweep's jobs trained as populations.

Each job must end as the run a plain multirun job would have made: same numbers as a
stand-alone ``mlplab-train`` with its overrides, a normal job dir, the sweep's summary.csv.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl

from mlplab.train import main as train_main
from mlplab.train import train
from tests.conftest import ROOT, compose_cfg
from tests.test_population import BASE

LAUNCHER = "hydra/launcher=population"
QUIET_CLI = ["logger=csv", "trainer.enable_progress_bar=false", "print_config=false", "threads=1"]
METRICS = ("train/loss", "val/loss", "val/acc", "val/auroc", "test/loss", "test/acc")


def _sweep(tmp_path, monkeypatch, *args: str) -> int:
    """``mlplab-train -m hydra/launcher=population BASE ARGS`` in this process; the exit code."""
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    argv = ["-m", LAUNCHER, *BASE, *QUIET_CLI, f"paths.log_dir={tmp_path}", "run_name=s", *args]
    try:
        train_main(argv)
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def _sweep_dir(tmp_path):
    return tmp_path / "train" / "multirun" / "s"


def _job(tmp_path, num: int) -> tuple[dict, dict]:
    """Job ``num``'s overrides (``.hydra/overrides.yaml``) and metrics."""
    job_dir = _sweep_dir(tmp_path) / str(num)
    lines = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    overrides = dict(line.split("=", 1) for line in lines)
    return overrides, json.loads((job_dir / "metrics.json").read_text())


def _alone(tmp_path, name: str, *overrides: str) -> dict:
    """A stand-alone run with the same overrides (what ``mlplab-train`` alone reports)."""
    return train(compose_cfg(tmp_path / "alone" / name, *BASE, "threads=1", *overrides))


def _same(job: dict, alone: dict) -> None:
    for key in METRICS:
        assert job[key] == pytest.approx(alone[key], abs=1e-5), key


def _count_hydra_job_compositions(monkeypatch) -> list:
    """Hydra's own ``load_sweep_config`` calls from now on (one list item each)."""
    calls, hydras = [], ConfigLoaderImpl.load_sweep_config

    def counted(self, master_config, sweep_overrides):
        calls.append(list(sweep_overrides))
        return hydras(self, master_config, sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counted)
    return calls


def test_a_grid_trains_as_one_population_equal_to_stand_alone_runs(tmp_path, monkeypatch):
    composed = _count_hydra_job_compositions(monkeypatch)
    code = _sweep(tmp_path, monkeypatch, "optimizer.lr=0.01,0.1", "seed=1,2")
    assert code == 0
    # the sweeper's check and the launcher share one composed base (was 8 compositions)
    assert len(composed) == 1
    assert not [line for line in composed[0] if line.startswith(("optimizer.lr=", "seed="))]
    sweep = _sweep_dir(tmp_path)
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary.job) == [0, 1, 2, 3] and set(summary.status) == {"ok"}
    assert sorted(p.name for p in sweep.glob("population_*")) == ["population_0"]
    members = pd.read_csv(sweep / "population_0" / "summary.csv")
    assert list(members.run_dir) == [str(sweep / str(k)) for k in range(4)]  # one population
    for num in range(4):
        overrides, metrics = _job(tmp_path, num)
        lr, seed = overrides["optimizer.lr"], overrides["seed"]
        _same(metrics, _alone(tmp_path, str(num), f"optimizer.lr={lr}", f"seed={seed}"))
        row = summary[summary.job == num].iloc[0]
        assert row["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-9)
        # resolved as a normal multirun job: its own dir, its own seed
        info = json.loads((sweep / str(num) / "run_info.json").read_text())
        assert info["output_dir"] == str(sweep / str(num)) and info["seed"] == int(seed)
        hydra = yaml.safe_load((sweep / str(num) / ".hydra" / "hydra.yaml").read_text())
        assert hydra["hydra"]["runtime"]["output_dir"] == str(sweep / str(num))
        assert hydra["hydra"]["job"]["num"] == num
        assert (sweep / str(num) / "checkpoints" / "best.ckpt").is_file()
    # a population's files stay in its own dir: the sweep's summary.csv is SweepSummary's
    assert (sweep / "population_0" / "metrics.csv").is_file()


def test_jobs_that_cant_stack_are_separate_populations(tmp_path, monkeypatch):
    code = _sweep(tmp_path, monkeypatch, "model.hidden_sizes=[4],[8]", "seed=1,2")
    assert code == 0
    sweep = _sweep_dir(tmp_path)
    pops = sorted(sweep.glob("population_*"))
    assert [p.name for p in pops] == ["population_0", "population_1"]
    seen = []
    for pop in pops:
        sizes = set()
        for run_dir in pd.read_csv(pop / "summary.csv").run_dir:
            config = yaml.safe_load((sweep / run_dir / "config.yaml").read_text())
            sizes.add(tuple(config["model"]["hidden_sizes"]))
            seen.append(int(run_dir.rsplit("/", 1)[1]))
        assert len(sizes) == 1  # never mixed
    assert sorted(seen) == [0, 1, 2, 3]
    for num in range(4):
        overrides, metrics = _job(tmp_path, num)
        hidden, seed = overrides["model.hidden_sizes"], overrides["seed"]
        _same(metrics, _alone(tmp_path, str(num), f"model.hidden_sizes={hidden}", f"seed={seed}"))
    assert set(pd.read_csv(sweep / "summary.csv").status) == {"ok"}


def test_max_members_splits_a_group_and_clipping_members_stack(tmp_path, monkeypatch, capsys):
    """Members differ in gradient clipping too; max_members=2 makes two populations of 2."""
    args = ["trainer.max_epochs=2", "trainer.gradient_clip_val=0,0.5", "seed=1,2"]
    code = _sweep(tmp_path, monkeypatch, *args, "hydra.launcher.max_members=2")
    assert code == 0
    sweep = _sweep_dir(tmp_path)
    assert sorted(p.name for p in sweep.glob("population_*")) == ["population_0", "population_1"]
    assert "a plain run" not in capsys.readouterr().out
    for num in range(4):
        overrides, metrics = _job(tmp_path, num)
        assert not (sweep / str(num) / "checkpoints" / "last.ckpt").is_file()  # a member
        own = [f"{key}={overrides[key]}" for key in ("trainer.gradient_clip_val", "seed")]
        _same(metrics, _alone(tmp_path, str(num), "trainer.max_epochs=2", *own))
    assert set(pd.read_csv(sweep / "summary.csv").status) == {"ok"}


def test_a_diverging_job_fails_alone_and_the_sweep_says_so(tmp_path, monkeypatch, capfd):
    code = _sweep(tmp_path, monkeypatch, "optimizer=sgd", "optimizer.lr=0.1,1e30", "seed=3")
    assert code == 1  # SweepSummary: a multirun with failed jobs
    summary = pd.read_csv(_sweep_dir(tmp_path) / "summary.csv")
    assert list(summary.status) == ["ok", "failed"]
    assert "diverged" in summary.error[1]
    err = capfd.readouterr().err
    assert "error: job 1: training diverged" in err and "Traceback" not in err
    alone = _alone(tmp_path, "ok", "optimizer=sgd", "optimizer.lr=0.1", "seed=3")
    _same(_job(tmp_path, 0)[1], alone)


def test_a_population_that_cant_start_fails_its_jobs_only(tmp_path, monkeypatch, capfd):
    code = _sweep(tmp_path, monkeypatch, "trainer.max_epochs=2", "model.hidden_sizes=[4],[-3]")
    assert code == 1
    summary = pd.read_csv(_sweep_dir(tmp_path) / "summary.csv")
    assert list(summary.status) == ["ok", "failed"]
    assert summary.error[1].startswith("model.hidden_sizes=[-3] is invalid")
    err = capfd.readouterr().err
    assert "error: population 1 (jobs 1): model.hidden_sizes=[-3] is invalid" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["trainer.devices=2"], "trainer.devices=2 is invalid: one device per job"),
        (["seeds=2"], "seeds=2 is invalid"),
        (["ckpt_path=x.ckpt"], "from its own checkpoint, add resume=auto"),
        (["hydra.launcher.max_members=0"], "hydra.launcher.max_members=0 is invalid"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(args, named, tmp_path, monkeypatch, capfd):
    code = _sweep(tmp_path, monkeypatch, "seed=1,2", *args)
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err[-2000:]
    assert named in errors[0], errors[0]
    assert "Traceback" not in err
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written


def test_the_plugin_imports_cheaply():
    """Hydra imports every hydra_plugins module on each start-up (also ``--help``)."""
    code = (
        "import sys, hydra_plugins.mlplab_launcher.population_launcher as p; "
        "print(p.PopulationLauncherConf._target_, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "hydra_plugins.mlplab_launcher.population_launcher.PopulationLauncher",
        "False",
    ]


@pytest.mark.slow
@pytest.mark.install
def test_the_wheel_ships_the_launcher(tmp_path):
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", str(ROOT), "--no-deps", "-w", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("mlplab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hydra_plugins/mlplab_launcher/population_launcher.py" in names
    assert "mlplab/conf/hydra/launcher/population.yaml" in names
    assert "hydra_plugins/__init__.py" not in names  # a namespace package, shared with Hydra's
