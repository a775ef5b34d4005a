"""Name → dataset function. ``data.source`` in the config picks one of these."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mlplab.data import flights, tabular, toy
from mlplab.data.columns import ParsedTable
from mlplab.data.io import check_file
from mlplab.data.spec import TableSpec
from mlplab.errors import ConfigError

SOURCES: dict[str, Callable[..., tuple[pd.DataFrame, TableSpec]]] = {
    "pass_fail": toy.make_pass_fail,
    "grades": toy.make_grades,
    "moons": toy.make_moons,
    "circles": toy.make_circles,
    "spiral": toy.make_spiral,
    "xor": toy.make_xor,
    "synthetic": toy.make_synthetic,
    "flights": flights.load_flights,
    "penguins": tabular.load_penguins,
    "breast_cancer": tabular.load_breast_cancer,
    "wine": tabular.load_wine,
    "digits": tabular.load_digits,
    "diabetes": tabular.load_diabetes,
    "cars": tabular.load_cars,
    "csv": tabular.load_csv,
}


_SHARED: dict[str, tuple[pd.DataFrame, TableSpec]] | None = None  # see shared_sources
_PARSED: dict[int, ParsedTable] = {}  # id(shared table) → its parse, while it is shared


def check_source(name: str, options: dict) -> None:
    """What ``load_source(name, **options)`` would refuse before reading anything: an unknown
    source, options its function doesn't take, a data file that isn't there."""
    if name not in SOURCES:
        raise ConfigError(f"data.source={name!r} is invalid: expected one of {sorted(SOURCES)}")
    try:
        inspect.signature(SOURCES[name]).bind(**options)
    except TypeError as err:
        raise ConfigError(
            f"data.options={options!r} is invalid for source {name!r}: {err}"
        ) from None
    if name == "csv" and isinstance(options.get("path"), str | Path):
        check_file(options["path"], key="data.options.path")


def load_source(name: str, **kwargs) -> tuple[pd.DataFrame, TableSpec]:
    """Build the table of dataset ``name`` with its keyword arguments."""
    if name not in SOURCES:
        raise ConfigError(f"data.source={name!r} is invalid: expected one of {sorted(SOURCES)}")
    key = repr((name, sorted(kwargs.items())))
    if _SHARED is not None and key in _SHARED:
        return _SHARED[key]
    try:
        table = SOURCES[name](**kwargs)
    except TypeError as err:  # an unknown or misspelt option of that dataset
        raise ConfigError(f"data.options={kwargs!r} is invalid for source {name!r}: {err}") from err
    if _SHARED is not None:
        _SHARED[key] = table
    return table


@contextmanager
def shared_sources() -> Iterator[None]:
    """Inside this block each (source, options) table is built once and shared: the K
    DataModules of a population (one per seed or fold) read one table instead of K. The
    DataModules only read it (``df.iloc[rows]`` makes their own frames)."""
    global _SHARED
    outer, _SHARED = _SHARED, {} if _SHARED is None else _SHARED
    try:
        yield
    finally:
        _SHARED = outer
        if outer is None:
            _PARSED.clear()


def parsed_table(df: pd.DataFrame) -> ParsedTable | None:
    """The parse of ``df`` shared by the splits of all DataModules inside ``shared_sources``
    (``data.columns``); None for a table that isn't shared (each DataModule parses its own)."""
    if _SHARED is None or not any(df is table for table, _ in _SHARED.values()):
        return None
    if id(df) not in _PARSED:
        _PARSED[id(df)] = ParsedTable(df)
    return _PARSED[id(df)]
