"""``mlplab.run.checkpoint`` on its own, without a training run: ``load_checkpoint`` hands back
a model ready to predict, and ``check_resumable`` refuses each setting a resume would
silently replace by the checkpoint's.

    .venv/bin/python -m pytest tests/run/test_checkpoint.py -q
"""

from __future__ import annotations

import pytest
import torch

from mlplab.data import TabularDataModule
from mlplab.errors import ConfigError
from mlplab.models import MLPModule
from mlplab.run.checkpoint import check_resumable, load_checkpoint, write_model_checkpoint

ADAM = {"_target_": "torch.optim.Adam", "lr": 0.01}
STEP = {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 5}
MOONS = {"n_samples": 60}


def _datamodule(**options) -> TabularDataModule:
    dm = TabularDataModule("moons", {**MOONS, **options}, batch_size=16)
    dm.setup()
    return dm


def _model(dm: TabularDataModule, **kwargs) -> MLPModule:
    kwargs = {"hidden_sizes": [8], "optimizer": ADAM, **kwargs}
    return MLPModule(dm.in_features, dm.out_features, dm.task, **kwargs)


def _raw(model: MLPModule, dm: TabularDataModule) -> dict:
    """The parts of a training checkpoint ``check_resumable`` reads."""
    return {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "datamodule_hyper_parameters": dict(dm.hparams),
    }


def test_loaded_model_is_in_eval_mode_so_dropout_is_off(tmp_path):
    """mlplab-predict calls the loaded model directly (no Trainer puts it in eval mode): with
    dropout left on, the same rows would get different predictions on every call."""
    dm = _datamodule()
    trained = _model(dm, dropout=0.5)
    path = tmp_path / "m.ckpt"
    write_model_checkpoint(path, trained, dm, epoch=0, hparams=dict(trained.hparams))
    model, _ = load_checkpoint(path)
    assert not model.training
    assert not any(m.training for m in model.modules())
    x = dm.tensors["test"][0]
    with torch.no_grad():
        first, second = model(x), model(x)
        assert torch.equal(first, second)
        trained.eval()
        torch.testing.assert_close(first, trained(x))  # the saved weights, dropout off


def test_resume_refuses_a_changed_scheduler():
    dm = _datamodule()
    raw = _raw(_model(dm, scheduler=STEP), dm)
    check_resumable(raw, "last.ckpt", _model(dm, scheduler=STEP), dm)  # same run: fine
    other = _model(dm, scheduler={**STEP, "step_size": 2})
    with pytest.raises(ConfigError, match=r"trained with scheduler=.*step_size': 5.* asks for"):
        check_resumable(raw, "last.ckpt", other, dm)
    with pytest.raises(ConfigError, match="resuming restores the checkpoint's scheduler"):
        check_resumable(raw, "last.ckpt", _model(dm, scheduler=None), dm)


def test_resume_refuses_other_data_options():
    """Same source, other options (another n_samples): other rows behind the same name."""
    dm = _datamodule()
    raw = _raw(_model(dm), dm)
    check_resumable(raw, "last.ckpt", _model(dm), _datamodule())  # same data: fine
    with pytest.raises(ConfigError, match=r"trained on data.options=\{'n_samples': 60\}"):
        check_resumable(raw, "last.ckpt", _model(dm), _datamodule(n_samples=80))
