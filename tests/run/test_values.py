"""A wrong value answers before Lightning (or torch) is imported: one line, exit 2, in about a
second, however deep in the config the value sits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from mlplab.config import compose_config
from mlplab.errors import ConfigError
from mlplab.run.values import check_values

BAD = [
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' is invalid"),
    (["trainer.precision=8"], "trainer.precision=8 is invalid"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 is invalid"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas[1]=1.0 is invalid"),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0 is invalid"),
    (["model.dropout=1.0"], "model.dropout=1.0 is invalid"),
    (["model.activation=swish"], "model.activation='swish' is invalid"),
    (["model.group_batches=0"], "model.group_batches=0 is invalid"),
    (["data.batch_size=0"], "data.batch_size=0 is invalid"),
    (["data.source=nope"], "data.source='nope' is invalid"),
    (["data=csv", "data.options.path=/nonexistent.csv", "data.options.target=y"], "/nonexistent"),
    (["seeds=2", "+trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches=2"),
    (["cv=3", "seeds=2"], "cv=3 and seeds=2 can't be combined"),
    (["cv=1"], "cv=1 is invalid"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is invalid"),
]


@pytest.mark.parametrize(("overrides", "named"), BAD)
def test_check_values_names_the_bad_value(overrides, named):
    cfg = compose_config("train", overrides)
    with pytest.raises(ConfigError) as err:
        check_values(cfg)
    assert named in str(err.value)


# Values at the edge of what Lightning takes: a check one step too strict refuses a valid run.
GOOD = [
    ["++trainer.limit_val_batches=0.0"],  # a fraction of 0: no validation at all
    ["++trainer.limit_val_batches=1.0", "++trainer.limit_train_batches=0.5"],
    ["++trainer.limit_test_batches=0"],
    ["++trainer.max_epochs=-1", "++trainer.max_steps=10"],  # no epoch limit
    ["++trainer.max_epochs=0"],
    ["++trainer.num_sanity_val_steps=-1"],  # all of them
    ["++trainer.overfit_batches=0.0"],
]


@pytest.mark.parametrize("overrides", GOOD, ids=lambda o: " ".join(o))
def test_check_values_accepts_the_edge_values_lightning_takes(overrides):
    check_values(compose_config("train", overrides))


def test_check_values_passes_every_shipped_experiment():
    from pathlib import Path

    conf = Path(__file__).parents[2] / "conf" / "experiment"
    for experiment in sorted(p.stem for p in conf.glob("*.yaml")):
        check_values(compose_config("train", [f"experiment={experiment}"]))


def test_check_values_follows_interpolations():
    cfg = compose_config("train", ["+bad=-3", "optimizer.lr=${bad}"])
    with pytest.raises(ConfigError, match=r"optimizer.lr=-3 is invalid"):
        check_values(cfg)
    assert OmegaConf.to_container(cfg.optimizer)["lr"] == "${bad}"  # the config is left as it was


SCRIPT = """
import json, sys
from mlplab.train import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
    except SystemExit as stop:
        codes.append(stop.code)
loaded = [m for m in ("torch", "lightning") if m in sys.modules]
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


def test_bad_values_answer_without_importing_lightning_or_torch(tmp_path):
    argvs = [
        [*overrides, f"paths.output_dir={tmp_path / str(i)}"]
        for i, (overrides, _) in enumerate(BAD)
    ]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(argvs)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [2] * len(BAD), done.stderr[-2000:]
    assert result["loaded"] == []
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(BAD)
    for line, (_, named) in zip(errors, BAD, strict=True):
        assert named in line, line
    assert not any(p.exists() for p in tmp_path.iterdir() if p.is_dir())
