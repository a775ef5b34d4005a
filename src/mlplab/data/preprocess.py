"""Preprocessing fitted on the training split only, with a state made of plain numbers.

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


@dataclass
class Preprocessor:
    """Standardizes numeric features and encodes the target.

    - numeric feature ``x`` → ``(x − mean) / std`` with train-split mean and std;
    - classification target → class index (``classes`` in sorted order);
    - regression target ``y`` → ``(y − target_mean) / target_std``; ``inverse_target`` undoes it.
    """

    task: str
    target: str
    numeric: list[str]
    mean: list[float]
    std: list[float]
    classes: list = field(default_factory=list)
    target_mean: float = 0.0
    target_std: float = 1.0

    @classmethod
    def fit(cls, train: pd.DataFrame, spec: TableSpec) -> Preprocessor:
        num = train[list(spec.numeric)].to_numpy(dtype=np.float64)
        std = num.std(axis=0)
        std[std == 0] = 1.0  # a constant column maps to 0 instead of NaN
        kwargs = {}
        if spec.task == "regression":
            y = train[spec.target].to_numpy(dtype=np.float64)
            kwargs = {"target_mean": float(y.mean()), "target_std": float(y.std() or 1.0)}
        else:
            classes = sorted(pd.unique(train[spec.target]).tolist())
            want = "exactly 2" if spec.task == "binary" else "at least 2"
            if len(classes) < 2 or (spec.task == "binary" and len(classes) != 2):
                raise ConfigError(
                    f"target {spec.target!r} has {len(classes)} classes in the training split "
                    f"({classes[:10]}): a {spec.task} task needs {want}"
                )
            kwargs = {"classes": classes}
        return cls(
            task=spec.task,
            target=spec.target,
            numeric=list(spec.numeric),
            mean=num.mean(axis=0).tolist(),
            std=std.tolist(),
            **kwargs,
        )

    @property
    def n_features(self) -> int:
        return len(self.numeric)

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1

    def features(self, df: pd.DataFrame) -> torch.Tensor:
        """(N, D) float32 features."""
        num = df[self.numeric].to_numpy(dtype=np.float64)
        return torch.from_numpy((num - np.asarray(self.mean)) / np.asarray(self.std)).float()

    def targets(self, df: pd.DataFrame) -> torch.Tensor:
        """(N,) targets: float32 for binary/regression, int64 class indices for multiclass."""
        y = df[self.target]
        if self.task == "regression":
            scaled = (y.to_numpy(dtype=np.float64) - self.target_mean) / self.target_std
            return torch.from_numpy(scaled).float()
        codes = pd.Categorical(y, categories=self.classes).codes.astype(np.int64)
        if (codes < 0).any():
            unseen = sorted(set(y[codes < 0].tolist()), key=str)
            raise ValueError(f"target {self.target!r} has classes unseen in training: {unseen}")
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
