"""A population that doesn't fit in memory: the estimate, the chunks, the same results."""

from __future__ import annotations

import json
import shutil
import sys

import pandas as pd
import pytest
import yaml

from mlplab.config import compose_run
from mlplab.errors import ConfigError
from mlplab.population import engine, memory
from mlplab.population.engine import MemberConfigs, train_population
from mlplab.run import build
from mlplab.train import main as train_main
from mlplab.train import train

BASE = [
    "data=moons",
    "data.options.n_samples=300",
    "trainer.max_epochs=5",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
]


def _need(tmp_path, *overrides: str, shared: bool = False, kinds: int = 1) -> memory.Footprint:
    config = MemberConfigs(compose_run(tmp_path, *BASE, *overrides), [{}])[0]
    datamodule = build.build_datamodule(config)
    datamodule.setup("fit")
    return memory.footprint(config, datamodule, shared_split=shared, kinds=kinds)


def test_the_estimate_grows_with_width_data_and_optimizer_state(tmp_path):
    assert memory.parameter_count(2, [16, 16], 1) == 3 * 16 + 17 * 16 + 17 * 1
    need = _need(tmp_path)
    assert need.bytes(5) - need.bytes(4) == need.per_member > 0
    # own splits (seeds): each member holds its data; one split (learning rates): one copy
    shared = _need(tmp_path, shared=True)
    assert shared.per_member < need.per_member and shared.fixed > need.fixed == 0
    narrow, wide = (
        _need(tmp_path, "model.hidden_sizes=[16]"),
        _need(tmp_path, "model.hidden_sizes=[256]"),
    )
    assert wide.per_member > narrow.per_member
    # Adam keeps 2 state tensors per weight, SGD 1 (its momentum buffer)
    adam = _need(tmp_path, "optimizer=adam", "model.hidden_sizes=[256]")
    sgd = _need(tmp_path, "optimizer=sgd", "model.hidden_sizes=[256]")
    assert adam.per_member - sgd.per_member == memory.parameter_count(2, [256], 1) * 4
    # members with 3 activations keep 2 more outputs and 2 masks per unit and row
    mixed = _need(tmp_path, "model.hidden_sizes=[256]", kinds=3)
    assert mixed.per_member - wide.per_member == 32 * (256 + 1) * 4 * 4


def test_memory_bound_is_a_share_of_what_is_free(tmp_path):
    config = MemberConfigs(compose_run(tmp_path, *BASE, "trainer.accelerator=cpu"), [{}])[0]
    bound = memory.memory_bound(config)
    assert bound is None or 0 < bound < memory._available_ram()


@pytest.mark.parametrize("bad", [0, -2, 2.5, "3", True])
def test_bad_max_members_is_one_line(tmp_path, bad):
    cfg = compose_run(tmp_path / "pop", *BASE)
    with pytest.raises(ConfigError, match=r"^max_members=.* is invalid: null or an integer >= 1"):
        train_population(cfg, [{"seed": 1}, {"seed": 2}], tmp_path / "pop", max_members=bad)
    assert not (tmp_path / "pop").exists()


def test_short_memory_trains_seeds_in_chunks_with_the_same_results(
    tmp_path, monkeypatch, capsys, wandb_sent
):
    """5 seeds where 2 fit: chunks of 2, 2, 1; every member's numbers as in one population,
    one figure for all of them and a wandb run for each."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in BASE if "learning_curves" not in o] + ["seeds=5", "seed=7"]
    one = train(compose_run(tmp_path / "one", *overrides))
    need = _need(tmp_path)  # seeds: each member its own split
    bound = need.bytes(2) + need.per_member // 2
    monkeypatch.setattr(engine, "memory_bound", lambda config: bound)
    split = train(compose_run(tmp_path / "split", *overrides, "logger=wandb"))
    assert "trained in chunks of at most 2" in capsys.readouterr().out
    assert split.keys() == one.keys()
    for key, value in one.items():  # mean ± std over the seeds
        assert split[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    a = pd.read_csv(tmp_path / "one" / "summary.csv")
    b = pd.read_csv(tmp_path / "split" / "summary.csv")
    assert list(b.columns) == list(a.columns) and list(b.member) == [0, 1, 2, 3, 4]
    assert list(b.seed) == [7, 8, 9, 10, 11]
    assert [p.split("/")[-1] for p in b.run_dir] == [f"member_{k:03d}" for k in range(5)]
    metrics = [c for c in a.columns if "/" in c and c != "run_dir"]
    pd.testing.assert_frame_equal(b[metrics], a[metrics], atol=1e-6, rtol=0)
    for k in range(5):  # member dirs numbered on across chunks, each as in one population
        member = tmp_path / "split" / f"member_{k:03d}"
        saved = json.loads((member / "metrics.json").read_text())
        assert saved["test/loss"] == pytest.approx(b.iloc[k]["test/loss"], abs=1e-9)
        mine = yaml.safe_load((member / "config.yaml").read_text())
        same = yaml.safe_load((tmp_path / "one" / member.name / "config.yaml").read_text())
        assert mine.pop("logger") != same.pop("logger") and mine == same  # logger=wandb aside
    assert (tmp_path / "split" / "learning_curves.png").is_file()
    # a wandb run per member across the chunks, each with its own epochs, finished
    ids = [(tmp_path / "split" / f"member_{k:03d}" / "wandb_id").read_text() for k in range(5)]
    assert sorted(wandb_sent["runs"]) == sorted(ids)
    for run in wandb_sent["runs"].values():
        assert len(run["init"]) == 1 and run["exit_codes"] == [0]
        assert len([row for row in run["log"] if "val/loss" in row]) == 5  # its 5 epochs
    history = pd.read_csv(tmp_path / "split" / "metrics.csv")
    expected = pd.read_csv(tmp_path / "one" / "metrics.csv")  # rows in the same order
    pd.testing.assert_frame_equal(history, expected, atol=1e-6, rtol=0)


def test_members_of_several_activations_are_counted_in_the_chunks(tmp_path, monkeypatch):
    kinds = ["relu", "tanh", "sigmoid", "relu"]
    wide = ["model.hidden_sizes=[64]", "data.options.n_samples=2000", "data.batch_size=full"]
    one, mixed = _need(tmp_path, *wide, shared=True), _need(tmp_path, *wide, shared=True, kinds=3)
    bound = mixed.bytes(2) + mixed.per_member // 2
    assert one.bytes(3) <= bound  # one kind: 3 would fit
    monkeypatch.setattr(engine, "memory_bound", lambda config: bound)
    configs = MemberConfigs(
        compose_run(tmp_path / "pop", *BASE, *wide), [{"model.activation": a} for a in kinds]
    )
    first = build.build_datamodule(configs[0])
    first.setup("fit")
    assert engine._chunks(configs, first, None) == [[0, 1], [2, 3]]


def test_chunks_keep_their_own_checkpoints_and_resume_one_by_one(tmp_path, monkeypatch):
    """seeds=3 in chunks of 2 and 1: chunk i's checkpoint in chunk_<i>/; resume=auto after
    chunk 1 was lost retrains that chunk only, to the same numbers."""
    monkeypatch.setattr("mlplab.population.checkpoint.CHECKPOINT_EVERY_S", 0.0)
    overrides = [o for o in BASE if "learning_curves" not in o] + ["seeds=3", "logger=csv"]
    need = _need(tmp_path)
    bound = need.bytes(2) + need.per_member // 2
    monkeypatch.setattr(engine, "memory_bound", lambda config: bound)
    first = train(compose_run(tmp_path / "run", *overrides))
    ckpts = [tmp_path / "run" / f"chunk_{i}" / "checkpoints" / "population.ckpt" for i in (0, 1)]
    assert all(c.is_file() for c in ckpts)
    kept = ckpts[0].stat().st_mtime_ns
    ckpts[1].unlink()  # chunk 1 never saved: it trains again from the start
    for member in (tmp_path / "run").glob("member_*"):
        shutil.rmtree(member)
    again = train(compose_run(tmp_path / "run", *overrides, "resume=auto"))
    assert again == first
    assert ckpts[0].stat().st_mtime_ns == kept  # chunk 0 was done: loaded, nothing trained
    assert ckpts[1].is_file()
    assert sorted(p.name for p in (tmp_path / "run").glob("member_*")) == [
        "member_000",
        "member_001",
        "member_002",
    ]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["seeds=2"], "a population of 2: one member needs about"),  # not even one fits
        (["seeds=100000000"], "seeds=100000000 is invalid: at most 10000"),
    ],
)
def test_too_large_for_memory_is_one_error_line_and_writes_nothing(
    tmp_path, monkeypatch, capfd, args, named
):
    monkeypatch.setattr(engine, "memory_bound", lambda config: 1000)
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    with pytest.raises(SystemExit) as exit_info:
        train_main([*BASE, "logger=csv", f"paths.log_dir={tmp_path}", *args])
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(errors) == 1, err[-1500:]
    assert named in errors[0], errors[0]
    assert not (tmp_path / "train").exists() or not any((tmp_path / "train").rglob("*.*"))
