"""A population's learning curves: train and val loss per epoch of every member in one PNG.

``plot_population_curves(history, path, ended=...)`` draws ``history`` (one row per epoch
and member: ``epoch``, ``member``, ``train/loss``, ``val/loss``, what ``PopulationModule``
records) as two panels, one line per member. Up to ``LEGEND_MEMBERS`` members get a legend
entry each; more get a colour scale by member (a colour bar). A member that ended early is
visible as a line that ends: a marker at its last epoch says why (diverged ×, early-stopped ■,
pruned ▼). Values far above the typical loss are clipped as ``plot_loss_curves`` clips them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from mlplab.figures.plots import DPI, FIGSIZE, _ceiling, _save

LEGEND_MEMBERS = 10  # more members: a colour bar instead of a legend entry each
ENDS = {"diverged": ("X", "diverged"), "stopped": ("s", "early-stopped"), "pruned": ("v", "pruned")}


def plot_population_curves(
    history: pd.DataFrame,
    path: str | Path,
    ended: Mapping[int, tuple[str, int | None]] | None = None,
    names: Mapping[int, str] | None = None,
    title: str = "Learning curves",
) -> Path:
    """Train and val loss per epoch, one line per member (NaN: no value that epoch).

    Args:
        history: rows with ``epoch``, ``member`` and the ``train/loss`` / ``val/loss`` columns.
        path: PNG to write.
        ended: member → (status, stopped epoch) of the members that ended early: ``diverged``,
            ``stopped`` or ``pruned`` (others are ignored). A member without a row (diverged in
            its first epoch) is drawn as its marker alone.
        names: member → legend label (default ``member <k>``); members are those of
            ``history``, ``ended`` and ``names``.
        title: the figure title.
    """
    ended, names = ended or {}, names or {}
    members = sorted({int(m) for m in history.get("member", [])} | set(ended) | set(names))
    many = len(members) > LEGEND_MEMBERS
    # A fixed layout: constrained layout measured every tick label and cost as much as the
    # drawing. The margins fit one-line axis labels, a wrapped title and the colour bar.
    lines = textwrap.wrap(title, 90)
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    top = 0.89 - 0.035 * (len(lines) - 1)
    fig.subplots_adjust(left=0.08, right=0.89 if many else 0.98, bottom=0.1, top=top)
    axes = fig.subplots(1, 2, sharex=True)
    cmap = colormaps["viridis"]
    norm = Normalize(min(members, default=0), max(max(members, default=1), 1))
    rows = dict(tuple(history.sort_values("epoch").groupby("member"))) if len(history) else {}
    for ax, key in zip(axes, ("train/loss", "val/loss"), strict=True):
        curves = {}
        for m in members:
            got = rows.get(m)
            if got is None or key not in got:
                curves[m] = (np.array([]), np.array([]))
            else:
                curves[m] = (got["epoch"].to_numpy(float), got[key].to_numpy(float))
        ceiling = _ceiling([v for _, v in curves.values()])
        for m, (epochs, values) in curves.items():
            keep = np.isfinite(values)
            color = cmap(norm(m)) if many else f"C{members.index(m) % 10}"
            label = None if many else names.get(m, f"member {m}")
            ax.plot(epochs[keep], np.minimum(values[keep], ceiling), "-", color=color, label=label)
            status, epoch = ended.get(m, ("ok", None))
            if status not in ENDS:
                continue
            # where it ended: its last value, or the clip line for a NaN or a member without one
            x = epochs[-1] if len(epochs) else (epoch or 0)
            y = values[-1] if len(values) and np.isfinite(values[-1]) else ceiling
            ax.plot(x, min(y, ceiling), ENDS[status][0], ms=8, color=color, mec="k")
        ax.set(xlabel="epoch", title=key)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss")
    used = {status for status, _ in ended.values()}
    for status, (marker, what) in ENDS.items():  # legend entries for the end markers in use
        if status in used:
            axes[1].plot([], [], marker, ms=8, color="grey", mec="k", label=what)
    if many:
        cax = fig.add_axes((0.91, 0.1, 0.015, top - 0.1))
        bar = fig.colorbar(ScalarMappable(norm, cmap), cax=cax)
        bar.set_label("member")
        bar.ax.yaxis.get_major_locator().set_params(integer=True)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize="small")
    fig.suptitle("\n".join(lines))
    return _save(fig, path)
