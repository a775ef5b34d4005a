"""Reading and writing tables (CSV or Parquet, chosen by file extension)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from mlplab.errors import ConfigError, check

FILE_TYPES = (".csv", ".parquet", ".pq")


def absolute_path(path: str | Path) -> str:
    """``path`` as an absolute path: ``~`` expanded, a relative path taken from the folder the
    command was started in (Hydra's original one, also under ``hydra.job.chdir=true``),
    ``..`` folded; symlinks are kept as named."""
    from hydra.utils import to_absolute_path  # its original cwd, or os.getcwd() outside Hydra

    return os.path.normpath(to_absolute_path(os.path.expanduser(str(path))))


def check_file(path: str | Path, key: str = "path") -> None:
    """A file of a table type that is there and not empty; else one ConfigError naming it."""
    path = Path(path)
    check(path.suffix.lower() in FILE_TYPES, key, str(path), f"file type one of {FILE_TYPES}")
    where = repr(str(path))
    if not path.is_file():
        raise ConfigError(f"{key}: data file {where} not found (looked at {path.resolve()})")
    if path.stat().st_size == 0:
        raise ConfigError(f"{key}: data file {where} is empty (0 bytes)")


def read_table(path: str | Path, key: str = "path") -> pd.DataFrame:
    """A non-empty table; any problem is one ConfigError naming the file and its ``key``."""
    check_file(path, key)
    path = Path(path)
    where = repr(str(path))
    try:
        csv = path.suffix.lower() == ".csv"
        # read_csv's defaults (its na_values, True/TRUE/true as booleans, "03" as 3) are what
        # cells.canonical mirrors so that a frame and its file encode alike: change both.
        df = pd.read_csv(path) if csv else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{key}: data file {where} is empty (no header)") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:  # ParserError, ArrowInvalid, ...
        first = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise ConfigError(f"{key}: data file {where} could not be read: {first}") from None
    if len(df) == 0:
        raise ConfigError(f"{key}: data file {where} has a header but no rows: {list(df.columns)}")
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write atomically: a temp file in the same folder, renamed once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs and caches are shared files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
