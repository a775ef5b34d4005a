"""Name → dataset function. ``data.source`` in the config picks one of these."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from mlplab.data import flights, tabular, toy
from mlplab.data.columns import ParsedTable
from mlplab.data.io import absolute_path, check_file
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

# The options of a source that name a file ("table": read by ``io.read_table``, checked before
# anything runs) or a folder. A run makes them absolute first (``resolve_paths``), so its
# config.yaml and checkpoints read the same data from whatever folder they are used in.
PATH_OPTIONS: dict[str, dict[str, str]] = {
    "csv": {"path": "table"},
    "flights": {"cache_dir": "folder"},
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
    for key in data_files(name, options):
        check_file(options[key], key=f"data.options.{key}")


def data_files(name: str, options: dict) -> list[str]:
    """The keys of ``options`` that name a data file of source ``name``."""
    kinds = PATH_OPTIONS.get(name, {})
    return [k for k, kind in kinds.items() if kind == "table" and _is_path(options.get(k))]


def check_recorded_files(name: str, options: dict, owner: str, advice: str) -> None:
    """The data files a past run recorded are still there; else one ConfigError naming
    ``owner`` (the record, e.g. ``ckpt_path='…'``), where the file was at training time, where
    it was looked for (if elsewhere) and ``advice`` (what to do instead)."""
    for key in data_files(name, options):
        recorded = str(options[key])
        looked = absolute_path(recorded)
        if Path(looked).is_file():
            continue
        if Path(recorded).is_absolute():
            where = f"{recorded} at training time and is not there now"
        else:  # recorded before runs made their paths absolute
            where = f"{recorded!r} relative to the folder training ran in, not found here"
        seen = "" if looked == recorded else f" (looked at {looked})"
        raise ConfigError(
            f"{owner} can't rebuild its data: data.options.{key} was {where}{seen}: {advice}"
        )


def resolve_paths(data) -> None:
    """Make the path options of ``data`` (a data config or its dict) absolute, in place: the
    run records where its data was, not how it was typed. Anything else (another DataModule,
    a ``${...}`` reference that ``config.portable_data`` keeps) is left as it is."""
    options = data.get("options") if hasattr(data, "get") else None
    if not hasattr(options, "get"):
        return
    for key in PATH_OPTIONS.get(data.get("source"), {}):
        value = options.get(key)
        if _is_path(value) and "${" not in str(value):
            options[key] = absolute_path(value)


def _is_path(value) -> bool:
    return isinstance(value, str | Path) and str(value) != ""


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
    return _PARSED.setdefault(id(df), ParsedTable(df))
