"""``Composer``: many train configs, each exactly the one Hydra composes from its overrides."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from mlplab.composer import Composer, parse_override
from mlplab.config import compose_config

NUMBERS = [
    "seed=3",
    "a=0",
    "a=-0",
    "a=-12",
    "optimizer.lr=0.001",
    "optimizer.lr=1e-3",
    "a=1E5",
    "a=-2.5e+2",
    "a=.5",
    "a=5.",
    "a=0.1e-07",
    "a_b.c_d=10",
    "x=1e400",
]
NOT_NUMBERS = ["a=007", "a=+5", "a=1_000", "a=1e", "a=.e1", "a=0x10", "a=inf", "a=nan", "a=1.2.3"]
NOT_NUMBERS += ["+a=1", "~a", "a=1,2", "a=[1]", "a/b=1", "a@b=1", "a=1 ", "a=-", "a=1e-3x"]


@pytest.mark.parametrize("line", NUMBERS + NOT_NUMBERS)
def test_number_overrides_parse_as_hydra_parses_them(line):
    hydra = OverridesParser.create()
    try:
        expected = hydra.parse_override(line)
    except Exception as err:  # noqa: BLE001 — then ours must fail the same way
        with pytest.raises(type(err)):
            parse_override(hydra, line)
        return
    ours = parse_override(hydra, line)
    assert repr(ours) == repr(expected), line  # (repr: nan is not == nan)
    assert type(ours.value()) is type(expected.value()) and repr(ours.value()) == repr(
        expected.value()
    )


TRIALS = [
    ["optimizer=adam", "optimizer.lr=0.01", "seed=1", "trainer.max_epochs=2"],
    ["optimizer=sgd", "optimizer.lr=0.1", "seed=2", "trainer.max_epochs=2"],
    ["optimizer=adam", "optimizer.lr=0.02", "seed=3", "trainer.max_epochs=2", "seed=4"],
    ["optimizer=adam", "trainer.max_epochs=5", "optimizer.lr=0.01", "trainer.max_epochs=2"],
    ["data=wine", "model.hidden_sizes=[8]", "trainer.max_epochs=2", "+trainer.max_steps=9"],
    ["trainer.max_epochs=2", "paths.output_dir=/tmp/x", "run_name=trial_7", "task_name=sweep"],
    # a value, then a config override of the same key Hydra applies in command-line order
    ["optimizer.lr=0.1", "++optimizer.lr=0.2", "trainer.max_epochs=2"],
    ["+trainer.max_steps=5", "trainer.max_steps=7", "trainer.max_epochs=2"],
    ["optimizer.lr=0.3", "optimizer=sgd", "trainer.max_epochs=2"],  # a group: composed first
]


def test_configs_are_hydras_also_with_shared_lines_set_again():
    composer = Composer("train")
    shared = {"trainer.max_epochs=2"}  # trial 3 sets the key again before it: Hydra's order
    for _ in range(2):  # the second round comes from the kept bases
        for trial in TRIALS:
            fast = composer(trial, shared)
            slow = compose_config("train", trial)
            assert OmegaConf.to_container(fast) == OmegaConf.to_container(slow), trial
    assert composer(TRIALS[6], shared).optimizer.lr == 0.2  # as Hydra: the later line wins
    fast = composer(TRIALS[0], shared)
    fast.optimizer.lr = 0.5  # each config is its own copy
    assert composer(TRIALS[0], shared).optimizer.lr == 0.01
    with pytest.raises(Exception, match="seed"):  # the schema's types, as Hydra gives them
        fast.seed = "abc"


@pytest.mark.parametrize("bad", ["model.nope=1", "seed=abc", "optimizer=nope"])
def test_a_value_that_doesnt_apply_gets_hydras_own_error(bad):
    with pytest.raises(Exception) as hydra:
        compose_config("train", ["seed=1", bad])
    with pytest.raises(type(hydra.value)) as ours:
        Composer("train")(["seed=1", bad])
    assert str(ours.value) == str(hydra.value)


def test_kept_bases_are_bounded(monkeypatch):
    import mlplab.composer as composer_module

    monkeypatch.setattr(composer_module, "BASES", 2)
    composer = Composer("train")
    for steps in range(1, 5):  # an added key swept: every config its own base
        trial = ["trainer.max_epochs=2", f"+trainer.max_steps={steps}"]
        fast = composer(trial)
        assert fast.trainer.max_steps == steps and len(composer._bases) <= 2
        slow = compose_config("train", trial)
        assert OmegaConf.to_container(fast) == OmegaConf.to_container(slow)
