"""Preprocessing fitted on the training split only, with a state made of plain numbers.

Feature layout of the model input, in order:
  1. numeric columns, standardized ``(x − mean) / std`` with train statistics; a missing
     value becomes the train median (before scaling);
  2. one 0/1 missing-indicator per numeric column that had missing values in training;
  3. one-hot blocks, one per categorical column: the training categories plus an "unknown"
     slot, where values never seen in training land (at predict time too) instead of crashing.

The state is a dict of lists, floats and strings, so it travels inside a Lightning checkpoint
(through ``TabularDataModule.state_dict``) and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from mlplab.data.spec import TableSpec
from mlplab.errors import ConfigError

MISSING = "<missing>"  # how a missing categorical value is spelled in the categories


def _numeric(df: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """Column as float64 (NaN for missing); text that isn't a number is an error."""
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise ConfigError(
            f"column {column!r}{where} has non-numeric value {df[column].iloc[row]!r} (row {row})"
        )
    return values.to_numpy(dtype=np.float64)


def _numeric_block(df: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> np.ndarray:
    """(N, len(columns)) float64, NaN where missing."""
    if not columns:
        return np.zeros((len(df), 0))
    return np.stack([_numeric(df, c, "") for c in columns], axis=1)


def _categories(series: pd.Series) -> np.ndarray:
    """(N,) object array of category strings, ``MISSING`` where empty. Stays in NumPy: the
    pandas string round trip costs more than the one-hot itself on flights-sized tables."""
    values = series.to_numpy(dtype=object, copy=True)
    missing = pd.isna(values)
    if pd.api.types.infer_dtype(values, skipna=True) != "string":  # numbers, bools, mixed
        values = values.astype(str).astype(object)
    values[missing] = MISSING
    return values


@dataclass
class Preprocessor:
    """Encodes features and target of one table spec; see the module docstring.

    Targets: classification → class index (``classes`` sorted); regression → standardized
    ``(y − target_mean) / target_std``, which ``inverse_target`` undoes.
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

    @classmethod
    def fit(cls, train: pd.DataFrame, spec: TableSpec) -> Preprocessor:
        num = _numeric_block(train, spec.numeric)  # (N, numeric)
        with np.errstate(all="ignore"):
            mean, std, median = (np.nanmean(num, 0), np.nanstd(num, 0), np.nanmedian(num, 0))
        mean, median = np.nan_to_num(mean), np.nan_to_num(median)  # an all-missing column → 0
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)  # constant column → 0, not NaN
        missing = np.isnan(num).any(axis=0)
        state = dict(
            task=spec.task,
            target=spec.target,
            numeric=list(spec.numeric),
            mean=mean.tolist(),
            std=std.tolist(),
            median=median.tolist(),
            indicators=[c for c, m in zip(spec.numeric, missing, strict=True) if m],
            categorical=list(spec.categorical),
            categories=[sorted(set(_categories(train[c]))) for c in spec.categorical],
        )
        return cls(**state, **cls._fit_target(train, spec))

    @staticmethod
    def _fit_target(train: pd.DataFrame, spec: TableSpec) -> dict:
        y = train[spec.target]
        if spec.task == "regression":
            values = _numeric(train, spec.target, " (the target)")
            return {"target_mean": float(values.mean()), "target_std": float(values.std() or 1.0)}
        classes = sorted(pd.unique(y).tolist())
        want = "exactly 2" if spec.task == "binary" else "at least 2"
        if len(classes) < 2 or (spec.task == "binary" and len(classes) != 2):
            raise ConfigError(
                f"target {spec.target!r} has {len(classes)} classes in the training split "
                f"({classes[:10]}): a {spec.task} task needs {want}"
            )
        counts = pd.Categorical(y, categories=classes).value_counts().tolist()
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

    def features(self, df: pd.DataFrame) -> torch.Tensor:
        """(N, n_features) float32 model input."""
        self.check_columns(df)
        n, k, m = len(df), len(self.numeric), len(self.indicators)
        out = np.zeros((n, self.n_features), dtype=np.float32)  # one buffer, no temporaries
        num = _numeric_block(df, self.numeric)  # (N, numeric)
        missing = np.isnan(num)
        num = np.where(missing, np.asarray(self.median), num)
        out[:, :k] = (num - np.asarray(self.mean)) / np.asarray(self.std)
        out[:, k : k + m] = missing[:, [self.numeric.index(c) for c in self.indicators]]
        offset, rows = k + m, np.arange(n)
        for column, cats in zip(self.categorical, self.categories, strict=True):
            codes = pd.Index(cats).get_indexer(_categories(df[column]))  # −1: never seen
            codes[codes < 0] = len(cats)  # unseen in training → the unknown slot
            out[rows, offset + codes] = 1.0
            offset += len(cats) + 1
        return torch.from_numpy(out)

    def targets(self, df: pd.DataFrame) -> torch.Tensor:
        """(N,) targets: float32 for binary/regression, int64 class indices for multiclass."""
        self.check_columns(df, with_target=True)
        y = df[self.target]
        empty = y.isna()
        if empty.any():
            raise ConfigError(
                f"target {self.target!r} has {int(empty.sum())} empty value(s) "
                f"(first at row {int(np.argmax(empty.to_numpy()))})"
            )
        if self.task == "regression":
            scaled = (
                _numeric(df, self.target, " (the target)") - self.target_mean
            ) / self.target_std
            return torch.from_numpy(scaled).float()
        codes = pd.Index(self.classes).get_indexer(y).astype(np.int64)  # −1: unknown class
        if (codes < 0).any():
            unseen = sorted(set(y[codes < 0].tolist()), key=str)[:10]
            raise ConfigError(
                f"target {self.target!r} has classes the model never saw: {unseen} "
                f"(known: {self.classes[:20]})"
            )
        t = torch.from_numpy(codes)
        return t.float() if self.task == "binary" else t

    def inverse_target(self, y: torch.Tensor) -> torch.Tensor:
        """Regression predictions back in the target's own units."""
        return y * self.target_std + self.target_mean

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> Preprocessor:
        return cls(**state)
