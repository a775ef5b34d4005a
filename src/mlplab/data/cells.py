"""What one raw cell means: its canonical category string, its number, or missing.

Categories and class labels are matched by one canonical string (``canonical``), used by the
loaders when they finish a frame and by the ``Preprocessor`` at fit, eval and predict time. A
value and its round trip through a CSV or Parquet file (``write_table`` → ``read_table``) get
the same key:
  - missing: None, NaN, pd.NA and the strings ``pandas.read_csv`` reads as missing ("", "NA",
    "n/a", "null", "None", ...; ``NA_STRINGS``) → one missing category;
  - booleans: True, "True", "true", "TRUE" → "True" (read_csv parses all three as True);
  - numbers and numeric text by value: 3, 3.0, "3", "3.0", "03" → "3"; 0.5 → "0.5";
    integers beyond 2**53 (which a float column can't hold) as floats, "1e+20";
  - any other text: surrounding whitespace stripped, case kept ("Red" and "red" differ).

Numeric columns read by the same rule for missing (``to_numbers``); a cell that is no number, or
an ``inf``, is a ConfigError naming the column, the value and its row (``numeric``). Rows in
messages are 1-based data rows of the loaded table: a frame's index label + 1 (split frames
keep the table's labels; files are read with a RangeIndex).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from mlplab.errors import ConfigError

MISSING = "<missing>"  # how a missing categorical value is spelled in the categories
# pandas.read_csv's default na_values (tests pin this to the installed pandas): text spelled
# like this can't survive a CSV round trip, so it is missing everywhere.
NA_STRINGS = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"}
    | {"<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
)
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf(?:inity)?", re.I)
EXACT_INT = 2**53  # float64 holds every integer below this (a CSV column with blanks is float)


# ---- canonical categories -------------------------------------------------------------------
def _number_key(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x.is_integer() and abs(x) < EXACT_INT:
        return str(int(x))  # 3.0 → "3", -0.0 → "0"
    return repr(x)  # shortest text that reads back as the same float64


def canonical_key(value) -> str | None:
    """The canonical string of one value, None when missing (rules: module docstring)."""
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        big = abs(int(value)) >= EXACT_INT
        return _number_key(float(value)) if big else str(int(value))
    if isinstance(value, float | np.floating):
        # str first: float32 0.1 is the "0.1" a CSV file shows, not 0.10000000149011612
        value = str(value)
    elif value is None or (np.ndim(value) == 0 and pd.isna(value)):  # None, pd.NA, NaT
        return None
    text = str(value).strip()
    if text in NA_STRINGS:
        return None
    if text.lower() in ("true", "false"):
        return text.capitalize()
    return _number_key(float(text)) if NUMBER.fullmatch(text) else text


def factorized(values) -> tuple[np.ndarray, list[str | None]]:
    """(codes, keys): row i's canonical key is ``keys[codes[i]]`` (the last key, None, is
    missing), computed once per distinct value."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if pd.api.types.is_float_dtype(series) and series.dtype.itemsize < 8:
        # as text first: float32 0.1 is the "0.1" a CSV file shows, not 0.10000000149011612
        series = pd.Series(series.to_numpy(dtype=np.float32, na_value=np.nan).astype(str))
    kind = pd.api.types.infer_dtype(series, skipna=True) if series.dtype == object else ""
    if kind.startswith("mixed") and kind != "mixed-integer-float":
        # factorize would merge True with 1 (they hash and compare equal): bools become text
        series = series.map(lambda v: str(v) if isinstance(v, bool | np.bool_) else v)
    codes, uniques = pd.factorize(series)
    return codes, [*(canonical_key(u) for u in uniques), None]


def canonical(values, missing: object = MISSING) -> np.ndarray:
    """(N,) canonical category strings of a column or list of values, ``missing`` (NaN in
    loaded frames) where a value is missing."""
    return decode(*factorized(values), missing)


def decode(codes: np.ndarray, keys: list[str | None], missing: object = MISSING) -> np.ndarray:
    """``factorized``'s (codes, keys) as each row's key, ``missing`` where a cell is missing."""
    table = np.array([missing if k is None else k for k in keys], dtype=object)
    return table[codes]  # code −1 (missing) picks the last entry


# ---- numbers --------------------------------------------------------------------------------
def to_numbers(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad): the column as float64, NaN where missing or not a number, and a mask of
    the cells that hold something that is not a number. Missing means NaN/None/pd.NA or one
    of ``NA_STRINGS`` (the same rule as for categories); booleans count as 0/1."""
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(col), dtype=bool)
    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & col.notna().to_numpy()
    if bad.any():  # "n/a", " ", "NA" are blanks, as read_csv reads them
        blank = [isinstance(v, str) and v.strip() in NA_STRINGS for v in col.to_numpy()[bad]]
        bad[np.flatnonzero(bad)[blank]] = False
    return values, bad


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
