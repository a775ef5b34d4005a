"""The mean and spread of runs' final metrics: what ``seeds=``, ``cv=``, a sweep's population
and ``mlplab-runs --group-by`` report. Free of torch, so ``mlplab-runs`` starts at once."""

from __future__ import annotations

import math

import pandas as pd

DIVERGED = "diverged"  # mlplab.population.module.DIVERGED, without importing torch


def mean_and_std(summary: pd.DataFrame) -> dict[str, float]:
    """``metric`` → mean over the members that finished, ``metric.std`` → their spread
    (sample std)."""
    done = summary[summary.status != DIVERGED]
    out = {}
    for key in [c for c in summary.columns if "/" in c and c != "run_dir"]:
        values = done[key].astype(float)
        out[key] = float(values.mean())
        out[f"{key}.std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return out
