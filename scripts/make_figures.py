"""Render the lecture's figures into ``docs/figures/`` (``make figures``), on CPU, in ~1 minute.

Each figure comes from real training runs (``train(cfg)`` in-process, each in a temporary run
dir with ``logger=csv``) or from ``mlplab.figures.plots`` directly:

- decision boundaries: ``experiment=nonlinear_identity`` vs ``nonlinear_relu``
  (the ``DecisionBoundary`` callback's PNGs, side by side);
- learning curves: ``experiment=overfit`` vs ``overfit_regularized`` (``LearningCurves``);
- learning rates: ``experiment=lr_small / lr_stable / lr_large``, train/loss per epoch;
- the optimizer race on a 2-D non-convex surface (six-hump camel);
- optimizers on a real task: ``experiment=optimizers optimizer=sgd,...,rmsprop``;
- gradient noise vs batch size, on breast_cancer with a freshly initialized MLP;
- ``mlplab-runs --group-by optimizer.lr --plot val/loss`` of the README's lr × seed grid.

    python scripts/make_figures.py [--out docs/figures] [--optimizer-epochs 50]
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from matplotlib import image as mpimg
from omegaconf import DictConfig

from mlplab import runs
from mlplab.config import QUIET, compose_run
from mlplab.figures.plots import (
    plot_gradient_variance,
    plot_loss_curves,
    plot_optimizer_race,
)
from mlplab.lecture.gradients import gradient_variance
from mlplab.run.build import build_model
from mlplab.run.console import silence_known_noise
from mlplab.train import main as train_main
from mlplab.train import train

ROOT = Path(__file__).resolve().parents[1]
# The fit only; one thread and the CPU (QUIET): the same sums, the same PNG bytes on any
# machine, so `make figures` leaves the committed figures as they are.
EXTRA = ["test=false", "threads=1", "print_config=false"]
NO_FIGURES = ("callbacks.learning_curves=null", "callbacks.decision_boundary=null")  # csv only
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adadelta", "adagrad", "rmsprop")
LEARNING_RATES = {"lr_small": "lr = 1e-4", "lr_stable": "lr = 0.1", "lr_large": "lr = 20"}


def compose_cfg(output_dir: Path, *overrides: str) -> DictConfig:
    return compose_run(output_dir, *EXTRA, *overrides)


def run(runs_dir: Path, name: str, *overrides: str) -> Path:
    """Train one config into ``runs_dir/name``; returns that run dir."""
    run_dir = runs_dir / name
    train(compose_cfg(run_dir, *overrides))
    return run_dir


def train_losses(run_dir: Path, key: str = "train/loss") -> list[float]:
    """``key`` per epoch from the run's ``csv/metrics.csv`` (NaN stays NaN: it diverged)."""
    by_epoch: dict[int, float] = {}
    with open(run_dir / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get(key):
                by_epoch[int(row["epoch"])] = float(row[key])
    return [by_epoch.get(e, math.nan) for e in range(max(by_epoch, default=-1) + 1)]


def side_by_side(paths: list[Path], out: Path) -> Path:
    """Same-size PNGs next to each other, pixel for pixel (no resampling)."""
    mpimg.imsave(out, np.hstack([mpimg.imread(p) for p in paths]))
    return out


class Figures:
    """Writes figures into ``out`` and remembers what it wrote."""

    def __init__(self, out: Path, runs_dir: Path) -> None:
        self.out, self.runs = out, runs_dir
        self.written: list[Path] = []

    def keep(self, path: Path) -> Path:
        self.written.append(path)
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        return path

    def copy(self, run_dir: Path, filename: str, name: str) -> Path:
        return self.keep(Path(shutil.copyfile(run_dir / filename, self.out / name)))

    def decision_boundaries(self) -> None:
        parts = []
        for act in ("identity", "relu"):
            run_dir = run(self.runs, f"nonlinear_{act}", f"experiment=nonlinear_{act}")
            parts.append(
                self.copy(run_dir, "decision_boundary.png", f"decision_boundary_{act}.png")
            )
        self.keep(side_by_side(parts, self.out / "decision_boundary_identity_vs_relu.png"))

    def overfitting(self) -> None:
        parts = []
        for exp in ("overfit", "overfit_regularized"):
            run_dir = run(self.runs, exp, f"experiment={exp}")
            parts.append(self.copy(run_dir, "learning_curves.png", f"learning_curves_{exp}.png"))
        self.keep(side_by_side(parts, self.out / "learning_curves_overfit_vs_regularized.png"))

    def learning_rates(self) -> None:
        curves = {}
        for exp, label in LEARNING_RATES.items():
            run_dir = run(self.runs, exp, f"experiment={exp}", *NO_FIGURES)
            curves[f"SGD, {label}"] = train_losses(run_dir)
        title = "Learning rate: too small, stable, too large (SGD on the moons)"
        self.keep(plot_loss_curves(curves, self.out / "learning_rates.png", title, "train/loss"))

    def runs_grid(self) -> None:
        """The README's lr × seed grid, run as ``mlplab-train -m`` runs it (a multirun dir of
        finished jobs), drawn as ``mlplab-runs --group-by optimizer.lr --plot val/loss``."""
        argv, run_id = sys.argv, os.environ.pop("MLPLAB_RUN_ID", None)  # a run names itself
        sys.argv = ["mlplab-train"]  # Hydra reads the program name from it
        try:
            train_main(
                ["-m", "data=moons", "optimizer.lr=0.1,0.01,0.001", "seed=1,2,3"]
                + ["trainer.max_epochs=10", "run_name=grid", f"paths.log_dir={self.runs}"]
                + [*QUIET, *EXTRA, "logger=csv", "callbacks=none"]
            )
        finally:
            sys.argv = argv
            if run_id is not None:
                os.environ["MLPLAB_RUN_ID"] = run_id
        found, _ = runs.load([str(self.runs / "train" / "multirun" / "grid")])
        by = ["optimizer.lr"]
        self.keep(runs.plot(found, "val/loss", self.out / "runs_val_loss.png", by, {}))

    def optimizer_race(self) -> None:
        self.keep(plot_optimizer_race(self.out / "optimizer_race.png"))

    def optimizers(self, epochs: int) -> None:
        curves = {}
        for opt in OPTIMIZERS:
            overrides = (
                "experiment=optimizers",
                f"optimizer={opt}",
                f"trainer.max_epochs={epochs}",
            )
            run_dir = run(self.runs, f"optimizer_{opt}", *overrides, *NO_FIGURES)
            cfg = compose_cfg(run_dir, *overrides)
            curves[f"{opt} (lr {cfg.optimizer.lr:g})"] = train_losses(run_dir)
        title = f"Optimizers on the spiral (experiment=optimizers, {epochs} epochs)"
        self.keep(plot_loss_curves(curves, self.out / "optimizers_spiral.png", title, "train/loss"))

    def gradient_noise(self) -> None:
        cfg = compose_cfg(self.runs / "gradient_noise", "data=breast_cancer")
        L.seed_everything(cfg.seed, verbose=False)
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        model = build_model(cfg, datamodule)  # freshly initialized: where training starts
        x, y = datamodule.tensors["train"]
        sizes = (1, 2, 4, 8, 16, 32, 64, 128, "full")
        result = gradient_variance(x, y, model, batch_sizes=sizes, draws=256)
        hidden = list(cfg.model.hidden_sizes)
        title = f"Mini-batch gradient noise (breast_cancer, fresh MLP {hidden}, 256 draws)"
        path = self.out / "gradient_variance.png"
        self.keep(plot_gradient_variance(result, path, n_rows=len(x), title=title))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--optimizer-epochs", type=int, default=50)
    args = parser.parse_args()
    silence_known_noise()
    torch.set_num_threads(1)  # gradient_noise runs outside train(): the same reductions there
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: ..." etc.
        logging.getLogger(name).setLevel(logging.WARNING)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlplab-figures-") as tmp:
        figures = Figures(args.out.resolve(), Path(tmp))
        figures.decision_boundaries()
        figures.overfitting()
        figures.learning_rates()
        figures.optimizer_race()
        figures.runs_grid()
        figures.optimizers(args.optimizer_epochs)
        figures.gradient_noise()
    print(f"{len(figures.written)} figures in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
