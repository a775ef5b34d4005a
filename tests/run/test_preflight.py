"""The multirun preflight composes each of a grid's values once: each job's config is Hydra's,
and errors are the ones composing each job with Hydra gives."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from mlplab.config import compose_config
from mlplab.errors import ConfigError
from mlplab.run.preflight import compose_checked, job_overrides, parse_command_line, preflight


def _plain(cfg) -> dict:
    data = OmegaConf.to_container(cfg, resolve=False)
    data.pop("hydra")
    return data


def _hydras(argv: list[str], config_name: str = "train") -> list[dict]:
    line = parse_command_line(argv, config_name)
    jobs = job_overrides(line.overrides, line.multirun)
    return [
        _plain(
            compose_config(
                line.config_name, job, config_dir=line.config_dir, return_hydra_config=True
            )
        )
        for job in jobs
    ]


def test_every_value_of_a_grid_is_composed_once():
    argv = [
        "-m",
        "optimizer=sgd,adam",
        "optimizer.lr=0.1,0.01,0.001",
        "model.hidden_sizes=[4],[8,8]",
        "seed=1,2,3",
        "+trainer.max_steps=5,6",
        "data.batch_size=full,32",
    ]
    configs = preflight(argv, "train")
    assert [_plain(c) for c in configs] == _hydras(argv)
    assert len(configs) == 1 + 1 + 2 + 1 + 2 + 1 + 1  # every value composed once


def test_a_user_config_dirs_own_group_is_composed_by_hydra(tmp_path):
    (tmp_path / "size").mkdir()
    (tmp_path / "size" / "small.yaml").write_text(
        "# @package _global_\nmodel:\n  hidden_sizes: [4]\n"
    )
    (tmp_path / "size" / "big.yaml").write_text(
        "# @package _global_\nmodel:\n  hidden_sizes: [32, 32]\n"
    )
    (tmp_path / "mine.yaml").write_text("defaults:\n  - train\n  - size: small\n  - _self_\n")
    argv = ["-m", f"--config-dir={tmp_path}", "--config-name=mine", "size=small,big", "seed=1,2"]
    configs = preflight(argv, "train")
    assert [_plain(c) for c in configs] == _hydras(argv)
    assert [c.model.hidden_sizes for c in configs] == [[4], [32, 32], [4]]


@pytest.mark.parametrize(
    "values",
    [
        "optimizer=sgd,adamm",  # a group choice that doesn't exist
        "trainer.max_epochs=2,abc",  # a value of the wrong type
        "model.hidden_sizse=[4],[8]",  # a typo (the first job already)
        "optimizer.lr=0.1,-1",  # composes, refused later by the module's own check
    ],
)
def test_a_later_values_error_is_the_one_hydra_gives_for_that_job(values):
    argv = ["-m", "seed=1,2", values]
    line = parse_command_line(argv, "train")
    want = None
    for job in job_overrides(line.overrides, line.multirun):
        try:
            compose_checked(line, job)
        except ConfigError as err:
            want = str(err)
            break
    if want is None:
        preflight(argv, "train")  # nothing to refuse at composition
        return
    with pytest.raises(ConfigError) as got:
        preflight(argv, "train")
    assert str(got.value) == want
