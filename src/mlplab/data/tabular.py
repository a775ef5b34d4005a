"""Small real tables shipped inside installed packages, and ``load_csv`` for your own file.

Every loader returns ``(DataFrame, TableSpec)`` with RAW values, like :mod:`mlplab.data.toy`:
numeric features as float64, categorical features as canonical strings (object dtype: 3.0 →
"3", "TRUE" → "True"; see :func:`mlplab.data.cells.canonical`, which eval and predict use
too), missing values kept as NaN, and the target as readable class labels (classification)
or float64 (regression). Scaling and one-hot encoding happen later, fitted on the training
split only.

Datasets: ``load_penguins``, ``load_breast_cancer``, ``load_wine``, ``load_digits``
(classification), ``load_diabetes``, ``load_cars`` (regression), and ``load_csv`` for your own
.csv / .parquet file; the lecture's flights table is :mod:`mlplab.data.flights`.
Try one: ``python -c "from mlplab.data.tabular import load_cars; print(load_cars()[0])"``
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from mlplab.data.cells import canonical, to_numbers
from mlplab.data.io import read_table
from mlplab.data.spec import SPLITS, TASKS, TableSpec
from mlplab.errors import ConfigError, check

MAX_CLASSES = 20  # an integer-valued numeric target with at most this many values is multiclass
# An inferred text column of numbers with a few typos ("12,5", "?") is numeric, those cells
# missing: at most max(3, 1%) of its non-missing cells, and never more than 5% of them.
LENIENT_CELLS, LENIENT_SHARE, LENIENT_MAX_SHARE = 3, 0.01, 0.05


def package_dir(package: str, *parts: str) -> Path:
    """A data folder inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {package!r} is missing: pip install {package}")
    return Path(spec.submodule_search_locations[0], *parts)


def _is_number(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _strings(col: pd.Series) -> pd.Series:
    """Canonical category strings (object dtype), missing as NaN: 3.0 → "3", "TRUE" → "True",
    "NA" → NaN (rules: :mod:`mlplab.data.cells`), the same keys eval and predict use."""
    return pd.Series(canonical(col, missing=np.nan), index=col.index, dtype=object)


def finish(df: pd.DataFrame, spec: TableSpec) -> tuple[pd.DataFrame, TableSpec]:
    """Keep only the spec's columns, in spec order, with the dtypes every loader promises."""
    split = [spec.split_by] if spec.split_by else []
    out = df[[*spec.numeric, *spec.categorical, spec.target, *split]].reset_index(drop=True)
    out = out.astype({c: np.float64 for c in spec.numeric})
    for c in (*spec.categorical, *split):
        out[c] = _strings(out[c])
    if spec.task == "regression":
        out[spec.target] = out[spec.target].astype(np.float64)
    elif not _is_number(out[spec.target]):
        out[spec.target] = _strings(out[spec.target])
    return out, spec


# --- small classic datasets -----------------------------------------------------------------


def load_penguins():
    """Palmer penguins (palmerpenguins, Gorman et al. 2014): 344 penguins from 3 Antarctic islands.

    Target ``species``: Adelie, Chinstrap or Gentoo. Numeric: bill_length_mm, bill_depth_mm,
    flipper_length_mm, body_mass_g (NaN for 2 birds never measured). Categorical: island
    (Biscoe, Dream, Torgersen), sex (male/female, NaN for 11 birds).
    """
    df = pd.read_csv(package_dir("palmerpenguins", "data") / "penguins.csv")
    numeric = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
    spec = TableSpec("species", "multiclass", numeric=numeric, categorical=("island", "sex"))
    return finish(df.dropna(subset=["species"]), spec)


def _sklearn(name: str, target: str, task: str, **kwargs) -> tuple[pd.DataFrame, TableSpec]:
    """A dataset bundled with scikit-learn, class indices replaced by their names."""
    from sklearn import datasets  # imported here: ~1 s, and most runs never need it

    bunch = getattr(datasets, f"load_{name}")(as_frame=True, **kwargs)
    df = bunch.data.copy()
    names = getattr(bunch, "target_names", None)
    y = bunch.target.to_numpy()
    df[target] = y if names is None else np.asarray(names).astype(str)[y]
    return finish(df, TableSpec(target, task, numeric=tuple(bunch.data.columns)))


def load_breast_cancer():
    """Wisconsin diagnostic breast cancer (scikit-learn): 569 tumours, 30 numeric features:
    mean, standard error and worst value of 10 properties of cell nuclei in a fine-needle
    aspirate image (radius, texture, ...). Target ``diagnosis``: "malignant" (212) / "benign".
    """
    return _sklearn("breast_cancer", "diagnosis", "binary")


def load_wine():
    """Italian wines (scikit-learn, UCI): 178 wines, 13 chemical measurements (alcohol,
    malic_acid, ash, flavanoids, proline, ...). Target ``cultivar``: class_0, class_1, class_2.
    """
    return _sklearn("wine", "cultivar", "multiclass")


def load_digits():
    """Handwritten digits (scikit-learn, UCI): 1797 images of 8×8 pixels, pixel_R_C = ink 0..16.
    Target ``digit``: "0".."9" (strings, so they read as class labels, not numbers).
    """
    return _sklearn("digits", "digit", "multiclass")


def load_diabetes():
    """Diabetes (scikit-learn, Efron et al. 2004): 442 patients, unscaled baseline values:
    age, sex (1 or 2), bmi, bp (mean blood pressure), s1..s6 (blood serum measures).
    Target ``progression``: disease progression one year after baseline (regression).
    """
    return _sklearn("diabetes", "progression", "regression", scaled=False)


def load_cars():
    """Cars of 1970–1982 (vega_datasets' cars.json, the UCI Auto MPG data): predict fuel use.

    Target ``Miles_per_Gallon`` (regression; 8 of 406 cars have none and are dropped → 398).
    Numeric: Cylinders, Displacement (cu in), Horsepower (NaN for 6 cars), Weight_in_lbs,
    Acceleration (s for 0–60 mph), Year (model year). Categorical: Origin (USA, Europe, Japan).
    """
    df = pd.read_json(package_dir("vega_datasets", "_data") / "cars.json")
    df["Year"] = pd.to_datetime(df["Year"]).dt.year  # "1970-01-01" → 1970
    numeric = ("Cylinders", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration", "Year")
    spec = TableSpec("Miles_per_Gallon", "regression", numeric=numeric, categorical=("Origin",))
    return finish(df.dropna(subset=["Miles_per_Gallon"]), spec)


# --- the user's own file --------------------------------------------------------------------


def load_csv(
    path: str,
    target: str,
    task: str | None = None,
    numeric: list | None = None,
    categorical: list | None = None,
    split_by: str | None = None,
):
    """Your own table from a .csv or .parquet (.pq) file; prints whatever it had to infer.

    Features are all columns except ``target`` and ``split_by``. A list you leave out is
    inferred from the columns not named anywhere: numeric dtype → ``numeric``; text, bool or
    category → ``categorical`` (pass ``categorical=[]`` to use numeric columns only). A text
    column of numbers with a few typos ("12,5", "?": at most max(3, 1%) and at most 5% of its
    non-missing cells) is numeric, with those cells missing (printed; eval and predict read
    them the same way); a column you name in ``numeric`` must hold only numbers. An
    omitted ``task`` is inferred from the target: text → binary (2 classes) or multiclass;
    numbers → binary (2 values), multiclass (integers, ≤ 20 values) or regression.
    ``split_by`` names a column of "train"/"val"/"test" that fixes the split.

    Raises:
        ConfigError: one line naming the file, column or value at fault. Rows in messages
            count data rows from 1 (the header is not a row).
    """
    check(task is None or task in TASKS, "task", task, f"expected one of {list(TASKS)}")
    df, name = read_table(path, key="data.options.path"), Path(path).name
    named = [target, *(numeric or []), *(categorical or []), *([split_by] if split_by else [])]
    _check_columns(df, name, named, target, split_by)
    rest = [c for c in df.columns if c not in named]
    inferred, lenient = [], {}
    if numeric is None:
        text = [c for c in rest if not _is_number(df[c])]
        lenient = {c: found for c in text if (found := _mostly_numbers(df, c)) is not None}
        numeric = [c for c in rest if _is_number(df[c]) or c in lenient]
        inferred.append(f"numeric={_short(numeric)}")
    if categorical is None:
        categorical = [c for c in rest if not _is_number(df[c]) and c not in lenient]
        inferred.append(f"categorical={_short(categorical)}")
    check(numeric or categorical, "features", [], f"{name} has no columns besides the target")
    notes = [note for _, note in lenient.values()]
    for col in numeric:
        df[col] = lenient[col][0] if col in lenient else _numbers(df[col], col, name)
    if task is None:
        task, n = _infer_task(df[target]), len(set(canonical(df[target])))
        inferred.insert(0, f"task={task}" + ("" if task == "regression" else f" ({n} classes)"))
    if task == "regression":
        df[target] = _numbers(df[target], target, name, "task=regression needs a numeric target")
    if inferred:
        print(f"inferred from {name}: " + "; ".join([", ".join(inferred), *notes]))
    spec = TableSpec(target, task, tuple(numeric), tuple(categorical), split_by, tuple(lenient))
    return finish(df, spec)


def _first(mask: pd.Series) -> int:
    """Position of the first True (0-based)."""
    return int(np.flatnonzero(mask.to_numpy())[0])


def _check_columns(df: pd.DataFrame, name: str, named: list, target: str, split_by) -> None:
    """Every named column exists, once; no blank targets; the split column holds only splits."""
    twice = sorted({c for c in named if named.count(c) > 1})
    check(not twice, "columns", twice, "target, numeric, categorical and split_by must not overlap")
    for col in named:
        if col not in df.columns:
            raise ConfigError(f"column {col!r} is not in {name}; its columns: {list(df.columns)}")
    missing = pd.Series(pd.isna(canonical(df[target], missing=None)))  # "NA", "" count too
    if missing.any():
        raise ConfigError(
            f"target column {target!r} of {name} has {int(missing.sum())} missing values "
            f"(first in row {_first(missing) + 1}): drop or fill those rows"
        )
    if split_by is not None and not df[split_by].isin(SPLITS).all():
        i = _first(~df[split_by].isin(SPLITS))
        raise ConfigError(
            f"split column {split_by!r} of {name} has value {df[split_by].iloc[i]!r} "
            f"(row {i + 1}): allowed values are {list(SPLITS)}"
        )


def _numbers(col: pd.Series, column: str, name: str, allowed: str = "") -> pd.Series:
    """The column as float64, or a ConfigError naming its first value that is not a number."""
    values, bad = to_numbers(col)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"column {column!r} of {name} has non-numeric value {col.iloc[i]!r} "
            f"(row {i + 1}): {allowed or 'numeric columns hold numbers or blanks'}"
        )
    return pd.Series(values, index=col.index)


def _mostly_numbers(df: pd.DataFrame, column: str) -> tuple[pd.Series, str] | None:
    """(values, note) for a text column of numbers with a few non-numeric cells, read as
    missing in ``values`` (``note`` says how many and the first). Typos ("12,5", "?") count
    toward the ``LENIENT_*`` limits; missing markers read_csv doesn't know (" n/a", "NA ")
    don't. None for any other column (text of numbers only stays categorical: codes kept as
    text)."""
    col = df[column]
    values, bad = to_numbers(col)
    unread = np.isnan(values) & col.notna().to_numpy()
    n_numbers, n_bad = int((~np.isnan(values)).sum()), int(bad.sum())
    n = n_numbers + n_bad  # non-missing cells
    limit = min(max(LENIENT_CELLS, LENIENT_SHARE * n), LENIENT_MAX_SHARE * n)
    if not (unread.any() and n_numbers and n_bad <= limit):
        return None
    i = int(np.flatnonzero(unread)[0])
    note = (
        f"{column}: {int(unread.sum())} non-numeric cell(s) read as missing "
        f"(first {col.iloc[i]!r} in row {i + 1})"
    )
    return pd.Series(values, index=col.index), note


def _infer_task(y: pd.Series) -> str:
    if not _is_number(y):  # classes as the model will see them: "yes" and "yes " are one
        return "binary" if len(set(canonical(y))) == 2 else "multiclass"
    n = y.nunique()
    if n == 2:
        return "binary"
    return "multiclass" if n <= MAX_CLASSES and bool((y % 1 == 0).all()) else "regression"


def _short(columns: list[str], limit: int = 12) -> str:
    shown = ", ".join(map(str, columns[:limit]))
    return f"[{shown}, ... +{len(columns) - limit} more]" if len(columns) > limit else f"[{shown}]"
