"""Where the ``Preprocessor`` reads a frame's columns as numbers and canonical keys.

``Columns(df)`` parses the frame's own cells. A population's K DataModules split one shared
table (``sources.shared_sources``) K ways, and parsing a column costs the same for 1,000 rows
as for 600: ``Columns(df, table, rows)`` takes its rows of the shared table's parse
(``ParsedTable``), made once. Parsing is per cell, so those rows are the split's own parse
(``tests/data/test_columns.py`` checks the tensors and the fitted state equal). A column whose
table-wide parse fails (a bad cell anywhere) is parsed from the split's frame instead, so
errors name the split's own cell and come when they came before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mlplab.data.cells import MISSING, decode, factorized, numeric


class ParsedTable:
    """A table's columns parsed once, for the splits that take rows of it."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.parsed: dict[tuple, object] = {}  # (what, column, ...) → its parse, None if it failed

    def parse(self, key: tuple, parse: Callable[[pd.DataFrame], object]):
        """``parse(df)``, made once per ``key``; None where it fails (each split then parses
        its own frame and says its own error)."""
        if key not in self.parsed:
            try:
                self.parsed[key] = parse(self.df)
            except Exception:  # noqa: BLE001
                self.parsed[key] = None
        return self.parsed[key]


class Columns:
    """The columns of ``df``: parsed from its own cells, or, where ``df`` is
    ``table.df.iloc[rows]``, its rows of the table's parse."""

    def __init__(
        self, df: pd.DataFrame, table: ParsedTable | None = None, rows: np.ndarray | None = None
    ) -> None:
        self.df, self.table, self.rows = df, table, rows

    def numeric(self, column: str, where: str = "", lenient: bool = False) -> np.ndarray:
        """``cells.numeric``: the column as finite float64, NaN where missing."""
        if self.table is not None:
            key = ("numeric", column, lenient)
            whole = self.table.parse(key, lambda df: numeric(df, column, lenient=lenient))
            if whole is not None:
                return whole[self.rows]
        return numeric(self.df, column, where, lenient)

    def factorized(self, column: str) -> tuple[np.ndarray, list[str | None]]:
        """``cells.factorized``: (codes, keys), row i's canonical key is ``keys[codes[i]]``."""
        if self.table is not None:
            whole = self.table.parse(("factorized", column), lambda df: factorized(df[column]))
            if whole is not None:
                codes, keys = whole
                return codes[self.rows], keys  # keys of values other splits hold: never indexed
        return factorized(self.df[column])

    def canonical(self, column: str, missing: object = MISSING) -> np.ndarray:
        """``cells.canonical``: (N,) canonical keys, ``missing`` where a cell is missing."""
        return decode(*self.factorized(column), missing)
