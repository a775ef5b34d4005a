"""Every member's metrics at once: the numbers ``MLPModule``'s torchmetrics give, as (K,) tensors.

Names and definitions follow ``mlplab.models.module.make_metrics``: binary ``acc`` (P > 0.5),
``auroc`` (the ROC curve's trapezoids over distinct scores, as ``BinaryAUROC``), ``f1``;
multiclass ``acc`` (micro) and ``f1`` (macro over the classes that occur in targets or
predictions); regression ``mse``, ``mae``, ``r2`` in the target's own units. ``loss`` is pooled
as ``MLPModule`` pools batch means: weighted by rows, or by Σ w_y for class-weighted
cross-entropy. Tested against the torchmetrics classes member by member.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mlplab.data.spec import unstandardize
from mlplab.population.stacked import member_losses


def _divide(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den == 0, torch.zeros_like(num), num / torch.where(den == 0, 1, den))


def binary_auroc(p: Tensor, y: Tensor) -> Tensor:
    """(K,) area under each member's ROC curve; p, y: (K, N)."""
    p, order = torch.sort(p, dim=1, descending=True, stable=True)
    y = torch.gather(y, 1, order).to(p.dtype)
    tps, fps = torch.cumsum(y, 1), torch.cumsum(1 - y, 1)
    # Only the last row of a run of tied scores is a point of the curve: give every row its
    # run's last counts, so the rows inside a run add zero-width trapezoids.
    n = p.shape[1]
    end = torch.ones_like(p, dtype=torch.bool)
    end[:, :-1] = p[:, 1:] != p[:, :-1]
    last = torch.where(end, torch.arange(n, device=p.device), n).flip(1).cummin(1).values.flip(1)
    tps, fps = torch.gather(tps, 1, last), torch.gather(fps, 1, last)
    zero = torch.zeros_like(tps[:, :1])
    tpr = _divide(torch.cat([zero, tps], 1), tps[:, -1:])
    fpr = _divide(torch.cat([zero, fps], 1), fps[:, -1:])
    return torch.trapezoid(tpr, fpr, dim=1)


def _f1(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    return _divide(2 * tp, 2 * tp + fp + fn)


def scores(pred: Tensor, target: Tensor, task: str, num_classes: int) -> dict[str, Tensor]:
    """pred: probabilities (K, N) / (K, N, C) or values (K, N); target: labels or values."""
    if task == "binary":
        hit = pred > 0.5
        pos = target == 1
        tp, fp = (hit & pos).sum(1).float(), (hit & ~pos).sum(1).float()
        fn = (~hit & pos).sum(1).float()
        return {
            "acc": (hit == pos).float().mean(1),
            "auroc": binary_auroc(pred, target),
            "f1": _f1(tp, fp, fn),
        }
    if task == "multiclass":
        label = pred.argmax(-1)
        hit = torch.nn.functional.one_hot(label, num_classes).bool()  # (K, N, C)
        true = torch.nn.functional.one_hot(target, num_classes).bool()
        tp, fp = (hit & true).sum(1).float(), (hit & ~true).sum(1).float()
        fn = (~hit & true).sum(1).float()
        seen = ((tp + fp + fn) > 0).float()  # macro F1 leaves out classes nobody has or says
        f1 = _divide((_f1(tp, fp, fn) * seen).sum(1), seen.sum(1))
        return {"acc": (label == target).float().mean(1), "f1": f1}
    error = pred - target
    total = target.sum(1)
    tss = (target * target).sum(1) - total * total / target.shape[1]
    return {
        "mse": (error * error).mean(1),
        "mae": error.abs().mean(1),
        "r2": 1 - (error * error).sum(1) / tss,
    }


class MemberScores:
    """Accumulate an eval split's batches of all members; ``compute`` → {stage/name: (K,)}."""

    def __init__(self, task: str, num_classes: int, class_weights, target_scale) -> None:
        self.task, self.num_classes = task, num_classes
        self.class_weights = class_weights
        mean, std = target_scale  # per member, each from its own training split
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1)
        self.reset()

    def reset(self) -> None:
        self.preds, self.targets, self.loss_sum, self.weight = [], [], 0.0, 0.0

    def predictions(self, out: Tensor) -> Tensor:
        if self.task == "binary":
            return torch.sigmoid(out.squeeze(-1))
        if self.task == "multiclass":
            return torch.softmax(out, dim=-1)
        scale = self.mean.to(out.device), self.std.to(out.device)
        return unstandardize(out.squeeze(-1), *scale)

    def target(self, y: Tensor) -> Tensor:
        if self.task == "binary":
            return y.long()
        if self.task == "regression":
            return unstandardize(y, self.mean.to(y.device), self.std.to(y.device))
        return y

    def update(self, out: Tensor, y: Tensor) -> None:
        """out (K, B, out), y (K, B): one batch of every member's own rows."""
        losses = member_losses(out, y, self.task, self.class_weights).detach()
        weight = torch.full_like(losses, float(y.shape[1]))
        if self.task == "multiclass" and self.class_weights is not None:
            weight = self.class_weights.to(y.device)[y].sum(dim=1)  # Σ w_y: how CE pools
        self.loss_sum = self.loss_sum + losses * weight
        self.weight = self.weight + weight
        self.preds.append(self.predictions(out.detach()))
        self.targets.append(self.target(y))

    def compute(self, stage: str) -> dict[str, Tensor]:
        pred, target = torch.cat(self.preds, 1), torch.cat(self.targets, 1)
        out = {"loss": self.loss_sum / self.weight}
        out |= scores(pred, target, self.task, self.num_classes)
        return {f"{stage}/{name}": value for name, value in out.items()}


class TrainScores:
    """The train loss and metric ``MLPModule`` keeps (acc, or mse in target units), per
    member: an epoch's mini-batches pooled by rows."""

    def __init__(self, scorer: MemberScores) -> None:
        self.scorer = scorer
        self.name = "train/mse" if scorer.task == "regression" else "train/acc"
        self.reset()

    def reset(self) -> None:
        self.loss, self.metric, self.rows = 0.0, 0.0, 0

    def update(self, out: Tensor, y: Tensor, losses: Tensor) -> None:
        pred, target = self.scorer.predictions(out.detach()), self.scorer.target(y)
        if self.scorer.task == "binary":
            value = (pred > 0.5) == (target == 1)
        elif self.scorer.task == "multiclass":
            value = pred.argmax(-1) == target
        else:
            value = (pred - target) ** 2
        self.loss = self.loss + losses.detach() * y.shape[1]
        self.metric = self.metric + value.sum(1).float()
        self.rows += y.shape[1]

    def compute(self) -> dict[str, Tensor]:
        rows = max(self.rows, 1)
        return {"train/loss": self.loss / rows, self.name: self.metric / rows}
