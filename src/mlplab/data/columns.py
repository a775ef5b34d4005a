"""Where the ``Preprocessor`` reads a frame's columns as numbers and canonical keys.

``Columns(df)`` parses the frame's own cells. A population's K DataModules split one shared
table (``sources.shared_sources``) K ways, and parsing a column costs the same for 1,000 rows
as for 600: ``TableRows`` parses each column of the shared table once (``ParsedTable``) and
hands a split its rows of the result. Parsing is per cell (``cells.to_numbers``,
``cells.canonical_key``), so a split's rows of the table's parse are the split's own parse:
the same numbers and the same canonical key per row (``tests/data/test_columns.py`` checks the
tensors and the fitted state equal). A column whose table-wide parse fails (a bad cell
anywhere) is parsed from the split's frame instead, so errors name the split's own cell and
come when they came before.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mlplab.data import numbers
from mlplab.data.cells import MISSING, decode, factorized


class Columns:
    """A frame's columns, parsed from its own cells."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df

    def numeric(self, column: str, where: str = "", lenient: bool = False) -> np.ndarray:
        """``numbers.numeric``: the column as finite float64, NaN where missing."""
        return numbers.numeric(self.df, column, where, lenient)

    def factorized(self, column: str) -> tuple[np.ndarray, list[str | None]]:
        """``cells.factorized``: (codes, keys), row i's canonical key is ``keys[codes[i]]``."""
        return factorized(self.df[column])

    def canonical(self, column: str, missing: object = MISSING) -> np.ndarray:
        """``cells.canonical``: (N,) canonical keys, ``missing`` where a cell is missing."""
        return decode(*self.factorized(column), missing)

    def is_float32(self, column: str) -> bool:
        return self.df[column].dtype == np.float32


class ParsedTable:
    """A table's columns parsed once, for the splits that take rows of it."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.parsed: dict[tuple, object] = {}  # (what, column, ...) → its parse, None if it failed

    def rows(self, frame: pd.DataFrame, rows: np.ndarray) -> TableRows:
        """The columns of ``frame``, which is ``df.iloc[rows]``."""
        return TableRows(frame, self, rows)

    def parse(self, key: tuple, parse: Callable[[pd.DataFrame], object]):
        """``parse(df)``, made once per ``key``; None where it fails (a bad cell somewhere, or
        unhashable cells: each split then parses its own frame and says its own error)."""
        if key not in self.parsed:
            try:
                self.parsed[key] = parse(self.df)
            except Exception:  # noqa: BLE001
                self.parsed[key] = None
        return self.parsed[key]


class TableRows(Columns):
    """A split's columns: its rows of the shared table's parse."""

    def __init__(self, frame: pd.DataFrame, table: ParsedTable, rows: np.ndarray) -> None:
        super().__init__(frame)
        self.table, self.rows = table, rows

    def numeric(self, column: str, where: str = "", lenient: bool = False) -> np.ndarray:
        whole = self.table.parse(
            ("numeric", column, lenient), lambda df: numbers.numeric(df, column, lenient=lenient)
        )
        return super().numeric(column, where, lenient) if whole is None else whole[self.rows]

    def factorized(self, column: str) -> tuple[np.ndarray, list[str | None]]:
        whole = self.table.parse(("factorized", column), lambda df: factorized(df[column]))
        if whole is None:
            return super().factorized(column)
        codes, keys = whole
        return codes[self.rows], keys  # keys of values other splits hold too: never indexed
