"""A population's own checkpoint: ``resume=auto`` continues a killed population (``seeds=N``,
``cv=K``) to exactly the outputs of an uninterrupted one, a checkpoint that can't be continued
is refused in one line before anything is written, and ``rerun=`` of a population's or a
member's dir reproduces it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from mlplab.config import compose_run
from mlplab.errors import ConfigError
from mlplab.population.checkpoint import FORMAT, RUN_KEY, find_chunk_checkpoints, fingerprint
from mlplab.population.engine import train_population
from mlplab.population.module import PopulationModule
from mlplab.population.stacked import StackedMLP
from mlplab.run.rundir import check_run_dir
from mlplab.train import main as train_main
from tests.conftest import run_cli
from tests.population.test_engine import BASE

CKPT = Path("checkpoints") / "population.ckpt"
STOP = ["regularization=early_stopping", "callbacks.early_stopping.min_delta=0.5"]
# Member 2 diverges in its first step; member 3 stops after epoch 4 (no epoch improves the
# val loss by min_delta=0.5: its patience of 4 is half used at a kill after epoch 2); members
# 0 and 1 train on, member 1 with its own dropout masks and activation.
PATIENCE = "callbacks.early_stopping.patience"
MEMBERS = [
    {"seed": 1, "optimizer.lr": 0.1, "model.dropout": 0.0, PATIENCE: 99},
    {
        "seed": 2,
        "optimizer.lr": 0.05,
        "model.dropout": 0.2,
        "model.activation": "tanh",
        PATIENCE: 99,
    },
    {"seed": 3, "optimizer.lr": 1e30, "model.dropout": 0.1, PATIENCE: 99},
    {"seed": 4, "optimizer.lr": 0.1, "model.dropout": 0.1, PATIENCE: 4},
]
SCHEDULES = {
    "sgd-step": [
        "optimizer=sgd",
        "optimizer.momentum=0.9",
        "scheduler=step",
        "scheduler.step_size=2",
    ],
    "adam-plateau": ["optimizer=adam", "scheduler=plateau", "scheduler.patience=0"],
}
QUIET_CLI = ["logger=csv", "trainer.enable_progress_bar=false", "print_config=false", "threads=1"]


@pytest.fixture(autouse=True, scope="module")
def _save_every_epoch():
    """These tests kill populations after epoch e and expect its checkpoint: save every epoch
    (the default saves every 10 s; ``test_checkpoints_are_saved_every_so_many_seconds``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("mlplab.population.checkpoint.CHECKPOINT_EVERY_S", 0.0)
        yield


def _train(out_dir, *extra: str, members=MEMBERS, **kwargs):
    """``train_population`` of ``members`` on the shared ``BASE`` + ``STOP`` + ``extra``."""
    cfg = compose_run(out_dir, *BASE, "threads=1", *STOP, *extra)
    return train_population(cfg, members, out_dir, **kwargs)


def _kill_at(epoch: int):
    """An ``on_epoch`` hook that stops the process the way a crash would, after validation of
    ``epoch``: its history rows exist in memory only, its checkpoint was never written."""

    def hook(e, rows):
        if e == epoch:
            raise KeyError("simulated kill")
        return []

    return hook


def _outputs(out_dir: Path) -> dict:
    """What a population leaves: its tables and every member's files (weights as tensors)."""
    out = {
        "summary": pd.read_csv(out_dir / "summary.csv").drop(columns="run_dir"),
        "history": pd.read_csv(out_dir / "metrics.csv"),
    }
    for member in sorted(p for p in out_dir.iterdir() if p.name.startswith("member_")):
        for name in ("metrics.json", "error.txt"):
            if (member / name).is_file():
                out[f"{member.name}/{name}"] = (member / name).read_text()
        best = member / "checkpoints" / "best.ckpt"
        if best.is_file():
            raw = torch.load(best, weights_only=True)
            out[f"{member.name}/best"] = (raw["epoch"], raw["state_dict"])
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    pd.testing.assert_frame_equal(a.pop("summary"), b.pop("summary"), check_exact=True)
    pd.testing.assert_frame_equal(a.pop("history"), b.pop("history"), check_exact=True)
    for key, value in a.items():
        if key.endswith("/best"):
            assert value[0] == b[key][0], key
            for name, tensor in value[1].items():
                assert torch.equal(tensor, b[key][1][name]), f"{key} {name}"
        else:
            assert value == b[key], key


def _files(root: Path) -> dict:
    """Every file under ``root`` but Hydra's start-up files: size and modification time."""
    return {
        p: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"
    }


# ---- train_population(..., resume=True) --------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_a_killed_population_resumes_to_the_uninterrupted_result(tmp_path, schedule):
    """A diverged member stays diverged, a member whose patience is half used at the kill stops
    at the epoch it stops at uninterrupted, the others end with the same weights, bit for bit."""
    whole = _train(tmp_path / "whole", *schedule)
    assert list(whole.status) == ["ok", "ok", "diverged", "stopped"]
    assert whole.stopped_epoch[3] == 4  # its patience is half used at the kill below

    out = tmp_path / "killed"
    with pytest.raises(KeyError, match="simulated kill"):  # resume=True, no checkpoint: fresh
        _train(out, *schedule, on_epoch=_kill_at(3), resume=True)
    saved = torch.load(out / CKPT, weights_only=True)  # loads safely, no pickled objects
    assert saved["epoch"] == 2 and saved["population"]["status"][2:] == ["diverged", "ok"]
    assert saved["population"]["wait"][3] == 2  # two of its four epochs of patience used
    assert not list((out / "checkpoints").glob("*.tmp"))  # written atomically
    assert not (out / "summary.csv").exists()

    _train(out, *schedule, resume=True)
    _assert_same(_outputs(tmp_path / "whole"), _outputs(out))


def test_checkpoints_are_saved_every_so_many_seconds(tmp_path, monkeypatch):
    """With a long interval: a save after the first epoch, none until the last; a kill at
    epoch 3 resumes from epoch 0 and still ends as the uninterrupted run."""
    monkeypatch.setattr("mlplab.population.checkpoint.CHECKPOINT_EVERY_S", 3600.0)
    schedule = SCHEDULES["sgd-step"]
    out = tmp_path / "killed"
    with pytest.raises(KeyError, match="simulated kill"):
        _train(out, *schedule, on_epoch=_kill_at(3), resume=True)
    assert torch.load(out / CKPT, weights_only=True)["epoch"] == 0
    _train(out, *schedule, resume=True)
    assert torch.load(out / CKPT, weights_only=True)["epoch"] == 5  # the last epoch: saved
    whole = _train(tmp_path / "whole", *schedule)
    assert list(whole.status) == ["ok", "ok", "diverged", "stopped"]
    _assert_same(_outputs(tmp_path / "whole"), _outputs(out))


@pytest.mark.parametrize(
    "stop", [[], ["callbacks.early_stopping.patience=1"]], ids=["max-epochs", "all-stopped"]
)
def test_a_finished_population_resumed_trains_nothing_and_writes_the_same(
    tmp_path, monkeypatch, stop
):
    """The checkpoint of the last epoch (or of the epoch the last member stopped in) is the
    end: resuming trains no step and rewrites the outputs as they were."""
    members = [{"seed": s} for s in (1, 2)]
    shared = ["trainer.max_epochs=4", "optimizer.lr=0.05", *stop]
    _train(tmp_path / "pop", *shared, members=members)
    before = _outputs(tmp_path / "pop")
    epoch = torch.load(tmp_path / "pop" / CKPT, weights_only=True)["epoch"]
    assert epoch == (1 if stop else 3)

    def no_step(self, *args):
        raise AssertionError("a finished population trained again")

    monkeypatch.setattr(PopulationModule, "training_step", no_step)
    _train(tmp_path / "pop", *shared, members=members, resume=True)
    _assert_same(before, _outputs(tmp_path / "pop"))
    assert torch.load(tmp_path / "pop" / CKPT, weights_only=True)["epoch"] == epoch


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-member population, 2 epochs (copied by each test that damages it)."""
    out = tmp_path_factory.mktemp("trained") / "pop"
    _train(out, "trainer.max_epochs=2", members=_members(0.1, 0.05))
    return out


def _members(*lrs: float) -> list[dict]:
    return [{"seed": k + 1, "optimizer.lr": lr} for k, lr in enumerate(lrs)]


@pytest.mark.parametrize(
    ("lrs", "damage", "message"),
    [
        ((0.1, 0.05), "truncate", "is invalid: the file is damaged or truncated"),
        ((0.1, 0.05), "not-population", "is not a population checkpoint mlplab can continue"),
        ((0.1, 0.05, 0.2), None, "holds a population of 2 members, this run has 3"),
        (
            (0.1, 0.01),
            None,
            "member 1 was trained with optimizer.lr=0.05 (now 0.01)",
        ),
    ],
)
def test_a_checkpoint_that_cant_be_continued_is_one_error_and_writes_nothing(
    trained, tmp_path, lrs, damage, message
):
    out = tmp_path / "pop"
    shutil.copytree(trained, out)
    path = out / CKPT
    if damage == "truncate":  # as a copy cut short, or a disk that filled up
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "not-population":  # a normal run's checkpoint put in its place
        torch.save({"epoch": 1, "state_dict": {}}, path)
    before = _files(out)
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        _train(out, "trainer.max_epochs=2", members=_members(*lrs), resume=True)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert _files(out) == before
    if damage == "truncate":  # said before Hydra starts too, with the way out
        with pytest.raises(ConfigError, match=f"delete {path} to train the population again"):
            check_run_dir(out, "auto")


def test_a_members_gradient_clipping_is_part_of_what_it_was_trained_with():
    """A resume with another clip value mixes two trainings (a run's clip is in its hparams,
    so a stand-alone resume refuses it); training longer is a resume."""
    member = {"seed": 1, "trainer": {"gradient_clip_val": 0.01, "max_epochs": 2}}
    for key, value, same in (
        ("gradient_clip_val", 0.0, False),
        ("gradient_clip_algorithm", "value", False),
        ("max_epochs", 5, True),
    ):
        other = {"seed": 1, "trainer": member["trainer"] | {key: value}}
        assert (fingerprint(other) == fingerprint(member)) is same, key


def test_a_dir_holding_a_population_is_refused_without_resume(trained):
    with pytest.raises(ConfigError, match="already holds a run: .* add resume=auto"):
        check_run_dir(trained, None)
    check_run_dir(trained, "auto")


def test_chunk_checkpoints_are_checked_in_chunk_order_past_ten_chunks(tmp_path):
    """A population in 12 chunks: chunk_10 follows chunk_9 (not chunk_1), so each chunk's
    checkpoint is checked against its own members and the first chunk's is the one to go on
    from; a chunk of other members is still named."""
    configs = [{"seed": k} for k in range(12)]
    for k, config in enumerate(configs):  # chunk k: member k, saved after epoch k
        path = tmp_path / f"chunk_{k}" / CKPT
        path.parent.mkdir(parents=True)
        run = {"format": FORMAT, "members": json.dumps([fingerprint(config)])}
        torch.save({RUN_KEY: run, "population": {}, "state_dict": {}, "epoch": k}, path)
    path, raw = find_chunk_checkpoints(tmp_path, configs)
    assert path == tmp_path / "chunk_0" / CKPT and raw["epoch"] == 0
    configs[11] = {"seed": 99}
    with pytest.raises(ConfigError, match=r"chunk_11/.* member 0 was trained with seed=11"):
        find_chunk_checkpoints(tmp_path, configs)


# ---- the command line: seeds=N, cv=K ----------------------------------------------------------
def _cli(tmp_path, monkeypatch, *args: str) -> int:
    """``mlplab-train BASE ARGS`` in this process, logs under tmp_path; the exit code."""
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", ["mlplab-train"])
    try:
        train_main([*BASE, *QUIET_CLI, f"paths.log_dir={tmp_path}", *args])
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def _crash_at(monkeypatch, epoch: int) -> None:
    """Every population in this process crashes after validating ``epoch`` (until undone)."""
    original = PopulationModule.on_validation_epoch_end

    def crash(self):
        original(self)
        if self.current_epoch == epoch:
            raise KeyError("simulated kill")

    monkeypatch.setattr(PopulationModule, "on_validation_epoch_end", crash)


@pytest.mark.parametrize("population", [["seeds=3"], ["cv=3"]], ids=["seeds", "cv"])
def test_cli_resume_auto_continues_a_killed_population(tmp_path, monkeypatch, capfd, population):
    args = [*population, "optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.9"]
    assert _cli(tmp_path, monkeypatch, *args, "run_name=whole") == 0
    with monkeypatch.context() as crashing:
        _crash_at(crashing, 2)
        assert _cli(tmp_path, crashing, *args, "run_name=p") != 0
    run_dir = tmp_path / "train" / "p"
    assert torch.load(run_dir / CKPT, weights_only=True)["epoch"] == 1
    capfd.readouterr()

    assert _cli(tmp_path, monkeypatch, *args, "run_name=p") == 2  # never written over
    err = capfd.readouterr().err
    assert "already holds a run" in err and "add resume=auto" in err

    assert _cli(tmp_path, monkeypatch, *args, "run_name=p", "resume=auto") == 0
    assert f"population: resuming from {run_dir / CKPT} (after epoch 1)" in capfd.readouterr().out
    whole = tmp_path / "train" / "whole"
    _assert_same(_outputs(whole), _outputs(run_dir))
    assert (run_dir / "metrics.json").read_text() == (whole / "metrics.json").read_text()

    # Run again when finished: nothing trains, the same results are written.
    assert _cli(tmp_path, monkeypatch, *args, "run_name=p", "resume=auto") == 0
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(
        (whole / "metrics.json").read_text()
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["seeds=3", "seed=1"], "seeds=3 is invalid here: the run in {run_dir} has seeds=2"),
        (["seeds=2", "seed=7"], "member 0 was trained with data.seed=1 (now 7), seed=1 (now 7)"),
        (["seeds=2", "seed=1", "model.dropout=0.5"], "member 0 was trained with model.dropout"),
        (["cv=2", "seed=1"], "cv=2 is invalid here: the run in {run_dir} has cv=None"),
        (["seeds=2", "seed=1", "damaged"], "population checkpoint '"),
    ],
)
def test_cli_resume_of_other_members_or_a_damaged_file_is_one_error_line(
    tmp_path, monkeypatch, capfd, args, named
):
    assert _cli(tmp_path, monkeypatch, "seeds=2", "seed=1", "run_name=p") == 0
    run_dir = tmp_path / "train" / "p"
    if "damaged" in args:
        args = [a for a in args if a != "damaged"]
        (run_dir / CKPT).write_bytes(b"PK\x03\x04 cut short")
    before = _files(tmp_path)
    capfd.readouterr()
    code = _cli(tmp_path, monkeypatch, *args, "run_name=p", "resume=auto")
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err[-1500:]
    if "{run_dir}" in named:  # what the run is: said from its config, before its checkpoint
        assert named.format(run_dir=run_dir) in errors[0], errors[0]
    else:
        assert named in errors[0] and str(run_dir / CKPT) in errors[0], errors[0]
    assert "Traceback" not in err
    assert _files(tmp_path) == before


def test_rerun_of_a_population_or_a_member_reproduces_its_metrics(tmp_path, monkeypatch):
    """``rerun=<population dir>`` trains every member again (member 1's split follows its own
    seed, as in the first run), ``rerun=<member dir>`` that member alone: the same metrics."""
    args = ["seeds=2", "optimizer=sgd", "optimizer.lr=0.1", "model.dropout=0.2"]
    assert _cli(tmp_path, monkeypatch, *args, "run_name=p") == 0
    first = tmp_path / "train" / "p"
    for source, name in ((first, "again"), (first / "member_001", "one")):
        done = run_cli(
            f"rerun={source}", f"run_name={name}", f"paths.log_dir={tmp_path}", cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr[-2000:]
    again = tmp_path / "train" / "again"
    for k in (0, 1):
        member = f"member_{k:03d}/metrics.json"
        assert json.loads((again / member).read_text()) == json.loads((first / member).read_text())
    one = json.loads((tmp_path / "train" / "one" / "metrics.json").read_text())
    want = json.loads((first / "member_001" / "metrics.json").read_text())
    assert one.keys() == want.keys()
    for key, value in want.items():  # alone: MLPModule's torchmetrics, not the stacked ones
        assert one[key] == pytest.approx(value, abs=1e-5), key


def test_loading_a_population_checkpoint_leaves_the_global_random_state_alone():
    """The dropout masks go on from the checkpoint's own generator; the process's generators
    (what the caller seeded) are untouched by loading."""
    net = StackedMLP(2, [8], 1, dropout=0.5, seeds=[1, 2])
    x, y = torch.randn(2, 20, 2), torch.rand(2, 20).round()
    module = PopulationModule(net, x, y, "binary", "torch.optim.SGD", [{"lr": 0.1}] * 2, [0.0] * 2)
    module.net.train()(x)  # some masks drawn
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    next_masks = module.net(x)
    other = StackedMLP(2, [8], 1, dropout=0.5, seeds=[1, 2])
    other.load_state_dict(net.state_dict())
    loaded = PopulationModule(
        other, x, y, "binary", "torch.optim.SGD", [{"lr": 0.1}] * 2, [0.0] * 2
    )
    torch.manual_seed(123)
    state = torch.get_rng_state()
    loaded.on_load_checkpoint(checkpoint)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(loaded.net.train()(x), next_masks)


# ---- kill -9 ---------------------------------------------------------------------------------
DRIVER = """
import sys, time
import mlplab.population.checkpoint
from mlplab.population.checkpoint import FORMAT, RUN_KEY, find_chunk_checkpoints, fingerprint
from mlplab.population.module import PopulationModule
mlplab.population.checkpoint.CHECKPOINT_EVERY_S = 0.0  # a save every epoch: the kill waits
end = PopulationModule.on_train_epoch_end
def slow(self):  # slow epochs, so the kill lands mid-training
    end(self)
    time.sleep(0.3)
PopulationModule.on_train_epoch_end = slow
from mlplab.train import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_a_population_killed_with_sigkill_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch
):
    args = ["seeds=3", "trainer.max_epochs=12", "model.dropout=0.2", "scheduler=cosine"]
    args += ["scheduler.T_max=12"]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLPLAB_RUN_ID", None)
    cli = [*BASE, *QUIET_CLI, f"paths.log_dir={tmp_path}", *args, "run_name=p"]
    proc = subprocess.Popen(
        [sys.executable, str(driver), *cli],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = tmp_path / "train" / "p"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            ckpt = run_dir / CKPT
            if ckpt.is_file() and torch.load(ckpt, weights_only=True)["epoch"] >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the population ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run_dir / "summary.csv").exists()

    assert _cli(tmp_path, monkeypatch, *args, "run_name=p", "resume=auto") == 0
    assert _cli(tmp_path, monkeypatch, *args, "run_name=whole") == 0
    whole = tmp_path / "train" / "whole"
    _assert_same(_outputs(whole), _outputs(run_dir))
    assert (run_dir / "metrics.json").read_text() == (whole / "metrics.json").read_text()
