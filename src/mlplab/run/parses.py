"""OmegaConf parses an interpolation string (``${seed}``, ``${paths.output_dir}/checkpoints``)
with its ANTLR grammar every time a node holding it is resolved: ~150 µs a string, in pure
Python. A population resolves the same nine strings of the train config for each of its
members (``portable_data``, the data and model nodes), so parsing was ~40% of resolving a
member's config (measured: ``portable_data`` 3.3 ms → 1.9 ms a member with this cache).

``cache_interpolation_parses()`` memoizes OmegaConf's ``parse`` where its resolver calls it
(``omegaconf.base.parse``): the same string gives the same tree, and the resolver only reads
the tree (a visitor walks it), so a cached one resolves exactly as a fresh one. A string that
doesn't parse raises as before (errors are not cached). Bounded: a tree is ~4 KiB. Where the
name isn't there (another OmegaConf), nothing is patched and everything works as before.
"""

from __future__ import annotations

import functools
from enum import Enum

import omegaconf.base
from omegaconf import MISSING, Container, DictConfig, ListConfig, Node, OmegaConf

SIZE = 512  # distinct strings kept; a train config has nine


def cache_interpolation_parses() -> None:
    """Memoize ``omegaconf.base.parse`` (once; safe to call again)."""
    parse = getattr(omegaconf.base, "parse", None)
    if parse is None or hasattr(parse, "cache_info"):
        return
    omegaconf.base.parse = functools.lru_cache(maxsize=SIZE)(parse)


def to_plain(cfg: Container, enum_to_str: bool = False):
    """``OmegaConf.to_container(cfg, resolve=True, enum_to_str=enum_to_str)``, ~4× faster.

    OmegaConf's walk validates each key and node type on the way (``_get_child``), ~1.2 ms for
    a train config; a population resolves one for each member. This walk reads the nodes
    directly and resolves interpolations with the node's own ``_dereference_node`` (the same
    resolvers). Anything it doesn't know (another node type, an error on the way) goes to
    OmegaConf's own walk, so errors are OmegaConf's. ``tests/test_parses.py`` checks it equal
    on every shipped config and on hostile ones.
    """
    try:
        return _plain(cfg, enum_to_str)
    except Exception:  # noqa: BLE001 — OmegaConf says what is wrong, in its own words
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=enum_to_str)


def _plain(conf: Container, enum_to_str: bool):
    if conf._is_none():
        return None
    if conf._is_missing():
        return MISSING
    conf = conf._dereference_node()
    if type(conf) is DictConfig:
        items = conf.__dict__["_content"].items()
        out = {}
        for key, node in items:
            if enum_to_str and isinstance(key, Enum):
                key = key.name
            out[key] = _value(node, enum_to_str)
        return out
    if type(conf) is ListConfig:
        return [_value(node, enum_to_str) for node in conf.__dict__["_content"]]
    raise TypeError(type(conf))  # a subclass: OmegaConf's walk


def _value(node: Node, enum_to_str: bool):
    if node._is_interpolation():
        node = node._dereference_node()
    if isinstance(node, Container):
        return _plain(node, enum_to_str)
    value = node._value()
    if enum_to_str and isinstance(value, Enum):
        return value.name
    return value
