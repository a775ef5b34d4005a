"""A population split into chunks that fit in memory: the estimate, the split, the results."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from mlplab.composer import compose_runs
from mlplab.population.chunks import chunks, estimate_bytes, memory_bound, parameter_count

from mlplab.config import compose_run
from mlplab.errors import ConfigError
from mlplab.population import chunks as chunking
from mlplab.train import train

BASE = [
    "data=moons",
    "data.options.n_samples=300",
    "trainer.max_epochs=5",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
]


def _cfgs(tmp_path, n: int, *overrides: str, vary: str = "seed") -> list:
    members = [[*BASE, *overrides, f"{vary}={s + 1}"] for s in range(n)]
    return compose_runs(tmp_path / "pop", members)


def test_the_estimate_is_linear_in_members_and_grows_with_width(tmp_path):
    assert parameter_count(2, [16, 16], 1) == 3 * 16 + 17 * 16 + 17 * 1
    for vary, sizes in (("seed", (2, 3, 4, 5)), ("optimizer.lr", (1, 2, 3, 4))):
        estimates = [estimate_bytes(_cfgs(tmp_path, k, vary=vary)) for k in sizes]
        steps = {b - a for a, b in zip(estimates, estimates[1:], strict=False)}
        assert len(steps) == 1 and steps.pop() > 0  # fixed + K × per member
    # own splits (seeds): each member holds its data; one split (learning rates): one copy
    assert estimate_bytes(_cfgs(tmp_path, 4)) > estimate_bytes(
        _cfgs(tmp_path, 4, vary="optimizer.lr")
    )
    narrow = estimate_bytes(_cfgs(tmp_path, 3, "model.hidden_sizes=[16]"))
    wide = estimate_bytes(_cfgs(tmp_path, 3, "model.hidden_sizes=[256]"))
    assert wide > 8 * narrow > 0
    # Adam keeps 2 state tensors per weight, SGD 1 (its momentum buffer)
    adam = estimate_bytes(_cfgs(tmp_path, 3, "optimizer=adam", "model.hidden_sizes=[256]"))
    sgd = estimate_bytes(_cfgs(tmp_path, 3, "optimizer=sgd", "model.hidden_sizes=[256]"))
    assert adam - sgd == 3 * parameter_count(2, [256], 1) * 4


def test_memory_bound_is_a_share_of_what_is_free(tmp_path):
    bound = memory_bound(_cfgs(tmp_path, 1, "trainer.accelerator=cpu")[0])
    assert bound is None or 0 < bound < chunking._available_ram()


def test_chunks_keep_groups_apart_and_follow_the_knob(tmp_path, monkeypatch):
    monkeypatch.setattr(chunking, "memory_bound", lambda cfg: None)  # no bound: the knob only
    cfgs = _cfgs(tmp_path, 5, "optimizer.lr=0.01")
    cfgs[3:3] = _cfgs(tmp_path, 2, "model.hidden_sizes=[8]")  # another architecture
    assert chunks(cfgs) == [[0, 1, 2, 5, 6], [3, 4]]
    assert chunks(cfgs, max_members=2) == [[0, 1], [2, 5], [6], [3, 4]]
    assert chunks(cfgs[:1], max_members=1) == [[0]]


@pytest.mark.parametrize("bad", [0, -2, 2.5, "3", True])
def test_bad_max_members_is_one_line(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"^max_members=.* is invalid: null or an integer >= 1"):
        chunks(_cfgs(tmp_path, 2), max_members=bad)


def test_short_memory_trains_seeds_in_chunks_with_the_same_results(tmp_path, monkeypatch, capsys):
    """5 seeds where 2 fit: chunks of 2, 2, 1; every member's numbers as in one population,
    one figure and one wandb run for all of them."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [o for o in BASE if "learning_curves" not in o] + ["seeds=5", "seed=7"]
    one = train(compose_run(tmp_path / "one", *overrides))
    need = chunking._footprint(_cfgs(tmp_path, 5))  # seeds: each member its own split
    monkeypatch.setattr(chunking, "memory_bound", lambda cfg: need.bytes(2) + need.per_member // 2)
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
    (run,) = (tmp_path / "split" / "wandb").glob("offline-run-*/*.wandb")
    record = run.read_bytes()
    assert all(f"val/loss/member_{k:03d}".encode() in record for k in range(5))
    history = pd.read_csv(tmp_path / "split" / "metrics.csv")
    assert sorted(set(history.member)) == [0, 1, 2, 3, 4]
    expected = pd.read_csv(tmp_path / "one" / "metrics.csv")  # rows in the same order
    pd.testing.assert_frame_equal(history, expected, atol=1e-6, rtol=0)


def test_chunks_keep_their_own_checkpoints_and_resume_one_by_one(tmp_path, monkeypatch):
    """seeds=3 in chunks of 2 and 1: chunk i's checkpoint in chunk_<i>/; resume=auto after
    chunk 1 was lost retrains that chunk only, to the same numbers."""
    monkeypatch.setattr("mlplab.population.resume.CHECKPOINT_EVERY_S", 0.0)
    overrides = [o for o in BASE if "learning_curves" not in o] + ["seeds=3", "logger=csv"]
    need = chunking._footprint(_cfgs(tmp_path, 3))
    monkeypatch.setattr(chunking, "memory_bound", lambda cfg: need.bytes(2) + need.per_member // 2)
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
