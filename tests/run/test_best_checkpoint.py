"""``train(cfg)`` tests the best checkpoint, not the weights it ended with.

A run can only tell the two apart when its best epoch is not its last, so the run here is
chosen to overfit (a wide net, a large step on noisy moons) and the test asserts that
precondition before anything else. The expected test metrics are computed by hand from the
checkpoint's weights on the test split.

    .venv/bin/python -m pytest tests/run/test_best_checkpoint.py -q
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from mlplab.models import MLPModule
from mlplab.train import train


class SaveFinalWeights(L.Callback):
    """Writes ``final.pt`` into the run dir at the end of fit: the in-memory weights the run
    ended with and the val/loss of every epoch (added to a run with ``+callbacks.final=...``)."""

    def __init__(self) -> None:
        self.val_loss: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_loss.append(float(trainer.callback_metrics["val/loss"]))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        path = Path(trainer.default_root_dir) / "final.pt"
        torch.save({"state_dict": state, "val_loss": self.val_loss}, path)


OVERFIT = [
    "data=moons",
    "data.options.n_samples=200",
    "data.options.noise=0.35",
    "data.batch_size=8",
    "model.hidden_sizes=[64,64]",
    "optimizer.lr=0.1",
    "trainer.max_epochs=5",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
    f"+callbacks.final._target_={__name__}.SaveFinalWeights",
]


def _test_metrics(module: MLPModule, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """test/loss (BCE on logits) and test/acc of ``module`` on the whole test split."""
    with torch.no_grad():
        z = module.eval()(x).squeeze(-1)
    loss = F.binary_cross_entropy_with_logits(z, y).item()
    return {"test/loss": loss, "test/acc": ((z > 0).float() == y).float().mean().item()}


def test_test_metrics_are_the_best_checkpoints_not_the_last_weights(make_cfg):
    cfg = make_cfg(*OVERFIT)
    metrics = train(cfg)
    run_dir = Path(cfg.paths.output_dir)

    final = torch.load(run_dir / "final.pt", weights_only=True)
    val = final["val_loss"]
    best_epoch = int(np.argmin(val))
    # Precondition: without it this test can't tell the best checkpoint from the last weights.
    assert len(val) == 5 and best_epoch < len(val) - 1, f"best epoch is the last: {val}"
    assert val[-1] > val[best_epoch] + 0.01

    best_path = run_dir / "checkpoints" / "best.ckpt"
    assert torch.load(best_path, weights_only=True)["epoch"] == best_epoch
    best = MLPModule.load_from_checkpoint(best_path, weights_only=True)
    last = MLPModule.load_from_checkpoint(best_path, weights_only=True)
    last.load_state_dict(final["state_dict"])

    dm = instantiate(cfg.data)  # the same seeded split and train-fitted preprocessing
    dm.setup()
    x, y = dm.tensors["test"]
    want, other = _test_metrics(best, x, y), _test_metrics(last, x, y)
    assert abs(want["test/loss"] - other["test/loss"]) > 0.01  # the two really differ
    assert metrics["test/loss"] == pytest.approx(want["test/loss"], rel=1e-5)
    assert metrics["test/acc"] == pytest.approx(want["test/acc"], abs=1e-6)
    assert metrics["test/loss"] != pytest.approx(other["test/loss"], rel=1e-3)
    # …while val/loss, logged during fit, is the last epoch's.
    assert metrics["val/loss"] == pytest.approx(val[-1], rel=1e-6)
