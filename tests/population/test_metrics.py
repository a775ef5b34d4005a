"""Tests of ``mlplab.population.metrics``: each member's numbers are the ones ``MLPModule``'s
torchmetrics (``make_metrics``) give on that member alone, and an eval split's loss pooled over
its batches is the loss of the whole split.

    .venv/bin/python -m pytest tests/population/test_metrics.py -q
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mlplab.models.module import make_metrics
from mlplab.population.metrics import MemberScores, binary_auroc, scores

K, N = 3, 40


def _torchmetrics(task: str, pred: torch.Tensor, target: torch.Tensor, classes: int) -> list:
    """Member k's metrics from a fresh ``make_metrics`` collection, names without the stage."""
    out = []
    for k in range(K):
        values = make_metrics(task, classes, "val")(pred[k], target[k])
        out.append({name.removeprefix("val/"): v.item() for name, v in values.items()})
    return out


def test_binary_auroc_of_tied_scores_is_torchmetrics():
    """Tied probabilities (a saturated sigmoid, a coarse model) are one point of the ROC curve,
    as in torchmetrics' BinaryAUROC: not a staircase in whatever order the sort left them."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randint(0, 5, (K, N), generator=gen).float() / 4  # 5 distinct values: many ties
    y = torch.randint(0, 2, (K, N), generator=gen)
    ours = binary_auroc(p, y)
    for k, theirs in enumerate(_torchmetrics("binary", p, y, 1)):
        assert ours[k].item() == pytest.approx(theirs["auroc"], abs=1e-6), f"member {k}"


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_scores_are_make_metrics_member_by_member(task):
    gen = torch.Generator().manual_seed(1)
    classes = 3 if task == "multiclass" else 1
    if task == "binary":
        pred = torch.rand(K, N, generator=gen)
        target = torch.randint(0, 2, (K, N), generator=gen)
    elif task == "multiclass":
        pred = torch.softmax(torch.randn(K, N, classes, generator=gen), dim=-1)
        target = torch.randint(0, classes, (K, N), generator=gen)
    else:
        target = torch.randn(K, N, generator=gen) * 3 + 10
        pred = target + torch.randn(K, N, generator=gen)
    ours = scores(pred, target, task, classes)
    for k, theirs in enumerate(_torchmetrics(task, pred, target, classes)):
        assert {name: v[k].item() for name, v in ours.items()} == pytest.approx(theirs, abs=1e-5)


def test_class_weighted_loss_pools_batches_as_the_whole_split():
    """Class-weighted cross-entropy divides by Σ w_y: batches of different class mixes pool
    by their Σ w_y (as ``MLPModule``'s ``val/loss``), not by their rows."""
    gen = torch.Generator().manual_seed(2)
    weights = torch.tensor([1.0, 4.0, 0.25])
    out = torch.randn(K, 10, 3, generator=gen)  # (K, B, C) logits
    y = torch.randint(0, 3, (K, 10), generator=gen)
    scorer = MemberScores("multiclass", 3, weights, ([0.0] * K, [1.0] * K))
    for i in range(0, 10, 4):  # batches of 4, 4 and 2 rows
        scorer.update(out[:, i : i + 4], y[:, i : i + 4])
    loss = scorer.compute("val")["val/loss"]
    for k in range(K):
        whole = F.cross_entropy(out[k], y[k], weight=weights)
        assert loss[k].item() == pytest.approx(whole.item(), abs=1e-6), f"member {k}"
