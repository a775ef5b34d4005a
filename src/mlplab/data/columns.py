"""Where the ``Preprocessor`` reads a frame's columns as numbers and canonical keys.

``Columns(df)`` parses the frame's own cells. A population's K DataModules split one shared
table (``sources.shared_sources``) K ways, and parsing a column costs the same for 1,000 rows
as for 600: ``TableRows`` parses each column of the shared table once (``ParsedTable``) and
hands a split its rows of the result. Parsing is per cell (``cells.to_numbers``,
``cells.canonical_key``), so a split's rows of the table's parse are the split's own parse:
the same numbers and the same canonical key per row (``tests/test_columns.py`` checks the
tensors and the fitted state equal). A column whose table-wide parse fails (a bad cell
anywhere) is parsed from the split's frame instead, so errors name the split's own cell and
come when they came before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlplab.data import numbers
from mlplab.data.cells import MISSING, factorized


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
        codes, keys = self.factorized(column)
        table = np.array([missing if k is None else k for k in keys], dtype=object)
        return table[codes]  # code −1 (missing) picks the last entry

    def is_float32(self, column: str) -> bool:
        return self.df[column].dtype == np.float32


class ParsedTable:
    """A table's columns parsed once, for the splits that take rows of it."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self._numeric: dict[tuple[str, bool], np.ndarray | None] = {}
        self._factorized: dict[str, tuple[np.ndarray, list[str | None]] | None] = {}
        self._float32: dict[str, bool] = {}

    def rows(self, frame: pd.DataFrame, rows: np.ndarray) -> TableRows:
        """The columns of ``frame``, which is ``df.iloc[rows]``."""
        return TableRows(frame, self, rows)


class TableRows(Columns):
    """A split's columns: its rows of the shared table's parse."""

    def __init__(self, frame: pd.DataFrame, table: ParsedTable, rows: np.ndarray) -> None:
        super().__init__(frame)
        self.table, self.rows = table, rows

    def numeric(self, column: str, where: str = "", lenient: bool = False) -> np.ndarray:
        parsed = self.table._numeric
        key = (column, lenient)
        if key not in parsed:
            try:
                parsed[key] = numbers.numeric(self.table.df, column, lenient=lenient)
            except Exception:  # noqa: BLE001 — a bad cell somewhere: each split says its own
                parsed[key] = None
        whole = parsed[key]
        if whole is None:
            return super().numeric(column, where, lenient)
        return whole[self.rows]

    def factorized(self, column: str) -> tuple[np.ndarray, list[str | None]]:
        parsed = self.table._factorized
        if column not in parsed:
            try:
                parsed[column] = factorized(self.table.df[column])
            except Exception:  # noqa: BLE001 — e.g. unhashable cells: each split says its own
                parsed[column] = None
        if parsed[column] is None:
            return super().factorized(column)
        codes, keys = parsed[column]
        return codes[self.rows], keys  # keys of values other splits hold too: never indexed

    def is_float32(self, column: str) -> bool:
        known = self.table._float32
        if column not in known:
            known[column] = super().is_float32(column)
        return known[column]
