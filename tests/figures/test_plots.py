"""Figures: every plot function on tiny data, and the figure callbacks in real training runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

import mlplab.run.build as train_module
from mlplab.data import TabularDataModule
from mlplab.errors import ConfigError
from mlplab.figures.callbacks import DecisionBoundary, LearningCurves, describe_model, log_image
from mlplab.figures.plots import (
    PIXELS,
    _ceiling,
    plot_decision_boundary,
    plot_gradient_variance,
    plot_learning_curves,
    plot_loss_curves,
    plot_optimizer_race,
)
from mlplab.lecture.gradients import gradient_variance
from mlplab.lecture.race import race_paths, six_hump_camel
from mlplab.models import MLPModule
from mlplab.train import train


def assert_png(path: Path) -> None:
    """A PNG of the fixed figure size: (height, width, RGBA)."""
    assert path.is_file() and path.stat().st_size > 1000
    width, height = PIXELS
    assert mpimg.imread(path).shape == (height, width, 4)


def csv_losses(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


# ---- plot functions -----------------------------------------------------------------------
def test_learning_curves_png(tmp_path):
    nan = math.nan
    path = plot_learning_curves(
        [0, 1, 2, 3], [1.0, 0.7, 0.5, nan], [1.1, 0.8, 0.9, 1.0], tmp_path / "lc.png", 1, 3
    )
    assert path == tmp_path / "lc.png"
    assert_png(path)


def test_decision_boundary_png(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2)) * [10.0, 0.1]  # raw units of very different scales
    y = (x[:, 0] > 0).astype(int)
    seen = []

    def predict_proba(points):
        seen.append(points)
        return 1 / (1 + np.exp(-points[:, 0]))

    path = plot_decision_boundary(predict_proba, x, y, tmp_path / "db.png", ["hours", "score"])
    assert_png(path)
    grid = seen[0]  # the grid spans the data (plus a margin), in the data's units
    assert grid.shape[1] == 2 and grid[:, 0].min() < x[:, 0].min() < 0 < x[:, 0].max()
    assert 0 < grid[:, 1].max() < 1.0  # each axis spans its own feature, not a fixed box


def test_decision_boundary_refuses_three_features(tmp_path):
    with pytest.raises(ConfigError, match=r"needs exactly 2 features.*got 3 features"):
        plot_decision_boundary(lambda p: p[:, 0], np.zeros((5, 3)), np.zeros(5), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_loss_curves_survive_nan_inf_and_explosions(tmp_path):
    curves = {
        "stable": [0.7, 0.4, 0.2, 0.1],
        "nan": [0.7, 2.0, math.nan, math.nan],
        "explodes": [8e26, 2.0, 2.5, math.inf],
        "empty": [],
    }
    assert_png(plot_loss_curves(curves, tmp_path / "loss.png", "lr", "train/loss"))
    assert_png(plot_loss_curves({"all nan": [math.nan] * 3}, tmp_path / "nan.png"))
    # One exploding step is clipped at 10× the largest median, not drawn at 1e26.
    assert _ceiling([np.array([8e26, 2.0, 2.5, math.inf]), np.array([0.7, 0.4])]) == 25.0
    assert _ceiling([np.array([0.7, 0.4])]) == 0.7  # nothing to clip: the largest value


def test_optimizer_race(tmp_path):
    assert_png(plot_optimizer_race(tmp_path / "race.png", steps=5))
    paths = race_paths(steps=150)
    assert len(paths) == 7 and all(p.shape == (151, 2) for p in paths.values())
    assert all(np.isfinite(p).all() for p in paths.values())
    final = {
        k.split(" (")[0]: float(six_hump_camel(torch.from_numpy(p[-1]))) for k, p in paths.items()
    }
    # The documented story: plain SGD settles in the poor local minimum (f ≈ 2.10),
    # momentum rolls over the ridge into the global one (f ≈ −1.03).
    assert final["SGD"] == pytest.approx(2.1043, abs=1e-3)
    assert final["SGD + momentum 0.9"] == pytest.approx(-1.0316, abs=1e-3)
    assert all(f < 2.2 for f in final.values())  # every optimizer made progress (start: 4.0)


@pytest.fixture(scope="module")
def pass_fail():
    dm = TabularDataModule("pass_fail", {"n_samples": 400, "seed": 0})
    dm.setup("fit")
    torch.manual_seed(0)
    model = MLPModule(dm.in_features, dm.out_features, dm.task, hidden_sizes=[8], dropout=0.2)
    return dm.tensors["train"], model


def test_gradient_variance_falls_with_batch_size(pass_fail, tmp_path):
    (x, y), model = pass_fail
    model.train()
    result = gradient_variance(x, y, model, batch_sizes=(1, 8, 32, 128, "full"), draws=32)
    assert list(result) == [1, 8, 32, 128, "full"]
    sizes = [1, 8, 32, 128]
    assert all(result[a] > result[b] > 0 for a, b in zip(sizes, sizes[1:], strict=False))
    assert result["full"] == 0.0  # the full batch is the exact gradient
    assert result[1] / result[32] > 10  # ~1/b: 32× fewer rows, ~30× more noise
    assert model.training  # put back in its previous mode
    assert_png(plot_gradient_variance(result, tmp_path / "gv.png", n_rows=len(x)))
    with pytest.raises(ConfigError, match="batch size 10000"):
        gradient_variance(x, y, model, batch_sizes=(10000,))


# ---- callbacks in real runs ---------------------------------------------------------------
@pytest.fixture
def callbacks_of_train(monkeypatch):
    """The callback objects ``train()`` builds, for assertions after the run."""
    built: list = []
    original = train_module.build_callbacks

    def spy(cfg, model=None):
        built.extend(original(cfg, model))
        return built

    monkeypatch.setattr(train_module, "build_callbacks", spy)
    return lambda cls: next(c for c in built if isinstance(c, cls))


def test_learning_curves_callback_matches_the_logged_losses(make_cfg, callbacks_of_train):
    cfg = make_cfg("trainer.max_epochs=4")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    curves = callbacks_of_train(LearningCurves)
    assert curves.epochs == [0, 1, 2, 3]
    # Hook order: each epoch's own losses, the same numbers the CSV logger wrote.
    assert curves.train_loss == pytest.approx(csv_losses(run_dir, "train/loss"))
    assert curves.val_loss == pytest.approx(csv_losses(run_dir, "val/loss"))
    assert curves.best_epoch == int(np.argmin(curves.val_loss))
    assert curves.stopped_epoch is None
    assert curves.path == run_dir / "learning_curves.png"
    assert_png(curves.path)


def test_learning_curves_mark_early_stopping(make_cfg, callbacks_of_train):
    cfg = make_cfg("experiment=overfit_regularized", "callbacks.early_stopping.patience=2")
    train(cfg)
    curves = callbacks_of_train(LearningCurves)
    assert curves.stopped_epoch is not None and curves.stopped_epoch < 299
    # EarlyStopping and ModelCheckpoint agree on the best epoch: stop = best + patience.
    assert curves.stopped_epoch == curves.best_epoch + 2 == curves.epochs[-1]
    assert_png(Path(cfg.paths.output_dir) / "learning_curves.png")


def test_decision_boundary_on_two_features(make_cfg, callbacks_of_train):
    cfg = make_cfg("data=moons", "data.options.n_samples=200", "trainer.max_epochs=2")
    train(cfg)
    assert callbacks_of_train(DecisionBoundary).path == Path(cfg.paths.output_dir) / (
        "decision_boundary.png"
    )
    assert_png(Path(cfg.paths.output_dir) / "decision_boundary.png")


def test_decision_boundary_skips_other_data(make_cfg, callbacks_of_train):
    cfg = make_cfg("data=breast_cancer", "trainer.max_epochs=1")
    train(cfg)
    assert callbacks_of_train(DecisionBoundary).path is None
    run_dir = Path(cfg.paths.output_dir)
    assert not (run_dir / "decision_boundary.png").exists()
    assert (run_dir / "learning_curves.png").is_file()  # the other figure still comes


def test_images_go_to_wandb_loggers_only(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    wandb = WandbLogger(save_dir=str(tmp_path), offline=True)  # no run starts until used
    logged = []
    monkeypatch.setattr(wandb, "log_image", lambda **kw: logged.append(kw))
    trainer = SimpleNamespace(loggers=[CSVLogger(str(tmp_path)), wandb])
    log_image(trainer, "learning_curves", tmp_path / "lc.png")
    assert logged == [{"key": "learning_curves", "images": [str(tmp_path / "lc.png")]}]


def test_figure_titles_say_what_was_trained():
    adam = {"_target_": "torch.optim.Adam", "lr": 0.01, "weight_decay": 1e-3}
    model = MLPModule(2, 1, "binary", hidden_sizes=[8], dropout=0.2, optimizer=adam)
    assert describe_model(model) == "hidden [8], relu activation, dropout 0.2, weight decay 0.001"
    assert describe_model(MLPModule(2, 1, "binary")) == "hidden [], relu activation"


@pytest.mark.slow
def test_make_figures_reproduces_the_committed_figures(tmp_path):
    """`make figures` leaves the git tree clean: every PNG comes out byte for byte the same."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    script = root / "scripts" / "make_figures.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    committed = sorted((root / "docs" / "figures").glob("*.png"))
    assert len(committed) == 11
    for path in committed:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
