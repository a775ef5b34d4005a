"""Every YAML under conf/ composes, and what it describes instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mlplab.config import CONF_DIR
from mlplab.data.toy import make_pass_fail
from mlplab.run.build import build_callbacks, build_loggers, build_model, build_trainer
from tests.conftest import compose_cfg

CONF = Path(CONF_DIR)
# Not selectable groups of the train config: the primary configs, Hydra's own settings (they
# only compose inside a Hydra run; the CLI and scale tests exercise them) and the search
# spaces of mlplab-sweep (tests/sweep/test_cli.py loads every one); base/ holds what options extend.
OPTIONS = sorted(
    p.relative_to(CONF)
    for p in CONF.rglob("*.yaml")
    if p.parent != CONF and p.parts[len(CONF.parts)] not in ("hydra", "hparams_search", "base")
)
NEEDS_GPU = {"trainer/gpu.yaml", "trainer/ddp.yaml", "trainer/multinode.yaml"}


def test_every_group_is_covered():
    groups = {p.parts[0] for p in OPTIONS}
    assert {
        "data",
        "model",
        "optimizer",
        "scheduler",
        "regularization",
        "trainer",
        "logger",
        "callbacks",
        "debug",
        "paths",
        "experiment",
    } <= groups
    assert len(OPTIONS) >= 50


@pytest.mark.parametrize("option", OPTIONS, ids=str)
def test_option_composes_and_instantiates(option: Path, tmp_path):
    group, name = option.parent.as_posix(), option.stem
    extra = []
    if option.as_posix() == "data/csv.yaml":  # the user's own file: give it one
        make_pass_fail(50)[0].to_csv(tmp_path / "mine.csv", index=False)
        extra = [f"data.options.path={tmp_path / 'mine.csv'}", "data.options.target=passed"]
    logs = f"paths.log_dir={tmp_path / 'logs'}"  # logger=mlflow's store: not in the repo
    cfg = compose_cfg(tmp_path, f"{group}={name}", logs, *extra, quiet=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
    optimizers = model.configure_optimizers()
    assert optimizers is not None
    for callback in build_callbacks(cfg):
        assert callback.__class__.__module__.startswith(("lightning", "mlplab."))
    loggers = build_loggers(cfg)
    if option.as_posix() in NEEDS_GPU and not torch.cuda.is_available():
        assert cfg.trainer.accelerator == "gpu"
        return
    trainer = build_trainer(cfg, build_callbacks(cfg), loggers)
    expected_epochs = 1 if cfg.trainer.get("fast_dev_run") else cfg.trainer.max_epochs
    assert trainer.max_epochs == expected_epochs


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")))
def test_optimizer_files_state_their_lr(option):
    text = (CONF / "optimizer" / f"{option}.yaml").read_text()
    assert "lr:" in text, "torch and Keras defaults differ: every optimizer states its lr"


def test_a_saved_config_keeps_references_to_what_identifies_a_run_and_to_seed(tmp_path):
    """Run dir, run name and what follows them stay interpolations (a re-run gets its own dir);
    so does what follows seed (a re-run with seed=7 splits with 7) and any key asked to be kept
    (a population's member keys); everything else is resolved."""
    from omegaconf import OmegaConf

    from mlplab.config import compose_run, derived, portable_data

    cfg = compose_run(tmp_path / "run", "seed=7", "data=moons", "logger=default")
    data = portable_data(cfg)
    assert data["paths"]["output_dir"] == "${hydra:runtime.output_dir}"
    assert data["run_name"] == "${run_id:}" and data["logger"]["wandb"]["name"] == "${run_name}"
    assert data["callbacks"]["model_checkpoint"]["dirpath"] == "${paths.output_dir}/checkpoints"
    assert data["seed"] == 7 and data["data"]["seed"] == "${seed}"
    assert data["paths"]["log_dir"] == "./logs"  # resolved: later edits can't change it
    assert data["logger"]["wandb"]["offline"] in (True, False)
    assert cfg.paths.output_dir == str(tmp_path / "run")  # the config itself is as it was
    kept = portable_data(cfg, keep=["optimizer.lr"])
    assert kept["optimizer"]["lr"] == cfg.optimizer.lr  # its own value; nothing follows it
    raw = {"a": 1, "b": "${a}", "c": {"d": "x_${b}", "e": "${..b}"}, "f": "${oc.env:HOME}"}
    assert derived(raw, ["a"]) == ["b", "c.d", "c.e"]
    assert derived(OmegaConf.to_container(cfg), ["seed"]) == ["data.seed"]


def test_portable_yaml_reads_back_as_written(tmp_path):
    """Strings that OmegaConf would read as numbers or bools are quoted; the rest is plain."""
    from omegaconf import OmegaConf

    from mlplab import config

    for value in (
        1,
        1.0,
        True,
        "1",
        "true",
        "1e-3",
        ".5",
        "yes",
        None,
        [1, "2"],
        {},
        {"a": []},
        "ü ${x}",
        1e-05,
        "",
        "0x1F",
        "inf",
        "-",
    ):
        data = {"seed": 3, "x": value, "model": {"hidden_sizes": [16, 16], "name": "mlp"}}
        text = config.portable_yaml(data)
        body = text.split("  - _self_\n\n", 1)[1]
        back = OmegaConf.to_container(OmegaConf.create(body), resolve=False)
        assert back == data and type(back["x"]) is type(value), value
