"""Quality bars of the shipped tabular experiments (test split, seed 42, CPU). Slow."""

from __future__ import annotations

import pytest

from mlplab.train import train

BARS = [
    ("breast_cancer", "test/acc", 0.95),
    ("wine", "test/acc", 0.95),
    ("penguins", "test/acc", 0.97),
    ("digits", "test/acc", 0.96),
    ("diabetes", "test/r2", 0.40),
    ("flights", "test/auroc", 0.70),
]


@pytest.mark.slow
@pytest.mark.parametrize(("experiment", "metric", "bar"), BARS, ids=[b[0] for b in BARS])
def test_experiment_meets_its_quality_bar(experiment, metric, bar, make_cfg):
    metrics = train(make_cfg(f"experiment={experiment}", "seed=42"))
    assert metrics[metric] >= bar, f"{experiment}: {metric}={metrics[metric]:.4f} < {bar}"
