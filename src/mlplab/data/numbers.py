"""Numeric columns as the model reads them: finite numbers, standardized into float32.

An ``inf`` cell, or a value so large that the mean, the standard deviation or the standardized
float32 input overflows, is a ConfigError naming the column, the row and the value. Rows in
messages are 1-based data rows of the loaded table: a frame's index label + 1 (split frames
keep the table's labels; files are read with a RangeIndex). Used by ``Preprocessor``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mlplab.data.cells import to_numbers
from mlplab.errors import ConfigError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def row_of(df: pd.DataFrame, position: int) -> int:
    """1-based data row of ``df.iloc[position]``: its index label + 1 (a split keeps the loaded
    table's labels), or ``position + 1`` where the index isn't made of integers."""
    label = df.index[position]
    is_int = isinstance(label, int | np.integer) and not isinstance(label, bool | np.bool_)
    return int(label) + 1 if is_int else position + 1


def numeric(df: pd.DataFrame, column: str, where: str = "", lenient: bool = False) -> np.ndarray:
    """Column as finite float64 (NaN for missing). Text that isn't a number is an error, or
    missing for a ``lenient`` column; a non-finite number is always an error."""
    values, bad = to_numbers(df[column])
    if bad.any() and not lenient:
        raise cell_error(df, column, bad, f"{where} has non-numeric value {{}}", "")
    infinite = np.isinf(values)
    if infinite.any():
        why = ": numbers must be finite (leave the cell empty if unknown)"
        raise cell_error(df, column, infinite, f"{where} has non-finite value {{}}", why)
    return values


def cell_error(df: pd.DataFrame, column: str, where: np.ndarray, what: str, why: str):
    """``column 'x'<what, with the first cell of where> (row N)<why>`` as a ConfigError; a
    cell shows as 'text' quoted, a number plain (inf, 1e+308)."""
    i = int(np.flatnonzero(where)[0])
    cell = df[column].iloc[i]
    cell = repr(cell.item() if isinstance(cell, np.generic) else cell)
    return ConfigError(f"column {column!r}{what.format(cell)} (row {row_of(df, i)}){why}")


def as_float32(df: pd.DataFrame, column: str, x: np.ndarray) -> np.ndarray:
    """``x`` rounded to float32 (and back to float64), refusing values float32 can't hold."""
    with np.errstate(over="ignore"):
        rounded = x.astype(np.float32)
    if np.isinf(rounded).any():
        raise overflow(df, column, x, "float32 (its type in training)")
    return rounded.astype(np.float64)


def overflow(df: pd.DataFrame, column: str, values: np.ndarray, what: str) -> ConfigError:
    """The error for a column whose statistics or scaled values overflow: names its largest
    value (where the overflow comes from) and that value's row."""
    largest = np.arange(len(values)) == np.nanargmax(np.abs(values))
    why = f" too large to standardize: {what} overflows; rescale the column (e.g. other units)"
    return cell_error(df, column, largest, " has value {}", why)


def scaled(df: pd.DataFrame, column: str, x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(x − mean) / std``, refusing a result that doesn't fit in float32 (the model input)."""
    with np.errstate(all="ignore"):
        z = (x - mean) / std
    too_big = ~(np.abs(z) <= FLOAT32_MAX)
    if too_big.any():
        why = f" too large to standardize: (x − {mean:.6g}) / {std:.6g} overflows float32"
        raise cell_error(df, column, too_big, " has value {}", why)
    return z


def statistics(df: pd.DataFrame, column: str, x: np.ndarray) -> tuple[float, float, float]:
    """(mean, std, median) of a column's non-missing values; (0, 1, 0) when it has none."""
    if np.isnan(x).all():
        return 0.0, 1.0, 0.0  # an all-missing column: imputed to 0, never scaled away
    with np.errstate(all="ignore"):
        mean, std, median = float(np.nanmean(x)), float(np.nanstd(x)), float(np.nanmedian(x))
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise overflow(df, column, x, "its mean or standard deviation")
    return mean, std if std > 0 else 1.0, median  # a constant column → 0, not NaN
