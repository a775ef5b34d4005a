"""``mlplab.run.parses.to_plain`` is ``OmegaConf.to_container(resolve=True)``: on every shipped
option's composed config and on hostile ones, values and errors alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pytest
from omegaconf import MISSING, OmegaConf, open_dict

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
            "any_enum": Color.RED,  # an AnyNode holding an Enum
            "enum_list": [Color.GREEN, "${any_enum}"],
        }
    )
    cfg.missing_dict = OmegaConf.create({})
    OmegaConf.update(cfg, "missing_dict", MISSING, merge=False)
    plain = _both(cfg)
    assert plain["resolver"] == 42 and plain["env"] == "from-env" and plain["escaped"] == "${a}"
    assert plain["ref_dict"]["deep"]["y"][2] == {"z": "x_1_1"}
    _both(cfg, enum_to_str=True)
    assert to_plain(cfg, enum_to_str=True)["typed"]["mapping"] == {"RED": "r"}
    assert to_plain(cfg, enum_to_str=True)["enum_list"] == ["GREEN", "RED"]
    assert to_plain(cfg)["enum_list"] == [Color.GREEN, Color.RED]
    assert _both(OmegaConf.create([1, "${0}", {"a": "${0}"}])) == [1, 1, {"a": 1}]
    assert _both(OmegaConf.create({"a": {"b": "${..c}"}, "c": 5}))["a"] == {"b": 5}


@dataclass
class Typed:
    seed: int = 7
    as_text: str = "${typed.seed}"  # a typed node converts what it resolves to
    as_int: int = "${typed.seed}"  # type: ignore[assignment]
    template: str = "s${typed.seed}"
    flag: bool = "${typed.yes}"  # type: ignore[assignment]
    yes: str = "true"


def test_interpolations_resolve_as_omegaconf_resolves_them():
    cfg = OmegaConf.create(
        {
            "n": None,
            "t": True,
            "f": 0.5,
            "s": "text",
            "d": {"k": 1},
            "l": [1, 2],
            "chain": "${chain2}",
            "chain2": "${f}",
            "templates": ["${n}_${t}", "${f}/${s}/${chain}", "a:${s}:b", "${l}", "${d}", "x${d}"],
            "whole": ["${n}", "${t}", "${d}", "${l}", "${d.k}", "${chain}"],
            "relative": {"a": "${..s}", "b": "${.c}", "c": 3},
            "escaped": "\\${s} and ${s}",
            "dollar": "$5 for ${s}",
            "list_index": "${l.1}",
            "typed": OmegaConf.structured(Typed),
            "nested_key": "${typed.seed}",
            "dash": {"a-b": 1},
            "weird": "${oc.select:s}",
        }
    )
    _both(cfg)
    _both(cfg, enum_to_str=True)


def test_errors_are_omegaconfs_own():
    """Where OmegaConf raises, the same error; where it doesn't, the same value."""
    raised = 0
    for bad in (
        {"a": "${nope}"},
        {"a": "${oc.env:MLPLAB_NOT_SET_ANYWHERE}"},
        {"a": {"b": "${..missing}"}, "missing": "???"},
        {"a": "${missing}", "missing": "???"},
        {"a": "x_${missing}", "missing": "???"},
        {"a": "${b}", "b": "${a}"},  # a cycle
        {"a": "${dash.a-b}", "dash": {"a-b": 1}},
        {"a": "${b.c}", "b": 1},
        {"a": "${b.c}", "b": None},
        {"a": "x_${b.c}", "b": None},
    ):
        cfg = OmegaConf.create(bad)
        try:
            want = OmegaConf.to_container(cfg, resolve=True)
        except Exception as err:  # noqa: BLE001
            raised += 1
            with pytest.raises(type(err)) as got:
                to_plain(cfg)
            assert str(got.value) == str(err)
        else:
            assert to_plain(cfg) == want
    assert raised >= 8


def test_portable_data_swaps_its_placeholders_back_also_where_it_cant_swap(tmp_path):
    """``portable_data`` puts placeholders into the run-identity nodes and takes them out: the
    same data and an unchanged config for a read-only config and one without ``run_name``."""
    from mlplab.config import portable_data

    cfg = compose_run(tmp_path, "data=moons")
    want = portable_data(cfg)
    assert want["paths"]["output_dir"] == "${hydra:runtime.output_dir}"
    assert want["callbacks"]["model_checkpoint"]["dirpath"] == "${paths.output_dir}/checkpoints"
    before = OmegaConf.to_container(cfg, resolve=False)
    OmegaConf.set_readonly(cfg, True)
    assert portable_data(cfg) == want
    OmegaConf.set_readonly(cfg, False)
    assert OmegaConf.to_container(cfg, resolve=False) == before
    with open_dict(cfg):
        del cfg["run_name"]
    assert portable_data(cfg) == want  # the key comes back as the identity's reference
    assert "run_name" not in cfg
