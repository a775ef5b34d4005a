"""The lecture's optimizer race: every optimizer of the lecture from one start on a non-convex
2-D surface, ``W ← W − η ∂f/∂W`` with each optimizer's own η and memory. ``plot_optimizer_race``
(``mlplab.figures.plots``) draws it; ``scripts/make_figures.py`` renders it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def six_hump_camel(p: torch.Tensor) -> torch.Tensor:
    """``f(x, y) = (4 − 2.1x² + x⁴/3)·x² + x·y + (−4 + 4y²)·y²`` over ``p[..., 0:2]``.

    A standard non-convex test surface: two global minima ``f = −1.0316`` at
    ``±(0.0898, −0.7126)``, four local minima (``f = −0.2155`` at ``±(1.7036, −0.7961)``,
    ``f = 2.1043`` at ``±(1.6071, 0.5687)``) and a saddle point at the origin.
    """
    x, y = p[..., 0], p[..., 1]
    return (4 - 2.1 * x**2 + x**4 / 3) * x**2 + x * y + (-4 + 4 * y**2) * y**2


# Each optimizer's lr is picked so that it makes visible progress within ~150 steps from
# RACE_START without blowing up on the surface's steep walls (|∇f| ≈ 13 at the start).
# Adadelta steps by RMS[Δw]/RMS[g]·g and RMS[Δw] starts near sqrt(eps) = 1e-3: at lr=1 its
# first steps are ~1e-3, so it gets lr=10 to get anywhere in 150 steps.
RACE_OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
    "SGD (lr 0.01)": (torch.optim.SGD, {"lr": 0.01}),
    "SGD + momentum 0.9 (lr 0.01)": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}),
    "SGD + Nesterov 0.9 (lr 0.01)": (
        torch.optim.SGD,
        {"lr": 0.01, "momentum": 0.9, "nesterov": True},
    ),
    "Adam (lr 0.05)": (torch.optim.Adam, {"lr": 0.05}),
    "Adadelta (lr 10)": (torch.optim.Adadelta, {"lr": 10.0}),
    "Adagrad (lr 0.3)": (torch.optim.Adagrad, {"lr": 0.3}),
    "RMSprop (lr 0.01)": (torch.optim.RMSprop, {"lr": 0.01}),
}
# On the slope above the poor local minimum (1.61, 0.57): plain gradient steps settle there,
# momentum carries over the ridge into a better basin.
RACE_START = (2.0, 0.25)
RACE_BOX = ((-2.2, 2.2), (-1.2, 1.2))


def race_paths(
    steps: int = 150,
    start: tuple[float, float] = RACE_START,
    surface: Callable[[torch.Tensor], torch.Tensor] = six_hump_camel,
) -> dict[str, np.ndarray]:
    """Each optimizer of ``RACE_OPTIMIZERS`` from ``start``: label → (steps + 1, 2) path."""
    paths = {}
    for label, (cls, kwargs) in RACE_OPTIMIZERS.items():
        p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        opt = cls([p], **kwargs)
        path = [p.detach().clone()]
        for _ in range(steps):  # W ← W − η ∂f/∂W, with each optimizer's own η and memory
            opt.zero_grad()
            surface(p).backward()
            opt.step()
            path.append(p.detach().clone())
        paths[label] = torch.stack(path).numpy()
    return paths
