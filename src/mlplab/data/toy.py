"""Seeded toy datasets from the lecture, each returned as ``(DataFrame, TableSpec)``.

- ``make_pass_fail``: "Will I pass this class?" — x1 = lectures attended, x2 = hours spent on
  the final project, y = passed (1) or failed (0).
- ``make_grades``: the same inputs → final grade in % (regression).
- ``make_moons``, ``make_circles``, ``make_spiral``, ``make_xor``: red (0) vs green (1) points
  in 2-D that no straight line separates.

Every generator is a pure function of its arguments: same ``seed`` → same table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlplab.data.spec import TableSpec

LECTURE_COLUMNS = ("lectures", "hours")
POINT_COLUMNS = ("x1", "x2")


def _students(n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    lectures = rng.integers(0, 13, size=n_samples).astype(np.float64)  # 12 lectures in the course
    hours = np.clip(rng.gamma(shape=3.0, scale=2.5, size=n_samples), 0.0, 30.0)
    return lectures, hours


def make_pass_fail(n_samples: int = 1000, noise: float = 1.0, seed: int = 0):
    """Pass/fail from lectures attended and project hours.

    The rule is logistic in a study score, ``P(pass) = σ((0.5·lectures + 0.4·hours − 5) / noise)``:
    both inputs help, neither alone decides, and ``noise`` sets how blurry the boundary is
    (the Bayes accuracy at noise=1 is about 0.86).
    """
    rng = np.random.default_rng(seed)
    lectures, hours = _students(n_samples, rng)
    logit = (0.5 * lectures + 0.4 * hours - 5.0) / max(noise, 1e-6)
    passed = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    df = pd.DataFrame({"lectures": lectures, "hours": hours, "passed": passed})
    return df, TableSpec(target="passed", task="binary", numeric=LECTURE_COLUMNS)


def make_grades(n_samples: int = 1000, noise: float = 6.0, seed: int = 0):
    """Final grade in % from lectures attended and project hours (regression).

    ``grade = 25 + 3·lectures + 35·(1 − e^(−hours/6)) + ε``, ε ~ N(0, noise²), clipped to
    [0, 100]: project hours have diminishing returns, so a linear model leaves signal behind.
    """
    rng = np.random.default_rng(seed)
    lectures, hours = _students(n_samples, rng)
    grade = 25.0 + 3.0 * lectures + 35.0 * (1.0 - np.exp(-hours / 6.0))
    grade = np.clip(grade + rng.normal(0.0, noise, n_samples), 0.0, 100.0)
    df = pd.DataFrame({"lectures": lectures, "hours": hours, "grade": grade})
    return df, TableSpec(target="grade", task="regression", numeric=LECTURE_COLUMNS)


def _points(x: np.ndarray, label: np.ndarray):
    df = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "green": label.astype(np.int64)})
    return df, TableSpec(target="green", task="binary", numeric=POINT_COLUMNS)


def _halves(n_samples: int) -> tuple[int, int]:
    return n_samples // 2, n_samples - n_samples // 2


def make_moons(n_samples: int = 1000, noise: float = 0.15, seed: int = 0):
    """Two interleaving half circles."""
    rng = np.random.default_rng(seed)
    n0, n1 = _halves(n_samples)
    t0, t1 = rng.uniform(0, np.pi, n0), rng.uniform(0, np.pi, n1)
    red = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    green = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    x = np.concatenate([red, green]) + rng.normal(0.0, noise, (n_samples, 2))
    return _points(x, np.r_[np.zeros(n0), np.ones(n1)])


def make_circles(n_samples: int = 1000, noise: float = 0.08, factor: float = 0.5, seed: int = 0):
    """A green disc inside a red ring (``factor`` = inner radius / outer radius)."""
    rng = np.random.default_rng(seed)
    n0, n1 = _halves(n_samples)
    t = rng.uniform(0, 2 * np.pi, n_samples)
    radius = np.r_[np.ones(n0), np.full(n1, factor)]
    x = np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)
    x += rng.normal(0.0, noise, (n_samples, 2))
    return _points(x, np.r_[np.zeros(n0), np.ones(n1)])


def make_spiral(n_samples: int = 1000, noise: float = 0.2, turns: float = 1.5, seed: int = 0):
    """Two interleaved Archimedean spirals, red and green."""
    rng = np.random.default_rng(seed)
    n0, n1 = _halves(n_samples)
    label = np.r_[np.zeros(n0), np.ones(n1)]
    t = np.sqrt(rng.uniform(0.02, 1.0, n_samples)) * turns * 2 * np.pi  # (N,) angle, denser outside
    phase = np.pi * label
    x = np.stack([t * np.cos(t + phase), t * np.sin(t + phase)], axis=1) / (turns * 2 * np.pi)
    x += rng.normal(0.0, noise / (turns * 2 * np.pi), (n_samples, 2))
    return _points(x, label)


def make_xor(n_samples: int = 1000, noise: float = 0.05, seed: int = 0):
    """Green where x1·x2 > 0: the classic problem a single perceptron cannot solve."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, (n_samples, 2))
    label = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    return _points(x + rng.normal(0.0, noise, (n_samples, 2)), label)


def make_synthetic(
    n_samples: int = 10_000, n_features: int = 20, noise: float = 0.1, seed: int = 0
):
    """Gaussian features labelled by a random one-hidden-layer teacher network (binary).

    For benchmarks and scale tests: any size, any width, a learnable nonlinear rule.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, n_features))
    w1 = rng.standard_normal((n_features, 32)) / np.sqrt(n_features)
    w2 = rng.standard_normal(32)
    score = np.tanh(x @ w1) @ w2 + rng.normal(0.0, noise, n_samples)
    columns = tuple(f"f{i}" for i in range(n_features))
    df = pd.DataFrame(x, columns=list(columns))
    df["label"] = (score > np.median(score)).astype(np.int64)
    return df, TableSpec(target="label", task="binary", numeric=columns)
