"""Model output → predictions a user reads, for any LightningModule.

``MLPModule`` has a ``predictions`` method; a module brought by the user may not. Then the
task decides, as the template's own losses define the outputs: binary → ``sigmoid`` of one
logit (P(class 1)), multiclass → ``softmax`` over the class logits, regression → the value
the model was trained on (standardized targets) back in the target's own units.
"""

from __future__ import annotations

import lightning as L
import torch


def predictions(module: L.LightningModule, out: torch.Tensor, preprocessor) -> torch.Tensor:
    """``module.predictions(out)`` when the module defines it, else the task's rule."""
    own = getattr(module, "predictions", None)
    if callable(own):
        return own(out)
    task = preprocessor.task
    if task == "binary":
        return torch.sigmoid(out.reshape(len(out), -1)[:, 0])
    if task == "multiclass":
        return torch.softmax(out, dim=-1)
    return preprocessor.inverse_target(out.reshape(len(out), -1)[:, 0])
