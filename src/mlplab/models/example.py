"""Bring your own model: a LightningModule written the way Lightning's docs write one.

Automatic optimization, ``training_step`` returning the loss, its own optimizer. Train it with
the template's data, callbacks, loggers, sweeps and eval/predict CLIs: ``model=example``. It is
given only the constructor arguments it accepts (here the sizes and task the data knows).
The README's "Bring your own model" section shows this file; a test trains, evaluates and
predicts with it.
"""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class LitMLP(L.LightningModule):
    def __init__(self, in_features: int, out_features: int, task: str, hidden: int = 32, lr=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features)
        )

    def forward(self, x):
        return self.net(x)

    def _loss(self, batch, stage: str):
        x, y = batch
        out = self(x)
        if self.hparams.task == "multiclass":
            loss = F.cross_entropy(out, y)
        elif self.hparams.task == "binary":
            loss = F.binary_cross_entropy_with_logits(out.squeeze(-1), y)
        else:  # regression: the DataModule standardizes the target
            loss = F.mse_loss(out.squeeze(-1), y)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._loss(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._loss(batch, "val")

    def test_step(self, batch, batch_idx):
        self._loss(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
