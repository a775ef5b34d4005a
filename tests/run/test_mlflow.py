"""logger=mlflow: each run's config and metrics in a local MLflow store (``<log dir>/mlflow.db``)
that ``mlflow ui`` reads; a population is a parent run with a nested run per member; without
the mlflow package, one error line before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlplab.train import train

TINY = [
    "logger=mlflow",
    "data=moons",
    "data.options.n_samples=200",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
]


def _runs(log_dir: Path, experiment: str = "train") -> tuple:
    """The MLflow client of ``log_dir``'s store and its runs of ``experiment``, by name."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{log_dir}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {log_dir}/mlflow.db"
    return client, {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


def _history(client, run, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


@pytest.fixture
def in_empty_folder(tmp_path, monkeypatch) -> Path:
    """Run from an empty folder: MLflow must write nothing into the current folder."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


def test_a_run_is_one_finished_mlflow_run_with_its_metrics_and_config(
    make_cfg, tmp_path, in_empty_folder
):
    pytest.importorskip("mlflow")
    logs = tmp_path / "logs"
    metrics = train(make_cfg(*TINY, f"paths.log_dir={logs}", "run_name=plain"))
    client, runs = _runs(logs)
    assert list(runs) == ["plain"]
    run = runs["plain"]
    assert run.info.status == "FINISHED"
    for key in ("val/loss", "train/loss", "test/loss", "test/acc"):
        assert run.data.metrics[key] == pytest.approx(metrics[key], rel=1e-6), key
    assert [step for step, _ in _history(client, run, "val/loss")] == [0, 1]  # one per epoch
    params = run.data.params
    assert params["config/data/source"] == "moons"
    assert params["config/trainer/max_epochs"] == "2"
    assert params["config/run_name"] == "plain"
    assert run.info.artifact_uri.startswith(str(logs))
    assert not list(in_empty_folder.iterdir())  # no ./mlruns, no ./mlartifacts


def test_a_run_that_fails_after_fitting_ends_failed(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlplab.run import build

    def broken(trainer):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(build, "best_checkpoint", broken)  # fails after Lightning's fit ended
    logs = tmp_path / "logs"
    with pytest.raises(RuntimeError, match="broken on purpose"):
        train(make_cfg(*TINY, f"paths.log_dir={logs}", "run_name=broken"))
    _, runs = _runs(logs)
    assert runs["broken"].info.status == "FAILED"


def test_a_population_is_a_parent_run_with_a_nested_run_per_member(make_cfg, tmp_path):
    pytest.importorskip("mlflow")
    logs = tmp_path / "logs"
    cfg = make_cfg(*TINY, "seeds=2", f"paths.log_dir={logs}", "run_name=pop", name="pop")
    metrics = train(cfg)  # the parent is named after the population's dir, as a CLI run's
    client, runs = _runs(logs)
    assert sorted(runs) == ["member_000", "member_001", "pop"]
    parent = runs["pop"]
    assert parent.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.params["population/size"] == "2"
    assert parent.data.metrics["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-6)
    assert parent.data.metrics["val/loss.std"] == pytest.approx(metrics["val/loss.std"], rel=1e-6)
    assert not any("member_" in key for key in parent.data.metrics)  # on their own runs
    children = [runs["member_000"], runs["member_001"]]
    for seed, child in enumerate(children, start=42):
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert child.data.params["seed"] == str(seed)
        assert [step for step, _ in _history(client, child, "val/loss")] == [0, 1]
        assert {"train/loss", "val/loss", "test/loss"} <= set(child.data.metrics)
    finals = [child.data.metrics["val/loss"] for child in children]
    assert finals[0] != finals[1]  # each member's own numbers
    assert sum(finals) / 2 == pytest.approx(metrics["val/loss"], rel=1e-6)


MISSING = """
import sys
sys.modules["mlflow"] = None  # as if mlflow were not installed: its import fails
from mlplab.train import main
try:
    main(sys.argv[1:])
except SystemExit as stop:
    print(stop.code, "lightning" in sys.modules)
"""


def test_without_mlflow_one_error_line_names_the_extra_and_nothing_is_written(tmp_path):
    logs = tmp_path / "logs"
    done = subprocess.run(
        [sys.executable, "-c", MISSING, *TINY, f"paths.log_dir={logs}", "run_name=x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: logger=mlflow needs the mlflow package: pip install 'mlplab[mlflow]'"
    ]
    assert not logs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
