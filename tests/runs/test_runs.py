"""``mlplab-runs`` on real run dirs (a 2 × 2 ``-m`` grid and a ``seeds=3`` population, trained
once per module) and on damaged copies of them: what it finds, compares, groups and draws, and
that it only reads."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import ROOT

from mlplab.run.rundir import RunLock
from mlplab.runs import main as runs_main
from mlplab.runs import matches, parse_where
from mlplab.train import main as train_main

TINY = [
    "data=moons",
    "data.options.n_samples=200",
    "trainer.max_epochs=2",
    "logger=csv",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
]
METRICS = ["val/loss", "val/acc", "test/acc"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """``logs/train/multirun/grid/{0..3}`` (optimizer.lr 0.1, 0.01 × seed 1, 2) and
    ``logs/train/pop/member_00{0,1,2}`` (seeds=3). Read only: tests that damage runs copy it."""
    logs = tmp_path_factory.mktemp("runs") / "logs"
    argv, run_id = sys.argv, os.environ.pop("MLPLAB_RUN_ID", None)
    sys.argv = ["mlplab-train"]
    try:
        common = [*TINY, f"paths.log_dir={logs}"]
        train_main(["-m", "optimizer.lr=0.1,0.01", "seed=1,2", "run_name=grid", *common])
        train_main(["seeds=3", "run_name=pop", *common])
    finally:
        sys.argv = argv
        if run_id is not None:
            os.environ["MLPLAB_RUN_ID"] = run_id
    return logs


def runs(capsys, *args: str) -> tuple[int, str, str]:
    """``mlplab-runs ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        runs_main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def records(capsys, *args: str) -> list[dict]:
    code, out, err = runs(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def grid_metrics(logs: Path) -> pd.DataFrame:
    """The grid's jobs as written: optimizer.lr, seed and every final metric."""
    rows = []
    for job, (lr, seed) in enumerate([(0.1, 1), (0.1, 2), (0.01, 1), (0.01, 2)]):
        metrics = json.loads(
            (logs / "train" / "multirun" / "grid" / str(job) / "metrics.json").read_text()
        )
        rows.append({"optimizer.lr": lr, "seed": seed} | metrics)
    return pd.DataFrame(rows)


def tree(folder: Path) -> dict[str, tuple]:
    """Every file and dir under ``folder``: size, modification time and content hash."""
    out = {}
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, digest)
    return out


def made_runs(root: Path, runs: dict[str, tuple[float, dict | None]]) -> Path:
    """Hand-written run dirs under ``root``: name → (optimizer.lr, metrics.json or None)."""
    for name, (lr, metrics) in runs.items():
        (root / name).mkdir(parents=True)
        (root / name / "config.yaml").write_text(f"optimizer:\n  lr: {lr}\n")
        if metrics is not None:
            (root / name / "metrics.json").write_text(json.dumps(metrics))
    return root


# ---- the table ------------------------------------------------------------------------------
def test_finds_multirun_jobs_and_population_members_and_shows_only_differing_keys(logs, capsys):
    rows = records(capsys, str(logs / "train"))
    names = [r["run"] for r in rows]
    assert names == [
        "multirun/grid/0",
        "multirun/grid/1",
        "multirun/grid/2",
        "multirun/grid/3",
        "pop/member_000",
        "pop/member_001",
        "pop/member_002",
    ]  # the population dir itself holds the members' mean: no row
    assert {r["status"] for r in rows} == {"ok"}
    config_keys = [
        k for k in rows[0] if k not in ("run", "status", "note", "path") and "/" not in k
    ]
    # data.seed is ${seed} in the grid's jobs but a number in the members: it differs too
    assert config_keys == ["data.seed", "optimizer.lr", "seed"]
    assert [r["seed"] for r in rows] == [1, 2, 1, 2, 42, 43, 44]
    assert [r["optimizer.lr"] for r in rows] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001]
    expected = grid_metrics(logs)
    for row, (_, job) in zip(rows, expected.iterrows(), strict=False):
        assert row["val/loss"] == job["val/loss"] and row["test/acc"] == job["test/acc"]


def test_the_grid_alone_differs_in_lr_and_seed(logs, capsys):
    code, out, err = runs(capsys, str(logs / "train" / "multirun"), "--metrics", "val/loss")
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header == ["run", "status", "optimizer.lr", "seed", "val/loss"]  # data.seed follows seed
    assert out.splitlines()[-1] == "4 runs (4 ok)"


def test_where_status_sort_and_metrics(logs, capsys):
    where = records(capsys, str(logs), "--where", "optimizer.lr=0.01")
    assert [r["run"] for r in where] == ["train/multirun/grid/2", "train/multirun/grid/3"]
    assert records(capsys, str(logs), "--where", "optimizer.lr=1.0e-2") == where  # as a number
    both = records(capsys, str(logs), "--where", "optimizer.lr=0.1", "--where", "seed=2")
    assert [r["run"] for r in both] == ["train/multirun/grid/1"]
    assert records(capsys, str(logs), "--where", "model.hidden_sizes=[16,16]", "--where", "seed=44")
    assert records(capsys, str(logs), "--status", "failed", "diverged") == []

    by_loss = records(capsys, str(logs), "--sort", "val/loss", "--metrics", "val/loss", "test/acc")
    losses = [r["val/loss"] for r in by_loss]
    assert losses == sorted(losses) and len(losses) == 7
    assert set(by_loss[0]) >= {"val/loss", "test/acc"} and "val/acc" not in by_loss[0]
    desc = records(capsys, str(logs), "--sort", "val/loss", "--desc")
    assert [r["val/loss"] for r in desc] == sorted(losses, reverse=True)


@pytest.mark.parametrize(
    "have, where, hit",
    [
        (0.01, "1e-2", True),  # the same number, spelled otherwise
        (0.0023456, "0.002346", True),  # as the table shows it (4 digits)
        (0.0023456, "0.0023", False),
        ([16, 16], "[16,16]", True),
        (None, "null", True),
        (True, "1", False),  # a flag is no number
    ],
)
def test_where_matches_a_value_or_what_the_table_shows(have, where, hit):
    ((key, text, value),) = parse_where([f"optimizer.lr={where}"])
    assert matches({"optimizer.lr": have}, key, text, value) is hit
    assert not matches({}, key, text, value)


def test_runs_without_the_sorted_metric_come_last_either_way(tmp_path, capsys):
    """--sort puts a missing or NaN value last, ascending and with --desc alike."""
    root = made_runs(
        tmp_path / "logs",
        {
            "a": (0.1, {"val/loss": 0.5, "test/acc": 0.7}),
            "b": (0.1, {"val/loss": 0.2}),  # no test/acc
            "c": (0.1, None),  # incomplete: no metrics at all
            "d": (0.1, {"val/loss": 0.3, "test/acc": 0.9}),
            "e": (0.1, {"val/loss": 0.4, "test/acc": math.nan}),
        },
    )
    up = records(capsys, str(root), "--sort", "test/acc")
    assert [r["run"] for r in up] == ["a", "d", "b", "c", "e"]
    down = records(capsys, str(root), "--sort", "test/acc", "--desc")
    assert [r["run"] for r in down] == ["d", "a", "b", "c", "e"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--where", "optimizer.learning_rate=0.1"], "did you mean optimizer.lr"),
        (["--where", "optimizer.lr"], "expected KEY=VALUE"),
        (["--group-by", "optimiser.lr"], "did you mean optimizer.lr"),
        (["--sort", "val/los"], "did you mean val/loss"),
        (["--metrics", "test/accuracy"], "did you mean test/acc"),
        (["--status", "done"], "invalid choice"),
    ],
)
def test_a_wrong_option_is_one_error_line(logs, capsys, args, named):
    code, out, err = runs(capsys, str(logs), *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err


@pytest.mark.parametrize("flag", ["--csv", "--plot-file"])
def test_an_output_in_a_missing_folder_is_one_error_line(logs, tmp_path, capsys, flag):
    extra = ["--plot", "val/loss"] if flag == "--plot-file" else []
    code, out, err = runs(capsys, str(logs), *extra, flag, str(tmp_path / "no" / "such.out"))
    assert code == 2 and out == "", out
    assert err.startswith(f"error: {flag} ") and err.count("\n") == 1, err
    assert "does not exist" in err


@pytest.mark.parametrize("flag", ["--csv", "--plot-file"])
def test_an_output_that_is_a_folder_is_one_error_line(logs, tmp_path, capsys, flag):
    extra = ["--plot", "val/loss"] if flag == "--plot-file" else []
    code, out, err = runs(capsys, str(logs), *extra, flag, str(tmp_path))
    assert code == 2 and out == "", out
    assert err.startswith(f"error: {flag} ") and err.count("\n") == 1, err
    assert "it is a folder" in err


def test_a_missing_folder_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = runs(capsys)
    assert code == 2 and err.startswith("error: logs does not exist"), err


def test_csv_and_markdown(logs, tmp_path, capsys):
    file = tmp_path / "runs.csv"
    code, out, err = runs(capsys, str(logs / "train" / "multirun"), "--csv", str(file))
    assert code == 0, err
    assert f"csv: {file}" in out
    table = pd.read_csv(file)
    expected = grid_metrics(logs)
    assert list(table["run"]) == [f"grid/{n}" for n in range(4)]
    assert list(table["optimizer.lr"]) == list(expected["optimizer.lr"])
    assert list(table["val/loss"]) == list(expected["val/loss"])  # full precision
    assert "data.seed" not in table

    code, out, _ = runs(
        capsys, str(logs / "train" / "multirun"), "--markdown", "--metrics", "val/loss"
    )
    lines = out.splitlines()
    assert lines[0] == "| run | status | optimizer.lr | seed | val/loss |"
    assert lines[1] == "| --- | --- | --- | --- | ---: |"
    assert all(line.startswith("| grid/") for line in lines[2:6])

    code, out, err = runs(capsys, str(logs / "train" / "multirun"), "--csv", "-")
    assert code == 0 and out.splitlines()[0].startswith("run,status,optimizer.lr,seed,")
    assert len(out.splitlines()) == 5


# ---- groups -----------------------------------------------------------------------------------
def test_group_by_lr_gives_mean_std_and_count_of_each_metric(logs, capsys):
    rows = records(capsys, str(logs / "train" / "multirun"), "--group-by", "optimizer.lr")
    assert [r["optimizer.lr"] for r in rows] == [0.01, 0.1] and [r["runs"] for r in rows] == [2, 2]
    assert all(r["left_out"] == "" for r in rows)
    expected = grid_metrics(logs).groupby("optimizer.lr")
    for row in rows:
        group = expected.get_group(row["optimizer.lr"])
        for metric in METRICS:
            assert row[metric] == group[metric].mean()
            assert row[f"{metric}.std"] == group[metric].std(ddof=1)
            assert row[f"{metric}.n"] == 2


def test_group_of_a_population_equals_its_metrics_json(logs, capsys):
    """The members of ``seeds=3`` grouped: the numbers the population itself reported."""
    pop = logs / "train" / "pop"
    (row,) = records(capsys, str(pop), "--group-by", "model.activation")
    assert row["runs"] == 3
    reported = json.loads((pop / "metrics.json").read_text())
    for metric in METRICS:
        assert row[metric] == pytest.approx(reported[metric], rel=1e-12, abs=0)
        assert row[f"{metric}.std"] == pytest.approx(reported[f"{metric}.std"], rel=1e-12, abs=0)
    assert not math.isclose(row["val/loss.std"], 0.0)


def test_group_by_as_a_table(logs, capsys):
    code, out, err = runs(
        capsys,
        str(logs / "train" / "multirun"),
        "--group-by",
        "optimizer.lr",
        "--metrics",
        "val/loss",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["optimizer.lr", "runs", "left", "out", "val/loss"]
    group = grid_metrics(logs).groupby("optimizer.lr")["val/loss"]
    mean, std = group.mean()[0.01], group.std()[0.01]
    assert lines[2].split() == ["0.01", "2", f"{mean:.4f}", "±", f"{std:.4f}"]
    assert lines[-1] == "4 runs in 2 groups by optimizer.lr (4 ok)"


def test_groups_say_how_many_runs_were_left_out(logs, tmp_path, capsys):
    copy = tmp_path / "logs"
    shutil.copytree(logs / "train" / "multirun" / "grid", copy)
    (copy / "1" / "metrics.json").unlink()
    (copy / "1" / "error.txt").write_text("training diverged: train/loss became inf at epoch 0\n")
    (copy / "3" / "metrics.json").unlink()
    (copy / "3" / "error.txt").write_text("data.options.path='x.csv' is invalid: no such file\n")
    rows = records(capsys, str(copy), "--group-by", "optimizer.lr")
    assert [(r["runs"], r["left_out"]) for r in rows] == [(1, "1 failed"), (1, "1 diverged")]
    expected = grid_metrics(logs)
    assert rows[1]["val/loss"] == expected["val/loss"][0]  # lr 0.1: job 0 alone
    assert rows[1]["val/loss.std"] is None and rows[1]["val/loss.n"] == 1


def test_a_metric_some_runs_of_a_group_lack_is_counted_per_metric(tmp_path, capsys):
    """A group's ok runs that lack a metric: its mean is over the runs that have it, its count
    says how many (the table adds "(n=…)" where it is fewer than the group's runs)."""
    root = made_runs(
        tmp_path / "logs",
        {
            "x": (0.1, {"val/loss": 0.4, "test/acc": 0.8}),
            "y": (0.1, {"val/loss": 0.6}),  # no test/acc
            "z": (0.01, {"val/loss": 0.3, "test/acc": 0.6}),
        },
    )
    rows = records(capsys, str(root), "--group-by", "optimizer.lr")
    by_lr = {r["optimizer.lr"]: r for r in rows}
    assert by_lr[0.1]["runs"] == 2
    assert (by_lr[0.1]["val/loss.n"], by_lr[0.1]["test/acc.n"]) == (2, 1)
    assert by_lr[0.1]["test/acc"] == 0.8 and by_lr[0.1]["test/acc.std"] is None
    code, out, err = runs(capsys, str(root), "--group-by", "optimizer.lr", "--sort", "runs")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("0.1 "))
    assert line.split() == ["0.1", "2", "0.8000", "(n=1)", "0.5000", "±", "0.1414"]


# ---- damaged, half-written, running, not runs -----------------------------------------------
def test_damaged_and_half_written_dirs_are_notes_not_crashes(logs, tmp_path, capsys):
    copy = tmp_path / "logs"
    shutil.copytree(logs / "train" / "multirun" / "grid", copy / "grid")
    (copy / "grid" / "0" / "metrics.json").write_text('{"val/loss": 0.3,')  # cut short
    (copy / "grid" / "1" / "config.yaml").write_text("a: [unclosed\n")
    (copy / "grid" / "2" / "metrics.json").write_text("[1, 2]\n")
    (copy / "starting" / ".hydra").mkdir(parents=True)  # Hydra's start-up files only
    (copy / "stray" / "empty").mkdir(parents=True)
    (copy / "notes").mkdir()
    (copy / "notes" / "todo.txt").write_text("look at the runs\n")
    with RunLock(copy / "grid" / "3"):  # a live process writing it
        code, out, err = runs(capsys, str(copy), "--metrics", "val/loss")
    assert code == 0, err
    status = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:7]}
    assert status == {
        "grid/0": "incomplete",
        "grid/1": "ok",
        "grid/2": "incomplete",
        "grid/3": "running",
        "starting": "incomplete",
    }
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert any(n.startswith("note: grid/0: metrics.json is damaged") for n in notes), notes
    assert "note: grid/1: config.yaml is damaged (not a YAML mapping)" in notes
    assert "note: grid/2: metrics.json is damaged (not a mapping of metric → number)" in notes
    assert any(n.startswith("note: grid/3: in use by pid ") for n in notes), notes
    assert any(n.startswith("note: starting: no metrics.json") for n in notes), notes
    assert any(n.startswith("note: stray/empty: not a run") for n in notes), notes
    assert any(n.startswith("note: notes: not a run") for n in notes), notes
    # released: the run that held it ended, and a stale lock file says nothing
    (copy / "grid" / "3" / ".lock").write_text("pid 1 on elsewhere")
    (row,) = records(capsys, str(copy), "--where", "seed=2", "--where", "optimizer.lr=0.01")
    assert row["status"] == "ok"


def test_a_member_killed_before_its_first_epoch_is_an_incomplete_run(logs, tmp_path, capsys):
    copy = tmp_path / "pop"
    shutil.copytree(logs / "train" / "pop", copy)
    killed = copy / "member_003"  # its wandb run was opened, nothing else was written
    (killed / "wandb").mkdir(parents=True)
    (killed / "wandb_id").write_text("abc123")
    rows = {r["run"]: r for r in records(capsys, str(copy))}
    assert set(rows) == {f"member_00{k}" for k in range(4)}
    assert rows["member_003"]["status"] == "incomplete"
    assert [r["status"] for name, r in sorted(rows.items())][:3] == ["ok"] * 3


def test_a_sweep_population_and_its_trials(logs, tmp_path, capsys):
    """A sweep dir: trials.csv says which trials failed or were pruned (one pruned in its
    population has the metrics of its epochs so far); a population dir whose members are the
    sweep's trial dirs lends them its epochs for --plot."""
    sweep = tmp_path / "sweep" / "toy"
    for n in range(4):
        shutil.copytree(logs / "train" / "multirun" / "grid" / str(n), sweep / f"trial_{n}")
    for n in (2, 3):
        (sweep / f"trial_{n}" / "metrics.json").unlink()
    (sweep / "trials.csv").write_text(
        "number,state,value_val/loss,population,fail_reason\n"
        "0,COMPLETE,0.5,population_0,\n1,PRUNED,,population_0,\n"
        "2,FAIL,,,val/loss was nan in every epoch\n3,PRUNED,,,\n"
    )
    pop = sweep / "population_0"
    pop.mkdir()
    (pop / "summary.csv").write_text(
        f"member,run_dir,status,val/loss\n0,{sweep / 'trial_0'},ok,0.5\n1,/moved/trial_1,ok,0.5\n"
    )
    (pop / "metrics.csv").write_text(
        "epoch,member,val/loss\n0,0,0.9\n0,1,0.8\n1,0,0.7\n1,1,0.6\n2,0,0.5\n2,1,0.4\n"
    )
    for n in (0, 1):
        shutil.rmtree(sweep / f"trial_{n}" / "csv")
    rows = records(capsys, str(tmp_path / "sweep"))
    assert [(r["run"], r["status"]) for r in rows] == [
        ("toy/trial_0", "ok"),
        ("toy/trial_1", "pruned"),
        ("toy/trial_2", "failed"),
        ("toy/trial_3", "pruned"),
    ]
    assert rows[2]["note"] == "val/loss was nan in every epoch"
    assert rows[1]["val/loss"] is not None  # what it has, shown; left out of group means
    grouped = runs(capsys, str(tmp_path / "sweep"), "--group-by", "seed")[1]
    assert "pruned" in grouped
    from mlplab.runs import curve, load

    found, _ = load([str(tmp_path / "sweep")])
    assert list(curve(found[1], "val/loss", {})) == [0.8, 0.6, 0.4]  # found by its name


# ---- curves ---------------------------------------------------------------------------------
def test_plot_draws_a_png_of_runs_and_of_groups(logs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = runs(capsys, str(logs), "--plot", "val/loss")
    assert code == 0, err
    assert "plot: runs_val_loss.png" in out.splitlines()
    assert (tmp_path / "runs_val_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    file = tmp_path / "bands.png"
    args = ["--group-by", "optimizer.lr", "--plot", "val/loss", "--plot-file", str(file)]
    code, out, err = runs(capsys, str(logs), *args)
    assert code == 0, err
    assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = runs(capsys, str(logs), "--plot", "val/r2")
    assert code == 2 and "no run shown has a val/r2 history" in err


def test_plot_groups_by_a_list_valued_key_as_the_table_does(logs, tmp_path, capsys):
    """A list (unhashable) groups by its exact value, as the table's groups: one band, n=7."""
    file = tmp_path / "by_sizes.png"
    args = ["--group-by", "model.hidden_sizes", "--plot", "val/loss", "--plot-file", str(file)]
    code, _, err = runs(capsys, str(logs), *args)
    assert code == 0, err
    assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = records(capsys, str(logs), "--group-by", "model.hidden_sizes")
    assert [row["runs"] for row in rows] == [7]


def test_curves_come_from_the_epoch_logs(logs):
    from mlplab.runs import curve, load

    found, _ = load([str(logs / "train")])
    job = pd.read_csv(logs / "train" / "multirun" / "grid" / "0" / "csv" / "metrics.csv")
    assert list(curve(found[0], "val/loss", {})) == list(job["val/loss"].dropna())
    pop = pd.read_csv(logs / "train" / "pop" / "metrics.csv")
    member = next(r for r in found if r.name == "pop/member_001")
    assert list(curve(member, "val/loss", {})) == list(pop[pop.member == 1]["val/loss"])
    assert len(pop[pop.member == 1]) == 2


# ---- only reads, starts fast ----------------------------------------------------------------
def test_never_writes_into_a_run_dir(logs, tmp_path, capsys, monkeypatch):
    copy = tmp_path / "logs"
    shutil.copytree(logs, copy)
    (copy / "train" / "multirun" / "grid" / "1" / "metrics.json").write_text("{")
    (copy / "train" / "multirun" / "grid" / "2" / ".lock").write_text("pid 1 on elsewhere")
    before = tree(copy)
    monkeypatch.chdir(tmp_path)
    for args in (
        [],
        ["--json"],
        ["--markdown", "--sort", "val/loss"],
        ["--group-by", "optimizer.lr", "--plot", "val/loss", "--csv", str(tmp_path / "g.csv")],
        ["--plot", "val/acc"],
    ):
        code, _, err = runs(capsys, str(copy), *args)
        assert code == 0, err
    inside = copy / "train" / "multirun" / "grid" / "0" / "runs.csv"
    code, _, err = runs(capsys, str(copy), "--csv", str(inside))
    assert code == 2 and "never writes into a run dir" in err, err
    code, _, err = runs(
        capsys, str(copy), "--plot", "val/loss", "--plot-file", str(inside.with_suffix(".png"))
    )
    assert code == 2 and "never writes into a run dir" in err, err
    assert tree(copy) == before


def test_imports_neither_torch_nor_lightning(logs, tmp_path):
    code = (
        "import sys; from mlplab.runs import main; "
        f"main([{str(logs)!r}, '--group-by', 'optimizer.lr', '--plot', 'val/loss']); "
        "loaded = [m for m in ('torch', 'lightning', 'hydra') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "runs_val_loss.png").is_file()


def test_the_console_script_is_installed():
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'mlplab-runs = "mlplab.runs:main"' in scripts
