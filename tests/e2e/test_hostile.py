"""Hostile input, table-driven: every user mistake at any entry point is one ``error:`` line
naming the key, value or file, a non-zero exit code, no traceback, and nothing half-written.

Each case runs the real entry point's ``main(argv)`` in this process (as the console script
does, minus interpreter start-up); ``test_cli.py`` checks a few of them in a subprocess.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlplab import evaluate, predict, train
from mlplab.run.rundir import RunLock
from mlplab.sweep import cli as sweep
from tests.conftest import compose_cfg

ENTRY = {
    "train": train.main,
    "eval": evaluate.main,
    "predict": predict.main,
    "sweep": sweep.main,
}
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def _table(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "color": rng.choice(["red", "green", "blue"], size=n),
            "label": np.where(x1 + x2 > 0, "yes", "no"),
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Data files (good and broken), a trained checkpoint and broken checkpoints."""
    root = tmp_path_factory.mktemp("hostile")
    good = _table()
    paths = {"root": root}

    def write(name: str, df: pd.DataFrame) -> None:
        paths[name] = root / f"{name}.csv"
        df.to_csv(paths[name], index=False)

    write("good", good)
    write("inf", good.assign(x1=good.x1.where(good.index != 7, np.inf)))
    write("huge", good.assign(x2=good.x2 * 1e307 + 1.7e308 * (good.index % 2)))
    write("blank_target", good.assign(label=good.label.where(good.index != 3, None)))
    write("bad_split", good.assign(split=["train", "val", "test", "tset"] * 60))
    write("three_classes", good.assign(label=["a", "b", "c"] * 80))
    write("text_numeric", good.assign(x2=good.x2.astype(object).where(good.index != 5, "oops")))
    write("no_x2", good.drop(columns="x2"))
    write("unseen_class", good.assign(label="maybe"))
    write("no_label", good.drop(columns="label"))
    paths["bad_yaml"] = root / "bad_search.yaml"
    paths["bad_yaml"].write_text("metric: val/loss\nparams: [unclosed\n")
    paths["bad_param"] = root / "bad_param.yaml"
    paths["bad_param"].write_text(
        "metric: val/loss\ndirection: minimize\n"
        "params:\n  optimizer.lr: {type: float, low: 1, high: 0.1}\n"
    )
    paths["empty"] = root / "empty.csv"
    paths["empty"].write_text("")
    paths["header"] = root / "header.csv"
    paths["header"].write_text("x1,x2,color,label\n")
    paths["txt"] = root / "data.txt"
    paths["txt"].write_text("x1,label\n1,yes\n")

    cfg = compose_cfg(
        root / "run",
        "data=csv",
        f"data.options.path={paths['good']}",
        "data.options.target=label",
        "trainer.max_epochs=1",
    )
    train.train(cfg)
    ckpt = root / "run" / "checkpoints" / "best.ckpt"
    paths["ckpt"] = ckpt
    raw = ckpt.read_bytes()
    paths["truncated"] = root / "truncated.ckpt"
    paths["truncated"].write_bytes(raw[: len(raw) // 2])
    paths["garbage"] = root / "garbage.ckpt"
    paths["garbage"].write_bytes(b"\x00\x01 not a checkpoint")
    paths["pickled"] = root / "pickled.ckpt"
    torch.save({"state_dict": {}, "obj": Path("x")}, paths["pickled"])
    paths["foreign"] = root / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, paths["foreign"])
    return paths


def _csv(name: str, *extra: str) -> list[str]:
    return ["data=csv", f"data.options.path={{{name}}}", "data.options.target=label", *extra]


# (id, entry point, argv with {placeholders}, text the one error line must contain, exit code)
CASES = [
    # -- config keys and groups -------------------------------------------------------------
    ("group-typo", "train", ["optimizer=adm"], "did you mean optimizer=adam?", 2),
    ("data-typo", "train", ["data=penguin"], "did you mean data=penguins?", 2),
    ("experiment-typo", "train", ["experiment=overfit_regularised"], "overfit_regularized?", 2),
    ("callbacks-typo", "train", ["callbacks=nope"], "callbacks=nope is not an option", 2),
    ("launcher-typo", "train", ["-m", "hydra/launcher=slurmm", "seed=1,2"], "slurm?", 2),
    ("key-typo", "train", ["model.hidden_size=[8]"], "did you mean model.hidden_sizes?", 2),
    ("top-key-typo", "train", ["sed=1"], "did you mean seed?", 2),
    ("key-typo-deep", "train", ["optimizer.learning_rate=0.1"], "optimizer.learning_rate", 2),
    ("bad-type", "train", ["seed=abc"], "seed=abc is invalid", 2),
    ("bad-syntax", "train", ["optimizer.lr=["], "'optimizer.lr=[' is invalid", 2),
    ("sweep-without-m", "train", ["optimizer=sgd,adam"], "add -m (--multirun)", 2),
    ("missing-value", "train", ["data=csv"], "data.options.path, data.options.target are", 2),
    ("no-config", "train", ["--config-name", "nope"], "no config named 'nope'", 2),
    ("bad-resume", "train", ["resume=yes"], "resume='yes' is invalid", 2),
    # -- config values ----------------------------------------------------------------------
    ("lr-negative", "train", ["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is invalid", 2),
    ("lr-zero", "train", ["optimizer.lr=0"], "optimizer.lr=0 is invalid", 2),
    ("lr-inf", "train", ["optimizer.lr=inf"], "optimizer.lr=inf is invalid", 2),
    ("lr-text", "train", ["optimizer.lr=fast"], "optimizer.lr='fast' is invalid", 2),
    (
        "betas",
        "train",
        ["optimizer.betas=[1.5,0.9]"],
        "optimizer.betas[0]=1.5 is invalid: a number in [0, 1)",
        2,
    ),
    (
        "momentum",
        "train",
        ["optimizer=sgd", "optimizer.momentum=-1"],
        "optimizer.momentum=-1 is invalid",
        2,
    ),
    ("opt-target", "train", ["optimizer._target_=torch.optim.Nope"], "can't be imported", 2),
    (
        "step-size",
        "train",
        ["scheduler=step", "scheduler.step_size=0"],
        "scheduler.step_size=0 is invalid: an integer >= 1",
        2,
    ),
    (
        "t-max",
        "train",
        ["scheduler=cosine", "scheduler.T_max=0"],
        "scheduler.T_max=0 is invalid: an integer >= 1",
        2,
    ),
    ("dropout-1", "train", ["model.dropout=1.0"], "model.dropout=1.0 is invalid", 2),
    ("dropout-neg", "train", ["model.dropout=-0.1"], "model.dropout=-0.1 is invalid", 2),
    ("hidden-0", "train", ["model.hidden_sizes=[16,0]"], "model.hidden_sizes=[16, 0]", 2),
    ("hidden-text", "train", ["model.hidden_sizes=abc"], "model.hidden_sizes='abc'", 2),
    ("activation", "train", ["model.activation=swish"], "model.activation='swish'", 2),
    ("layer", "train", ["model.layer=keras"], "model.layer='keras'", 2),
    ("l1", "train", ["model.l1=-1"], "model.l1=-1 is invalid", 2),
    ("batch-0", "train", ["data.batch_size=0"], "data.batch_size=0 is invalid", 2),
    ("batch-text", "train", ["data.batch_size=full_batch"], "data.batch_size='full_batch'", 2),
    ("val-frac", "train", ["data.val_fraction=1.5"], "data.val_fraction=1.5 is invalid", 2),
    ("fractions", "train", ["data.test_fraction=0.85"], "data.test_fraction", 2),
    ("group-0", "train", ["model.group_batches=0"], "model.group_batches=0 is invalid", 2),
    ("rerun-no-run", "train", ["rerun={root}"], "rerun=", 2),
    ("rerun-twice", "train", ["rerun={root}", "rerun={root}"], "given 2 times", 2),
    ("eval-batch", "train", ["data.eval_batch_size=0"], "data.eval_batch_size=0", 2),
    ("source", "train", ["data.source=nope"], "data.source='nope' is invalid", 2),
    ("tiny-data", "train", ["data.options.n_samples=2"], "split of 2 rows empty", 2),
    ("data-option", "train", ["+data.options.bogus=1"], "unexpected keyword argument 'bogus'", 2),
    ("clip", "train", ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1", 2),
    ("clip-algo", "train", ["trainer.gradient_clip_algorithm=foo"], "gradient_clip_algorithm", 2),
    ("max-epochs", "train", ["trainer.max_epochs=abc"], "trainer.max_epochs='abc'", 2),
    ("limit", "train", ["+trainer.limit_train_batches=-2"], "trainer.limit_train_batches=-2", 2),
    ("accelerator", "train", ["trainer.accelerator=tpu"], "the trainer config is invalid", 2),
    ("devices", "train", ["trainer.devices=0"], "the trainer config is invalid", 2),
    ("trainer-key", "train", ["+trainer.bogus=1"], "unexpected keyword argument 'bogus'", 2),
    ("ddp-multirun", "train", ["-m", "trainer=ddp_cpu", "seed=1,2"], "DDP can't run inside", 2),
    ("no-slurm", "train", ["-m", "hydra/launcher=slurm", "seed=1,2"], "sbatch is not on", 2),
    ("fixed-dir-m", "train", ["-m", "paths.output_dir={root}/x", "seed=1,2"], "is fixed", 2),
    ("diverges", "train", ["data=grades", "optimizer=sgd", "optimizer.lr=10"], "diverged", 3),
    # -- data files -------------------------------------------------------------------------
    (
        "csv-missing",
        "train",
        _csv("good")[:1] + ["data.options.path={root}/nope.csv", "data.options.target=label"],
        "not found",
        2,
    ),
    ("csv-empty", "train", _csv("empty"), "is empty", 2),
    ("csv-header", "train", _csv("header"), "has a header but no rows", 2),
    ("csv-type", "train", _csv("txt"), "file type one of", 2),
    ("csv-target", "train", [*_csv("good")[:2], "data.options.target=nope"], "'nope'", 2),
    ("csv-inf", "train", _csv("inf"), "'x1'", 2),
    ("csv-overflow", "train", _csv("huge"), "'x2'", 2),
    ("csv-blank-target", "train", _csv("blank_target"), "missing values", 2),
    ("csv-split", "train", _csv("bad_split", "data.options.split_by=split"), "'tset'", 2),
    ("csv-3-binary", "train", _csv("three_classes", "data.options.task=binary"), "binary", 2),
    ("csv-regression", "train", _csv("good", "data.options.task=regression"), "'yes'", 2),
    ("csv-forced", "train", _csv("text_numeric", "data.options.numeric=[x1,x2]"), "'oops'", 2),
    ("csv-task", "train", _csv("good", "data.options.task=ranking"), "task='ranking'", 2),
    # -- checkpoints and run dirs -----------------------------------------------------------
    ("ckpt-missing", "train", ["ckpt_path={root}/nope.ckpt"], "no such file", 2),
    ("ckpt-truncated", "train", ["ckpt_path={truncated}"], "damaged or truncated", 2),
    ("ckpt-garbage", "train", ["ckpt_path={garbage}"], "damaged or truncated", 2),
    ("ckpt-pickle", "train", ["ckpt_path={pickled}"], "can't be loaded safely", 2),
    ("ckpt-foreign", "train", ["ckpt_path={foreign}"], "not a Lightning checkpoint", 2),
    (
        "ckpt-other-model",
        "train",
        _csv("good", "ckpt_path={ckpt}", "model.hidden_sizes=[4]"),
        "does not fit this model",
        2,
    ),
    ("ckpt-other-data", "train", ["ckpt_path={ckpt}"], "does not fit this model", 2),
    ("run-exists", "train", ["run_name=taken"], "already holds a run", 2),
    ("run-locked", "train", ["run_name=locked", "resume=auto"], "in use by another", 2),
    ("resume-truncated", "train", ["run_name=cut", "resume=auto"], "delete it", 2),
    # -- mlplab-eval ------------------------------------------------------------------------
    ("eval-no-ckpt", "eval", [], "ckpt_path is required", 2),
    ("eval-missing", "eval", ["ckpt_path={root}/nope.ckpt"], "no such file", 2),
    ("eval-truncated", "eval", ["ckpt_path={truncated}"], "damaged or truncated", 2),
    ("eval-pickle", "eval", ["ckpt_path={pickled}"], "can't be loaded safely", 2),
    ("eval-foreign", "eval", ["ckpt_path={foreign}"], "not a Lightning checkpoint", 2),
    ("eval-split", "eval", ["ckpt_path={ckpt}", "split=train"], "split='train' is invalid", 2),
    ("eval-key", "eval", ["ckpt={ckpt}"], "did you mean ckpt_path?", 2),
    ("eval-data", "eval", ["ckpt_path={ckpt}", "data=moonz"], "did you mean data=moons?", 2),
    ("eval-input", "eval", ["ckpt_path={ckpt}", "input={root}/nope.csv"], "not found", 2),
    ("eval-column", "eval", ["ckpt_path={ckpt}", "input={no_x2}"], "missing column(s) ['x2']", 2),
    ("eval-class", "eval", ["ckpt_path={ckpt}", "input={unseen_class}"], "'maybe'", 2),
    ("eval-target", "eval", ["ckpt_path={ckpt}", "input={no_label}"], "['label']", 2),
    ("eval-inf", "eval", ["ckpt_path={ckpt}", "input={inf}"], "'x1'", 2),
    ("eval-output", "eval", ["ckpt_path={ckpt}", "output={root}/no/dir/m.json"], "does not", 2),
    # -- mlplab-predict ---------------------------------------------------------------------
    ("pred-required", "predict", ["ckpt_path={ckpt}"], "input is required", 2),
    (
        "pred-out-type",
        "predict",
        ["ckpt_path={ckpt}", "input={good}", "output={root}/p.txt"],
        "file type one of",
        2,
    ),
    (
        "pred-input",
        "predict",
        ["ckpt_path={ckpt}", "input={root}/no.csv", "output={root}/p.csv"],
        "not found",
        2,
    ),
    (
        "pred-column",
        "predict",
        ["ckpt_path={ckpt}", "input={no_x2}", "output={root}/p.csv"],
        "missing column(s) ['x2']",
        2,
    ),
    (
        "pred-text",
        "predict",
        ["ckpt_path={ckpt}", "input={text_numeric}", "output={root}/p.csv"],
        "'oops'",
        2,
    ),
    ("pred-inf", "predict", ["ckpt_path={ckpt}", "input={inf}", "output={root}/p.csv"], "'x1'", 2),
    (
        "pred-garbage",
        "predict",
        ["ckpt_path={garbage}", "input={good}", "output={root}/p.csv"],
        "damaged or truncated",
        2,
    ),
    (
        "pred-key",
        "predict",
        ["ckpt_path={ckpt}", "inpt={good}", "output={root}/p.csv"],
        "did you mean input?",
        2,
    ),
    # -- mlplab-sweep ----------------------------------------------------------------------
    ("sweep-search", "sweep", ["hparams_search=tabullar"], "tabular", 2),
    ("sweep-no-search", "sweep", [], "hparams_search", 2),
    ("sweep-trials", "sweep", ["hparams_search=toy", "n_trials=abc"], "n_trials=abc is", 2),
    ("sweep-workers", "sweep", ["hparams_search=toy", "workers=0"], "workers=0", 2),
    ("sweep-slurm", "sweep", ["hparams_search=toy", "launcher=slurm"], "sbatch", 2),
    ("sweep-key", "sweep", ["hparams_search=toy", "n_trial=5"], "n_trials", 2),
    ("sweep-train-key", "sweep", ["hparams_search=toy", "optimizer=adm"], "optimizer=adam?", 2),
    ("sweep-yaml", "sweep", ["hparams_search={bad_yaml}"], "bad_search.yaml", 2),
    ("sweep-param", "sweep", ["hparams_search={bad_param}"], "optimizer.lr", 2),
    ("sweep-flag", "sweep", ["hparams_search=toy", "--verbose"], "--verbose", 2),
]


def _prepare(case_id: str, tmp: Path, files: dict) -> None:
    """Run dirs some cases need to find already there."""
    if case_id in ("run-exists", "run-locked", "resume-truncated"):
        name = {"run-exists": "taken", "run-locked": "locked", "resume-truncated": "cut"}[case_id]
        run_dir = tmp / "train" / name
        shutil.copytree(files["ckpt"].parents[1], run_dir)
        if case_id == "resume-truncated":
            last = run_dir / "checkpoints" / "last.ckpt"
            last.write_bytes(last.read_bytes()[:1000])


def _fresh_log_streams() -> None:
    """Each CLI call is a new process; in here, log handlers made by an earlier case (Hydra's,
    Lightning's) still point at that case's captured, now closed, stderr: repoint them."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stderr  # setStream would flush the closed one


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("case_id", "entry", "argv", "expected", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_hostile_input_is_one_clear_error(
    case_id, entry, argv, expected, code, files, tmp_path, capfd, monkeypatch
):
    monkeypatch.delenv("MLPLAB_RUN_ID", raising=False)
    monkeypatch.setattr(sys, "argv", [f"mlplab-{entry}"])
    places = {k: str(v) for k, v in files.items()}
    args = [a.format(**places) for a in argv]
    if entry == "train":  # first, so a case's own value of the same key wins
        args = [*QUIET, f"paths.log_dir={tmp_path}", "trainer.max_epochs=2", *args]
    if entry == "sweep":
        args = [*args, f"sweep_dir={tmp_path / 'sweep'}"]
    _fresh_log_streams()
    _prepare(case_id, tmp_path, files)
    before = _files(tmp_path)
    lock = RunLock(tmp_path / "train" / "locked") if case_id == "run-locked" else None
    if lock is not None:
        lock.__enter__()
    try:
        with pytest.raises(SystemExit) as exit_info:
            ENTRY[entry](args)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == code, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    assert expected in errors[0], errors[0]
    assert "Traceback" not in err + out
    after = _files(tmp_path)
    if case_id == "diverges":  # a run that got going keeps its dir to look at
        assert any(p.name == "config.yaml" for p in after)
    else:
        assert after == before, "nothing may be written or changed"
    # No log file this process still writes to lies in a dir the failed run removed: the next
    # logging call anywhere in the process would fail on it.
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    log_files = [
        getattr(h, "baseFilename", None) for lg in loggers for h in getattr(lg, "handlers", [])
    ]
    assert all(Path(f).parent.is_dir() for f in log_files if f), log_files
    assert not (files["root"] / "p.csv").exists()


def test_there_are_at_least_60_cases():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    assert {c[1] for c in CASES} == {"train", "eval", "predict", "sweep"}
