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
    cfg = compose_cfg(tmp_path, f"{group}={name}", *extra, quiet=False)
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


def test_interpolation_parses_are_cached_and_resolve_as_fresh_ones(tmp_path, monkeypatch):
    import omegaconf.base
    from omegaconf import OmegaConf
    from omegaconf.errors import GrammarParseError

    from mlplab.config import compose_run, portable_data

    parse = omegaconf.base.parse
    assert hasattr(parse, "cache_info")  # importing mlplab.config turned the cache on
    cfg = compose_run(tmp_path / "run", "seed=7", "data=moons")
    before = parse.cache_info().hits
    cached = portable_data(cfg)
    assert parse.cache_info().hits > before and cached["data"]["seed"] == 7
    monkeypatch.setattr(omegaconf.base, "parse", parse.__wrapped__)  # OmegaConf's own
    assert portable_data(cfg) == cached
    monkeypatch.undo()

    node = OmegaConf.create({"a": "${b}", "b": 1, "c": 2, "d": "x_${b}"})
    assert (node.a, node.d) == (1, "x_1")
    node.a, node.b = "${c}", 5  # the string decides the tree; values are read at resolution
    assert (node.a, node.d) == (2, "x_5")
    for _ in range(2):  # a string that doesn't parse raises every time (errors aren't kept)
        with pytest.raises(GrammarParseError):
            OmegaConf.to_container(OmegaConf.create({"e": "${oops"}), resolve=True)


def test_portable_yaml_written_entry_by_entry_is_the_whole_dump(tmp_path):
    import yaml

    from mlplab import config

    cfg = None  # the data below stands for a resolved config
    for value in (1, 1.0, True, "1", "true", None, [1, "2"], {}, {"a": []}, "ü ${x}", 1e-05):
        data = {"seed": 3, "x": value, "model": {"hidden_sizes": [16, 16], "name": "mlp"}}
        whole = yaml.dump(
            data,
            default_flow_style=False,
            allow_unicode=True,
            sort_keys=False,
            Dumper=config._Dumper,
        )
        text = config.portable_yaml(cfg, data=data)
        assert text.endswith(whole) and yaml.safe_load(text)["x"] == value, value
