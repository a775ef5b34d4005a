"""A table and its column spec: the one shape every dataset, toy or real, takes."""

from __future__ import annotations

from dataclasses import dataclass

TASKS = ("binary", "multiclass", "regression")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TableSpec:
    """Which columns of a DataFrame are features and which is the target.

    Args:
        target: name of the target column.
        task: ``binary`` (BCE), ``multiclass`` (softmax cross-entropy) or ``regression`` (MSE).
        numeric: numeric feature columns (standardized on the training split).
        categorical: categorical feature columns (one-hot; added with the tabular datasets).
        split_by: optional column whose values decide the train/val/test split.
        lenient: numeric columns whose few non-numeric cells (typos) read as missing, in
            training and when serving (``load_csv`` infers them).
    """

    target: str
    task: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    split_by: str | None = None
    lenient: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is invalid: expected one of {list(TASKS)}")

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


def unstandardize(y, mean: float, std: float):
    """A standardized regression target or prediction in its own units: ``y · std + mean``."""
    return y * std + mean
