"""Preprocessing fitted on the training split only, with a state made of plain numbers.

Feature layout of the model input, in order:
  1. numeric columns, standardized ``(x − mean) / std`` with train statistics; a missing
     value becomes the train median (before scaling);
  2. one 0/1 missing-indicator per numeric column that had missing values in training;
  3. one-hot blocks, one per categorical column: the training categories plus an "unknown"
     slot, where values never seen in training land (at predict time too) instead of crashing.

Categories and class labels are matched by their canonical string (rules and code:
:mod:`mlplab.data.cells`), the same key the loaders give them when they finish a frame.

Numbers must be finite: an ``inf`` cell, or a value so large that the mean, the standard
deviation or the standardized float32 input overflows, is a ConfigError naming the column,
the row and the value.

The state is a dict of lists, floats and strings, so it travels inside a Lightning checkpoint
(through ``TabularDataModule.state_dict``) and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from mlplab.data.cells import MISSING, canonical, cell_error, row_of
from mlplab.data.columns import Columns
from mlplab.data.spec import TableSpec, unstandardize
from mlplab.errors import ConfigError

FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Preprocessor:
    """Encodes features and target of one table spec; see the module docstring.

    Targets: classification → class index (``classes``: the training frame's labels, sorted);
    regression → ``(y − target_mean) / target_std``. ``lenient`` columns read text that isn't a
    number as missing. ``float32`` columns were float32 in training: inputs are rounded to
    float32 first, because a file shows a float32 by its shortest decimal (0.1), which reads
    back as a different float64. Fields added later have defaults, so older checkpoints load.
    """

    task: str
    target: str
    numeric: list[str]
    mean: list[float]
    std: list[float]
    median: list[float] = field(default_factory=list)
    indicators: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    classes: list = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)
    target_mean: float = 0.0
    target_std: float = 1.0
    lenient: list[str] = field(default_factory=list)
    float32: list[str] = field(default_factory=list)

    @classmethod
    def fit(
        cls, train: pd.DataFrame, spec: TableSpec, columns: Columns | None = None
    ) -> Preprocessor:
        """Fitted on ``train``, read through ``columns`` (default: its own cells)."""
        columns = columns or Columns(train)
        lenient = [c for c in spec.lenient if c in spec.numeric]
        stats, indicators = [], []
        for column in spec.numeric:
            x = columns.numeric(column, lenient=column in lenient)  # (N,)
            stats.append(_statistics(train, column, x))
            if np.isnan(x).any():
                indicators.append(column)
        mean, std, median = ([s[i] for s in stats] for i in range(3))
        return cls(
            task=spec.task,
            target=spec.target,
            numeric=list(spec.numeric),
            mean=mean,
            std=std,
            median=median,
            indicators=indicators,
            categorical=list(spec.categorical),
            categories=[sorted(set(columns.canonical(c))) for c in spec.categorical],
            lenient=lenient,
            float32=[c for c in spec.numeric if train[c].dtype == np.float32],
            **cls._fit_target(train, spec, columns),
        )

    @staticmethod
    def _fit_target(train: pd.DataFrame, spec: TableSpec, columns: Columns) -> dict:
        if spec.task == "regression":
            y = columns.numeric(spec.target, " (the target)")
            _no_empty(train, spec.target, np.isnan(y))
            mean, std, _ = _statistics(train, spec.target, y)
            return {"target_mean": mean, "target_std": std}
        y = train[spec.target]
        keys = columns.canonical(spec.target, missing=None)
        _no_empty(train, spec.target, pd.isna(keys))
        # one class per canonical key ("3" and 3.0 are one), labelled by its first spelling
        _, first = np.unique(keys.astype(str), return_index=True)
        classes = _sorted(y.iloc[np.sort(first)].tolist())
        want = "exactly 2" if spec.task == "binary" else "at least 2"
        if len(classes) < 2 or (spec.task == "binary" and len(classes) != 2):
            raise ConfigError(
                f"target {spec.target!r} has {len(classes)} classes in the training split "
                f"({classes[:10]}): a {spec.task} task needs {want}"
            )
        index = pd.Index(canonical(classes)).get_indexer(keys)
        counts = np.bincount(index, minlength=len(classes))
        return {"classes": classes, "class_counts": [int(c) for c in counts]}

    # ---- sizes --------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.numeric) + len(self.indicators) + sum(len(c) + 1 for c in self.categories)

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric) + [f"{c}_missing" for c in self.indicators]
        for column, cats in zip(self.categorical, self.categories, strict=True):
            names += [f"{column}={v}" for v in cats] + [f"{column}=<unknown>"]
        return names

    def class_weights(self) -> list[float]:
        """Inverse-frequency weights: ``n / (k · n_c)`` per class (binary: ``[n_neg / n_pos]``,
        the positive-class weight of BCE)."""
        counts = np.asarray(self.class_counts, dtype=np.float64)
        if self.task == "binary":
            return [float(counts[0] / counts[1])]
        return (counts.sum() / (len(counts) * counts)).tolist()

    # ---- transforms ---------------------------------------------------------------------
    def check_columns(self, df: pd.DataFrame, with_target: bool = False) -> None:
        needed = self.numeric + self.categorical + ([self.target] if with_target else [])
        absent = [c for c in needed if c not in df.columns]
        if absent:
            raise ConfigError(
                f"input is missing column(s) {absent} that the model was trained on "
                f"(it has {list(df.columns)[:20]})"
            )

    def features(self, df: pd.DataFrame, columns: Columns | None = None) -> torch.Tensor:
        """(N, n_features) float32 model input (``columns``: as in ``fit``)."""
        self.check_columns(df)
        columns = columns or Columns(df)
        n, k, m = len(df), len(self.numeric), len(self.indicators)
        out = np.zeros((n, self.n_features), dtype=np.float32)  # one buffer, no temporaries
        missing = {}
        for j, column in enumerate(self.numeric):
            x = columns.numeric(column, lenient=column in self.lenient)  # (N,)
            if column in self.float32:
                x = _as_float32(df, column, x)
            missing[column] = np.isnan(x)
            x = np.where(missing[column], self.median[j], x)
            out[:, j] = _scaled(df, column, x, self.mean[j], self.std[j])
        for j, column in enumerate(self.indicators):
            out[:, k + j] = missing[column]
        offset, rows = k + m, np.arange(n)
        for column, cats in zip(self.categorical, self.categories, strict=True):
            known, codes, _ = _lookup(columns, column, cats)
            slots = known[codes]  # the key's slot per row; −1: never seen in training
            slots[slots < 0] = len(cats)  # unseen in training → the unknown slot
            out[rows, offset + slots] = 1.0
            offset += len(cats) + 1
        return torch.from_numpy(out)

    def unseen_categories(self, df: pd.DataFrame) -> dict[str, tuple[list[str], int]]:
        """Column → (its categories never seen in training as sorted canonical keys, a missing
        cell as ``<missing>``; the rows holding them), for the columns that have any."""
        self.check_columns(df)
        columns = Columns(df)
        found = {}
        for column, cats in zip(self.categorical, self.categories, strict=True):
            known, codes, names = _lookup(columns, column, cats)
            unseen = known[codes] < 0
            if unseen.any():
                values = names[np.unique(codes[unseen])]  # code −1 (missing): the last name
                found[column] = (sorted(set(values)), int(unseen.sum()))
        return found

    def targets(self, df: pd.DataFrame, columns: Columns | None = None) -> torch.Tensor:
        """(N,) targets: float32 for binary/regression, int64 class indices for multiclass."""
        self.check_columns(df, with_target=True)
        columns = columns or Columns(df)
        if self.task == "regression":
            y = columns.numeric(self.target, " (the target)")
            _no_empty(df, self.target, np.isnan(y))
            z = _scaled(df, self.target, y, self.target_mean, self.target_std)
            return torch.from_numpy(z).float()
        # canonical keys are per distinct value: match those to the classes, then index rows
        rows, keys = columns.factorized(self.target)  # key of row i: keys[rows[i]] (−1 → None)
        _no_empty(df, self.target, np.array([k is None for k in keys])[rows])
        lookup = pd.Index(canonical(self.classes)).get_indexer(keys[:-1])
        codes = np.append(lookup, -1).astype(np.int64)[rows]
        if (codes < 0).any():  # −1: a class the model never saw
            unseen = sorted(set(df[self.target][codes < 0].tolist()), key=str)[:10]
            raise ConfigError(
                f"target {self.target!r} has classes the model never saw: {unseen} "
                f"(known: {self.classes[:20]})"
            )
        t = torch.from_numpy(codes)
        return t.float() if self.task == "binary" else t

    def inverse_target(self, y: torch.Tensor) -> torch.Tensor:
        """Regression predictions back in the target's own units."""
        return unstandardize(y, self.target_mean, self.target_std)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> Preprocessor:
        return cls(**state)


def unseen_note(unseen: dict[str, tuple[list[str], int]], shown: int = 3) -> str | None:
    """One line for ``Preprocessor.unseen_categories``: per column, the count, the rows and
    the first ``shown`` of them."""
    if not unseen:
        return None
    parts = []
    for column, (values, rows) in unseen.items():
        more = ", ..." if len(values) > shown else ""
        names = ", ".join(repr(v) for v in values[:shown]) + more
        parts.append(f"{column}: {len(values)} in {rows:,} row{'s' * (rows != 1)} ({names})")
    return "note: categories never seen in training, scored as unknown: " + "; ".join(parts)


def _lookup(columns: Columns, column: str, cats: list[str]) -> tuple[np.ndarray, ...]:
    """(known, codes, names): row i holds ``names[codes[i]]`` (``<missing>`` for code −1),
    whose slot among ``cats`` is ``known[codes[i]]`` (−1: never seen in training)."""
    codes, keys = columns.factorized(column)
    names = np.array([MISSING if k is None else k for k in keys], dtype=object)
    return pd.Index(cats).get_indexer(names), codes, names


def _no_empty(df: pd.DataFrame, target: str, empty: np.ndarray) -> None:
    if empty.any():
        raise ConfigError(
            f"target {target!r} has {int(empty.sum())} empty value(s) "
            f"(first at row {row_of(df, int(np.flatnonzero(empty)[0]))})"
        )


def _sorted(labels: list) -> list:
    """Class labels in their natural order (numbers by value), by text when types mix."""
    try:
        return sorted(labels)
    except TypeError:
        return sorted(labels, key=str)


def _as_float32(df: pd.DataFrame, column: str, x: np.ndarray) -> np.ndarray:
    """``x`` rounded to float32 (and back to float64), refusing values float32 can't hold."""
    with np.errstate(over="ignore"):
        rounded = x.astype(np.float32)
    if np.isinf(rounded).any():
        raise _overflow(df, column, x, "float32 (its type in training)")
    return rounded.astype(np.float64)


def _overflow(df: pd.DataFrame, column: str, values: np.ndarray, what: str) -> ConfigError:
    """The overflow error, naming the column's largest value (the cause) and its row."""
    largest = np.arange(len(values)) == np.nanargmax(np.abs(values))
    why = f" too large to standardize: {what} overflows; rescale the column (e.g. other units)"
    return cell_error(df, column, largest, " has value {}", why)


def _scaled(df: pd.DataFrame, column: str, x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(x − mean) / std``, refusing a result that doesn't fit in float32 (the model input)."""
    with np.errstate(all="ignore"):
        z = (x - mean) / std
    too_big = ~(np.abs(z) <= FLOAT32_MAX)
    if too_big.any():
        why = f" too large to standardize: (x − {mean:.6g}) / {std:.6g} overflows float32"
        raise cell_error(df, column, too_big, " has value {}", why)
    return z


def _statistics(df: pd.DataFrame, column: str, x: np.ndarray) -> tuple[float, float, float]:
    """(mean, std, median) of a column's non-missing values; (0, 1, 0) when it has none."""
    if np.isnan(x).all():
        return 0.0, 1.0, 0.0  # an all-missing column: imputed to 0, never scaled away
    with np.errstate(all="ignore"):
        mean, std, median = float(np.nanmean(x)), float(np.nanstd(x)), float(np.nanmedian(x))
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise _overflow(df, column, x, "its mean or standard deviation")
    return mean, std if std > 0 else 1.0, median  # a constant column → 0, not NaN
