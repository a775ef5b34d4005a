"""Data paths are recorded absolute: a run trained on ``data.options.path=my.csv`` re-runs,
evaluates and predicts from any folder, and a data file moved since is one clear error."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from mlplab.config import compose_config, compose_run, portable_data
from mlplab.data.sources import PATH_OPTIONS, SOURCES, resolve_paths
from mlplab.errors import ConfigError
from tests.conftest import run_cli

CSV = ["data=csv", "data.options.path=people.csv", "data.options.target=buys"]
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.max_epochs=1"]


def people(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    city = rng.choice(["Boston", "Denver"], n)
    return pd.DataFrame({"age": age, "city": city, "buys": (age > 45).astype(int)})


def test_relative_paths_become_absolute_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {"source": "csv", "options": {"path": "sub/../my.csv", "target": "y"}}
    resolve_paths(data)
    assert data["options"] == {"path": str(tmp_path / "my.csv"), "target": "y"}
    flights = {"source": "flights", "options": {"cache_dir": "cache", "sample": None}}
    resolve_paths(flights)
    assert flights["options"]["cache_dir"] == str(tmp_path / "cache")
    home = {"source": "csv", "options": {"path": "~/my.csv"}}
    resolve_paths(home)
    assert home["options"]["path"] == str(Path.home() / "my.csv")


@pytest.mark.parametrize(
    "data",
    [
        {"source": "csv", "options": {"path": "/data/my.csv"}},  # absolute already
        {"source": "csv", "options": {"path": "${paths.output_dir}/my.csv"}},  # a reference
        {"source": "csv", "options": {"path": None}},
        {"source": "moons", "options": {"n_samples": 10}},  # no path options
        {"_target_": "my.DataModule", "rows": 3},  # another DataModule
    ],
)
def test_what_is_not_a_relative_path_is_left_as_it_is(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = repr(data)
    resolve_paths(data)
    assert repr(data) == before


def test_path_options_are_options_of_their_source():
    import inspect

    for name, options in PATH_OPTIONS.items():
        assert set(options) <= set(inspect.signature(SOURCES[name]).parameters), name
        assert set(options.values()) <= {"table", "folder"}


def test_a_config_node_and_its_saved_config_get_the_absolute_path(tmp_path, monkeypatch):
    """``train()`` resolves the config it runs; ``portable_data`` (config.yaml of a run, of
    population members and of sweep trials) resolves what it records."""
    monkeypatch.chdir(tmp_path)
    cfg = compose_run(tmp_path / "run", *CSV)
    assert portable_data(cfg)["data"]["options"]["path"] == str(tmp_path / "people.csv")
    assert cfg.data.options.path == "people.csv"  # portable_data leaves the config alone
    resolve_paths(cfg.data)
    assert cfg.data.options.path == str(tmp_path / "people.csv")
    assert OmegaConf.is_config(cfg.data.options)


def test_a_run_on_a_relative_path_reruns_evaluates_and_predicts_elsewhere(tmp_path, monkeypatch):
    from mlplab.train import main as train_main

    here, elsewhere, logs = tmp_path / "a", tmp_path / "b", tmp_path / "logs"
    here.mkdir()
    elsewhere.mkdir()
    people(80).to_csv(here / "people.csv", index=False)
    monkeypatch.chdir(here)  # mlplab-train as run in folder a (in this process: faster)
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    train_main([*CSV, *QUIET, f"paths.log_dir={logs}", "run_name=r"])
    run_dir, data = logs / "train" / "r", str(here / "people.csv")
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["options"]["path"] == data
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["datamodule_hyper_parameters"]["options"]["path"] == data

    rerun = run_cli(f"rerun={run_dir}", f"paths.log_dir={logs}", "run_name=again", cwd=elsewhere)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (logs / "train" / "again" / "checkpoints" / "best.ckpt").is_file()
    evaluated = run_cli(
        f"ckpt_path={ckpt}", "accelerator=cpu", cwd=elsewhere, module="mlplab.evaluate"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "test metrics (16 rows)" in evaluated.stdout  # 80 rows, test_fraction 0.2
    people(7, seed=1).drop(columns="buys").to_csv(elsewhere / "new.csv", index=False)
    predicted = run_cli(
        f"ckpt_path={ckpt}", "input=new.csv", cwd=elsewhere, module="mlplab.predict"
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert len(predicted.stdout.strip().splitlines()) == 1 + 7  # header + rows


def test_a_moved_data_file_is_one_error_naming_where_it_was(tmp_path, monkeypatch):
    from mlplab.evaluate import evaluate
    from mlplab.train import train

    (tmp_path / "a").mkdir()
    people(60).to_csv(tmp_path / "a" / "people.csv", index=False)
    monkeypatch.chdir(tmp_path / "a")
    train(compose_run(tmp_path / "run", *CSV, "trainer.max_epochs=1"))
    was = tmp_path / "a" / "people.csv"
    shutil.move(was, tmp_path / "people.csv")
    monkeypatch.chdir(tmp_path)  # where a file of that name is now: still the recorded place
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", "accelerator=cpu"])
    with pytest.raises(ConfigError) as err:
        evaluate(cfg)
    assert f"data.options.path was {was} at training time and is not there now" in str(err.value)
    assert "input=<file>" in str(err.value)
    rerun = run_cli(f"rerun={tmp_path / 'run'}", cwd=tmp_path)
    errors = [line for line in rerun.stderr.splitlines() if line.startswith("error: ")]
    assert rerun.returncode == 2 and len(errors) == 1, rerun.stderr[-2000:]
    assert f"'{was}' not found (looked at {was})" in errors[0]
