"""``mlplab.run.parses.to_plain`` is ``OmegaConf.to_container(resolve=True)``: on every shipped
option's composed config and on hostile ones, values and errors alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pytest
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import InterpolationKeyError, InterpolationResolutionError

import mlplab.run.parses as parses
from mlplab.config import compose_run
from mlplab.run.parses import to_plain
from tests.test_configs import OPTIONS


def _both(cfg, enum_to_str=False):
    want = OmegaConf.to_container(cfg, resolve=True, enum_to_str=enum_to_str)
    fast = parses._plain(cfg, enum_to_str)  # the walk itself, not its fallback
    assert fast == want
    assert repr(fast) == repr(want)  # same types too (1 vs 1.0 vs True), same key order
    return fast


@pytest.mark.parametrize("option", OPTIONS, ids=str)
def test_every_shipped_option_converts_as_omegaconf_converts_it(option, tmp_path):
    group, name = option.parent.as_posix(), option.stem
    cfg = compose_run(tmp_path, f"{group}={name}", quiet=False)
    _both(cfg, enum_to_str=True)
    _both(cfg.data)


class Color(Enum):
    RED = 1
    GREEN = 2


@dataclass
class Schema:
    color: Color = Color.GREEN
    mapping: dict = field(default_factory=lambda: {Color.RED: "r"})
    missing: int = MISSING
    n: int = 3


def test_hostile_nodes_convert_as_omegaconf_converts_them(monkeypatch):
    monkeypatch.setenv("MLPLAB_TEST_VALUE", "from-env")
    OmegaConf.register_new_resolver("mlplab_twice", lambda x: 2 * x, replace=True)
    cfg = OmegaConf.create(
        {
            "a": 1,
            "b": "${a}",
            "text": "x_${a}_${b}",
            "ref_dict": "${nested}",
            "ref_list": "${items}",
            "nested": {"deep": {"x": "${a}", "y": [1, "${b}", {"z": "${text}"}]}, "none": None},
            "items": [1, 2.5, True, None, "${nested.deep.x}", [3, "${a}"]],
            "missing": "???",
            "missing_dict": MISSING,
            "none_dict": None,
            "env": "${oc.env:MLPLAB_TEST_VALUE}",
            "env_default": "${oc.env:MLPLAB_NOT_SET_ANYWHERE,fallback}",
            "resolver": "${mlplab_twice:21}",
            "escaped": "\\${a}",
            "select": "${oc.select:nested.none,dflt}",
            "typed": OmegaConf.structured(Schema),
            "float": 1e-3,
            "empty": {},
            "empty_list": [],
        }
    )
    cfg.missing_dict = OmegaConf.create({})
    OmegaConf.update(cfg, "missing_dict", MISSING, merge=False)
    plain = _both(cfg)
    assert plain["resolver"] == 42 and plain["env"] == "from-env" and plain["escaped"] == "${a}"
    assert plain["ref_dict"]["deep"]["y"][2] == {"z": "x_1_1"}
    _both(cfg, enum_to_str=True)
    assert to_plain(cfg, enum_to_str=True)["typed"]["mapping"] == {"RED": "r"}
    assert _both(OmegaConf.create([1, "${0}", {"a": "${0}"}])) == [1, 1, {"a": 1}]
    assert _both(OmegaConf.create({"a": {"b": "${..c}"}, "c": 5}))["a"] == {"b": 5}


def test_errors_are_omegaconfs_own():
    for bad, error in (
        ({"a": "${nope}"}, InterpolationKeyError),
        ({"a": "${oc.env:MLPLAB_NOT_SET_ANYWHERE}"}, InterpolationResolutionError),
        ({"a": {"b": "${..missing}"}, "missing": "???"}, Exception),
    ):
        cfg = OmegaConf.create(bad)
        with pytest.raises(error) as want:
            OmegaConf.to_container(cfg, resolve=True)
        with pytest.raises(type(want.value)) as got:
            to_plain(cfg)
        assert str(got.value) == str(want.value)
