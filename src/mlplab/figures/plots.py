"""The lecture's figures as pure functions: each draws one PNG and returns its path.

- ``plot_learning_curves``: train vs val loss per epoch (overfitting, early stopping);
- ``plot_decision_boundary``: ``P(green | x)`` over the plane of two raw features;
- ``plot_loss_curves``: several loss curves on one axis (learning rates, optimizers);
- ``plot_optimizer_race``: the paths of ``mlplab.lecture.race`` on its 2-D surface;
- ``plot_gradient_variance``: ``mlplab.lecture.gradients.gradient_variance``'s result.

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot, no display, no global
backend state), with a fixed size so every PNG is ``FIGSIZE × DPI`` pixels:
``scripts/make_figures.py`` renders them all into ``docs/figures/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from mlplab.errors import ConfigError
from mlplab.lecture.race import RACE_BOX, RACE_START, race_paths, six_hump_camel

FIGSIZE = (8.0, 5.5)  # inches
DPI = 100  # → 800 × 550 pixels
PIXELS = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))  # (width, height)
RED, GREEN = "#d62728", "#2ca02c"  # class 0, class 1: the lecture's colors
CLIP_FACTOR = 10.0  # plot_loss_curves: values above 10× the largest median are clipped


def _figure() -> tuple[Figure, object]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")  # constrained: nothing clipped
    return fig, fig.add_subplot()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": it would change the pixel size
    return path


# ---- learning curves ----------------------------------------------------------------------
def plot_learning_curves(
    epochs: Sequence[int],
    train_loss: Sequence[float],
    val_loss: Sequence[float],
    path: str | Path,
    best_epoch: int | None = None,
    stopped_epoch: int | None = None,
    title: str = "Learning curves",
) -> Path:
    """Train and val loss per epoch; NaN marks an epoch without that measurement.

    Args:
        epochs, train_loss, val_loss: one entry per epoch, same length.
        path: PNG to write.
        best_epoch: the epoch of the best checkpoint (lowest val/loss), marked with a star.
        stopped_epoch: the epoch early stopping ended training, marked with a dashed line.
        title: the figure title.
    """
    epochs = np.asarray(epochs, dtype=float)
    fig, ax = _figure()
    for values, label, color in ((train_loss, "train", "C0"), (val_loss, "val", "C1")):
        values = np.asarray(values, dtype=float)
        keep = np.isfinite(values)
        ax.plot(epochs[keep], values[keep], "-o", ms=3, color=color, label=f"{label}/loss")
    if best_epoch is not None:
        val = np.asarray(val_loss, dtype=float)[epochs == best_epoch]
        if val.size:
            label = f"best checkpoint (epoch {best_epoch})"
            ax.plot(best_epoch, val[0], "*", ms=16, color="C1", mec="k", zorder=5, label=label)
        ax.axvline(best_epoch, color="C1", lw=0.8, alpha=0.5)
    if stopped_epoch is not None:
        label = f"early stopping (epoch {stopped_epoch})"
        ax.axvline(stopped_epoch, color="k", ls="--", lw=1.2, label=label)
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


# ---- decision boundary --------------------------------------------------------------------
def plot_decision_boundary(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    x_raw: np.ndarray,
    y: np.ndarray,
    path: str | Path,
    feature_names: Sequence[str] = ("x1", "x2"),
    title: str = "Decision boundary",
    class_names: Sequence[str] = ("0", "1"),
    resolution: int = 200,
) -> Path:
    """``P(class 1 | x)`` as filled contours over a grid spanning the data, the 0.5 line (the
    decision boundary ``ŷ = 0.5``), and the points: red = class 0, green = class 1.

    Args:
        predict_proba: (M, 2) raw coordinates → (M,) probabilities of class 1.
        x_raw: (N, 2) points in the data's own units.
        y: (N,) labels 0/1.
        path: PNG to write.
        feature_names: axis labels.
        title, class_names: figure title and legend names of classes 0 and 1.
        resolution: grid points per axis.

    Raises:
        ConfigError: ``x_raw`` does not have exactly 2 features.
    """
    x_raw = np.asarray(x_raw, dtype=float)
    if x_raw.ndim != 2 or x_raw.shape[1] != 2:
        n = x_raw.shape[1] if x_raw.ndim == 2 else x_raw.ndim
        raise ConfigError(
            f"a decision boundary needs exactly 2 features (one per axis); got {n} features "
            f"(x_raw of shape {x_raw.shape})"
        )
    y = np.asarray(y).reshape(-1)
    lo, hi = x_raw.min(0), x_raw.max(0)
    pad = 0.08 * np.where(hi > lo, hi - lo, 1.0)
    g1, g2 = (np.linspace(lo[i] - pad[i], hi[i] + pad[i], resolution) for i in range(2))
    xx, yy = np.meshgrid(g1, g2)  # (R, R) each
    proba = np.asarray(predict_proba(np.c_[xx.ravel(), yy.ravel()]), dtype=float)
    proba = proba.reshape(xx.shape)

    fig, ax = _figure()
    cmap = LinearSegmentedColormap.from_list("red_white_green", [RED, "white", GREEN])
    filled = ax.contourf(xx, yy, proba, levels=np.linspace(0, 1, 11), cmap=cmap, alpha=0.35)
    ax.contour(xx, yy, proba, levels=[0.5], colors="k", linewidths=1.5)
    ax.plot([], [], "k-", lw=1.5, label="boundary P = 0.5")  # legend entry for the contour
    for cls, color, name in ((0, RED, class_names[0]), (1, GREEN, class_names[1])):
        pts = x_raw[y == cls]
        label = f"class {cls}" if str(name) == str(cls) else f"{name} (class {cls})"
        ax.scatter(pts[:, 0], pts[:, 1], s=12, c=color, edgecolors="k", linewidths=0.3, label=label)
    fig.colorbar(filled, ax=ax, label="P(class 1)")
    ax.set(xlabel=feature_names[0], ylabel=feature_names[1], title=title)
    ax.legend(loc="upper right", framealpha=0.9)
    return _save(fig, path)


# ---- several loss curves ------------------------------------------------------------------
def plot_loss_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "Loss",
    ylabel: str = "train/loss",
    xlabel: str = "epoch",
) -> Path:
    """One line per curve, x = index (epoch); a diverging run (too large a learning rate)
    must not flatten the others or crash the plot:

    - values above a ceiling (``CLIP_FACTOR`` × the largest per-curve median) are drawn at
      the ceiling with a ``^`` marker;
    - the first NaN/inf ends its curve with an ``x`` at the ceiling ("diverged at epoch k").

    The y axis is logarithmic when the drawn (positive) values span more than 2 decades.
    """
    arrays = {label: np.asarray(v, dtype=float) for label, v in curves.items()}
    ceiling = _ceiling(list(arrays.values()))
    fig, ax = _figure()
    drawn: list[np.ndarray] = []
    for i, (label, values) in enumerate(arrays.items()):
        bad = ~np.isfinite(values)
        end = int(np.argmax(bad)) if bad.any() else len(values)  # NaN weights stay NaN
        x, v = np.arange(end), values[:end]
        high = v > ceiling
        v = np.minimum(v, ceiling)
        notes = [f"> {ceiling:.3g} clipped"] * bool(high.any())
        notes += [f"diverged at {xlabel} {end}"] * bool(bad.any())
        text = f"{label} ({'; '.join(notes)})" if notes else label
        ax.plot(x, v, "-", lw=1.6, color=f"C{i}", label=text)
        ax.plot(x[high], v[high], "^", ms=8, color=f"C{i}", mec="k")
        if bad.any():
            ax.plot(end, ceiling, "x", ms=10, mew=2.5, color=f"C{i}")
        drawn.append(v)
    positive = np.concatenate([*drawn, [np.nan]])
    positive = positive[positive > 0]
    log = positive.size > 0 and positive.max() / positive.min() > 100
    if log:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both" if log else "major")
    if arrays:
        ax.legend(fontsize="small")
    return _save(fig, path)


def _ceiling(arrays: list[np.ndarray]) -> float:
    """The largest finite value, but at most ``CLIP_FACTOR`` × the largest per-curve median:
    one exploding step (1e26) must not squash the curves that behave."""
    finite = [a[np.isfinite(a)] for a in arrays]
    finite = [a for a in finite if a.size]
    if not finite:
        return 1.0
    largest = max(float(a.max()) for a in finite)
    typical = max(abs(float(np.median(a))) for a in finite)
    return min(largest, CLIP_FACTOR * typical) if typical > 0 else largest


# ---- optimizer race on a 2-D surface ------------------------------------------------------
def plot_optimizer_race(
    path: str | Path, steps: int = 150, start: tuple[float, float] = RACE_START
) -> Path:
    """Contours of ``six_hump_camel`` and the parameter path of every optimizer in
    ``RACE_OPTIMIZERS``, all starting from ``start``; the legend gives each final loss."""
    paths = race_paths(steps, start)
    (x0, x1), (y0, y1) = RACE_BOX
    xx, yy = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 200))
    zz = six_hump_camel(torch.from_numpy(np.stack([xx, yy], -1))).numpy()
    fig, ax = _figure()
    levels = np.r_[np.linspace(-1.0, 2.5, 15), np.linspace(3, 8, 6)]
    ax.contourf(xx, yy, zz, levels=levels, cmap="Greys_r", alpha=0.45, extend="both")
    ax.contour(xx, yy, zz, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    for i, (label, p) in enumerate(paths.items()):
        final = float(six_hump_camel(torch.from_numpy(p[-1])))
        label = f"{label}\nfinal f = {final:.2f}"
        ax.plot(p[:, 0], p[:, 1], "-", lw=1.6, color=f"C{i}", label=label)
        ax.plot(*p[-1], "o", ms=6, color=f"C{i}", mec="k")
    ax.plot(*start, "k^", ms=9, label="start")
    title = f"Optimizers on the six-hump camel surface, {steps} steps"
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="w1", ylabel="w2", title=title)
    fig.legend(fontsize="small", loc="outside right upper")  # keeps the minima visible
    return _save(fig, path)


# ---- gradient noise vs batch size ---------------------------------------------------------
def plot_gradient_variance(
    result: Mapping[int | str, float],
    path: str | Path,
    n_rows: int | None = None,
    title: str = "Mini-batch gradient noise vs batch size",
) -> Path:
    """Log-log plot of ``gradient_variance``'s result. With ``n_rows`` (N), the expected curve
    ``v(1)/b · (N − b)/(N − 1)`` anchored at the measured ``b = 1`` point; without it, ``1/b``.
    The full batch (variance 0) can't sit on a log axis: it is stated in the legend."""
    sizes = sorted(b for b in result if b != "full")
    values = np.array([result[b] for b in sizes], dtype=float)
    fig, ax = _figure()
    ax.loglog(sizes, values, "o-", color="C0", lw=1.8, ms=7, label="measured (mean of draws)")
    if sizes and values[0] > 0:
        b = np.geomspace(sizes[0], sizes[-1], 100)
        anchor = values[0] * sizes[0]
        if n_rows:
            ref, text = anchor / b * (n_rows - b) / (n_rows - 1), "s²/b · (N − b)/(N − 1)"
        else:
            ref, text = anchor / b, "∝ 1/b"
        ax.loglog(b, ref, "--", color="k", lw=1, label=f"expected {text}")
    if "full" in result:
        n_text = f"b = N = {n_rows}" if n_rows else "full batch"
        ax.plot([], [], " ", label=f"{n_text}: {result['full']:.3g} (exact gradient)")
    ax.set(xlabel="batch size b", ylabel="E‖∇J_B − ∇J‖²", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)
