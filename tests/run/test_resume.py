"""Nothing a user has is lost or written over: last.ckpt is the last epoch, an interrupted run
resumes with its history whole, run dirs are never reused by accident, and damaged or
mismatched checkpoints are refused in one line before training starts."""

from __future__ import annotations

import csv
import math
import pickle
from pathlib import Path

import lightning as L
import pytest
import torch

from mlplab.errors import ConfigError, DivergedError
from mlplab.run.checkpoint import LEGACY_DATA_KEY, RECORD_KEY, check_weights_only, load_checkpoint
from mlplab.run.rundir import RunLock, lock_owner
from mlplab.train import train

# Overfits quickly: val/loss bottoms out after a few epochs while training goes on.
OVERFIT = [
    "experiment=overfit",
    "data.options.n_samples=120",
    "model.hidden_sizes=[64,64]",
    "optimizer.lr=0.01",
    "test=true",
]


class Interrupt(L.Callback):
    """Stops a run the way a crash or a kill would, after validation of ``epoch``: its val row
    is logged already, but no checkpoint of that epoch exists yet."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            raise KeyError("simulated crash")


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def epochs_with(rows: list[dict], key: str) -> list[int]:
    return [int(float(r["epoch"])) for r in rows if r.get(key)]


def ckpt_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def test_last_checkpoint_is_the_last_epoch_not_the_best(make_cfg):
    cfg = make_cfg(*OVERFIT, "trainer.max_epochs=12")
    train(cfg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    best, last = ckpt_epoch(ckpts / "best.ckpt"), ckpt_epoch(ckpts / "last.ckpt")
    assert best <= 8, "precondition: the best epoch lies well before the end"
    assert last == 11
    a = torch.load(ckpts / "best.ckpt", weights_only=True)["state_dict"]
    b = torch.load(ckpts / "last.ckpt", weights_only=True)["state_dict"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_interrupted_run_resumes_from_its_last_epoch_with_history_once(make_cfg):
    whole_cfg = make_cfg(*OVERFIT, "trainer.max_epochs=10", name="whole")
    whole = train(whole_cfg)

    crash = [
        "+callbacks.crash._target_=tests.run.test_resume.Interrupt",
        "+callbacks.crash.epoch=6",
    ]
    cfg = make_cfg(*OVERFIT, "trainer.max_epochs=10", "resume=auto", *crash, name="b")
    run_dir = Path(cfg.paths.output_dir)
    with pytest.raises(KeyError, match="simulated crash"):
        train(cfg)
    assert ckpt_epoch(run_dir / "checkpoints" / "last.ckpt") == 5
    assert 6 in epochs_with(csv_rows(run_dir), "val/loss")  # logged after the checkpoint

    resumed = train(make_cfg(*OVERFIT, "trainer.max_epochs=10", "resume=auto", name="b"))
    rows = csv_rows(run_dir)
    assert epochs_with(rows, "val/loss") == list(range(10))
    assert epochs_with(rows, "train/loss") == list(range(10))
    assert len(epochs_with(rows, "test/loss")) == 1
    for key in [k for k in whole if k.startswith("test/")]:
        assert math.isclose(resumed[key], whole[key], rel_tol=1e-6, abs_tol=1e-9), key
    whole_rows = csv_rows(Path(whole_cfg.paths.output_dir))
    for key in ("train/loss", "val/loss"):  # the same numbers, epoch by epoch
        a = [float(r[key]) for r in whole_rows if r.get(key)]
        b = [float(r[key]) for r in rows if r.get(key)]
        assert b == pytest.approx(a, rel=1e-6), key


def test_learning_curves_cover_every_epoch_after_a_resume(make_cfg):
    crash = [
        "+callbacks.crash._target_=tests.run.test_resume.Interrupt",
        "+callbacks.crash.epoch=3",
    ]
    cfg = make_cfg(*OVERFIT, "trainer.max_epochs=6", "resume=auto", *crash)
    with pytest.raises(KeyError):
        train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["callbacks"]
    curves = next(v for k, v in state.items() if "LearningCurves" in k)
    assert sorted(curves["train"]) == [0, 1, 2] and sorted(curves["val"]) == [0, 1, 2]


def test_a_run_dir_holding_a_run_is_never_reused(make_cfg):
    cfg = make_cfg("trainer.max_epochs=1")
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run: choose another run_name"):
        train(make_cfg("trainer.max_epochs=2"))
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_a_live_run_dir_is_refused_and_the_lock_goes_with_the_run(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=1", "resume=auto")
    with RunLock(cfg.paths.output_dir):
        assert "pid" in lock_owner(cfg.paths.output_dir)
        with pytest.raises(ConfigError, match="in use by another running process"):
            train(cfg)
    assert lock_owner(cfg.paths.output_dir) is None
    train(cfg)  # free again


def test_a_run_that_fails_before_writing_leaves_no_dir(make_cfg):
    cfg = make_cfg("optimizer.lr=-1")
    with pytest.raises(ConfigError):
        train(cfg)
    assert not Path(cfg.paths.output_dir).exists()


def _trained(make_cfg, *overrides, name="src") -> Path:
    cfg = make_cfg("trainer.max_epochs=1", *overrides, name=name)
    train(cfg)
    return Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"


def test_truncated_last_checkpoint_is_named_with_the_way_out(make_cfg):
    last = _trained(make_cfg, "resume=auto", name="r")
    last.write_bytes(last.read_bytes()[:300])
    with pytest.raises(ConfigError) as err:
        train(make_cfg("trainer.max_epochs=2", "resume=auto", name="r"))
    message = str(err.value)
    assert "damaged or truncated" in message and "best.ckpt" in message and "delete it" in message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint at all", "damaged or truncated"),
        (b"", "damaged or truncated"),
        ("pickle", "Python objects that can't be loaded safely"),
        ("foreign", "not a Lightning checkpoint"),
    ],
)
def test_bad_checkpoint_files_are_one_clear_error(content, message, make_cfg, tmp_path):
    path = tmp_path / "bad.ckpt"
    if content == "pickle":
        torch.save({"state_dict": {}, "x": Path("x")}, path)  # a Python object inside
    elif content == "foreign":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        train(make_cfg("trainer.max_epochs=1", f"ckpt_path={path}"))
    with pytest.raises(ConfigError, match=message):
        load_checkpoint(path)


def test_resume_refuses_a_checkpoint_of_another_model(make_cfg):
    last = _trained(make_cfg)
    with pytest.raises(
        ConfigError, match=r"does not fit this model: \S+weight has shape \(16, 2\).*but \(32, 2\)"
    ):
        train(make_cfg("model.hidden_sizes=[32,32]", f"ckpt_path={last}", name="other"))


def test_resume_refuses_to_silently_keep_the_old_optimizer(make_cfg):
    last = _trained(make_cfg)
    with pytest.raises(ConfigError, match="resuming restores the checkpoint's optimizer"):
        train(make_cfg("optimizer.lr=0.1", f"ckpt_path={last}", name="other"))


def test_a_data_config_without_convert_still_gives_loadable_checkpoints(make_cfg):
    cfg = make_cfg("trainer.max_epochs=1", "~data._convert_")
    assert "_convert_" not in cfg.data
    metrics = train(cfg)  # the test phase loads best.ckpt with weights_only
    assert math.isfinite(metrics["test/loss"])
    model, _ = load_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt")
    assert model.hparams.hidden_sizes == [16, 16]


def test_unloadable_hyperparameters_are_caught_before_training():
    class Module(L.LightningModule):
        def __init__(self, cfg) -> None:
            super().__init__()
            self.save_hyperparameters()

    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match=r"model\.cfg is a DictConfig.*_convert_: all"):
        check_weights_only(Module(OmegaConf.create({"a": 1})), None)
    check_weights_only(Module({"a": [1, 2.0, "x"]}), None)  # plain values pass


def test_checkpoint_records_its_classes_and_survives_a_data_class_rename(make_cfg, tmp_path):
    best = Path(_trained(make_cfg)).with_name("best.ckpt")
    raw = torch.load(best, weights_only=True)
    assert raw[RECORD_KEY]["model_class"] == "mlplab.models.module.MLPModule"
    assert raw[RECORD_KEY]["datamodule_class"] == "mlplab.data.datamodule.TabularDataModule"
    expected = raw[LEGACY_DATA_KEY]
    del raw[LEGACY_DATA_KEY]  # what a renamed DataModule class would leave
    renamed = tmp_path / "renamed.ckpt"
    torch.save(raw, renamed)
    _, datamodule = load_checkpoint(renamed)
    assert datamodule.state_dict() == expected


def test_callbacks_none_writes_no_checkpoints(make_cfg):
    cfg = make_cfg("trainer.max_epochs=1", "callbacks=none")
    metrics = train(cfg)
    assert math.isfinite(metrics["test/loss"])
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))


def test_divergence_stops_in_the_epoch_it_happens(make_cfg):
    cfg = make_cfg("data=grades", "optimizer=sgd", "optimizer.lr=10", "trainer.max_epochs=5")
    with pytest.raises(DivergedError) as err:
        train(cfg)
    message = str(err.value)
    assert "train/loss became" in message and "at epoch 0, step" in message
    assert "optimizer.lr=10" in message
    run_dir = Path(cfg.paths.output_dir)
    assert not list(run_dir.rglob("*.ckpt"))  # no checkpoint of broken weights
    assert (run_dir / "config.yaml").is_file()  # the run dir is kept to look at


def test_divergence_in_a_later_epoch_keeps_the_last_good_checkpoint(make_cfg):
    # The learning rate grows 10× per epoch: fine at first, then the loss blows up.
    cfg = make_cfg(
        "data=grades",
        "optimizer=sgd",
        "optimizer.lr=0.001",
        "scheduler=step",
        "scheduler.step_size=1",
        "scheduler.gamma=10",
        "trainer.max_epochs=10",
    )
    with pytest.raises(DivergedError) as err:
        train(cfg)
    epoch = int(str(err.value).split("at epoch ")[1].split(",")[0])
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert epoch >= 1 and ckpt_epoch(last) == epoch - 1
    weights = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_scheduler_and_optimizer_arguments_fail_when_built(make_cfg):
    with pytest.raises(ConfigError, match=r"scheduler=StepLR\(step_size=0.*ZeroDivisionError"):
        train(make_cfg("scheduler=step", "scheduler.step_size=0"))
    with pytest.raises(ConfigError, match="optimizer=.*Invalid beta parameter"):
        train(make_cfg("optimizer.betas=[1.5,0.9]"))
    with pytest.raises(ConfigError, match="optimizer.lr=inf is invalid"):
        train(make_cfg("optimizer.lr=inf"))


def test_pickled_module_objects_are_not_accepted_as_checkpoints(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": object()}))
    with pytest.raises(ConfigError):
        load_checkpoint(path)
