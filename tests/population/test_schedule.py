"""Tests of ``mlplab.population.schedule``: stacked schedulers against torch's, member by member.

A population of K=4 members with different base lrs and different scheduler numbers is stepped
N epochs; each member also gets a real ``torch.optim.SGD`` and ``torch.optim.lr_scheduler``
of its own, and the two learning rates must be equal at every epoch (bit for bit). Inactive
members must keep their lr and their scheduler state, and go on as torch does for the epochs
they were active.

    .venv/bin/python -m pytest tests/population/test_schedule.py -q
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from mlplab.errors import ConfigError
from mlplab.population.optim import StackedSGD
from mlplab.population.schedule import SCHEDULERS, build_stacked_scheduler

K, N = 4, 60
CONF = Path(__file__).resolve().parents[2] / "src" / "mlplab" / "conf" / "scheduler"
LRS = [0.1, 0.05, 0.3, 0.01]

# Per-member configs as in conf/scheduler/*.yaml; every case mixes values across members.
CASES = {
    "step": (
        "torch.optim.lr_scheduler.StepLR",
        {"step_size": [1, 3, 4, 7], "gamma": [0.5, 0.1, 0.9, 1.3]},
    ),
    "cosine": (  # N > 2·T_max for most: down, up again (the special case), down again
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        {"T_max": [5, 10, 3, 50], "eta_min": [0.0, 1e-3, 0.05, 0.02]},  # member 3: eta_min > lr
    ),
    "plateau": (
        "torch.optim.lr_scheduler.ReduceLROnPlateau",
        {
            "monitor": ["val/loss", "val/loss", "val/acc", "val/loss"],  # the population's key
            "mode": ["min", "min", "max", "min"],
            "factor": [0.5, 0.1, 0.8, 0.0],
            "patience": [0, 2, 1, 3],
            "threshold": [1e-4, 0.05, 0.0, 0.2],
            "threshold_mode": ["rel", "abs", "rel", "abs"],
            "cooldown": [0, 2, 1, 3],
            "min_lr": [0.02, 1e-4, 0.0, 1e-3],
            "eps": [1e-8, 1e-8, 0.01, 1e-8],  # member 2 stops cutting at lr·0.2 <= 0.01
        },
    ),
}


def _members(case: str) -> tuple[str, list[dict]]:
    target, columns = CASES[case]
    return target, [{key: values[k] for key, values in columns.items()} for k in range(K)]


def _metrics(epochs: int = N) -> torch.Tensor:
    """(epochs, K) float32 metric values: random walks on a grid of 0.125 (ties = plateaus,
    small moves test the thresholds), each member with a few NaN epochs (no value)."""
    gen = torch.Generator().manual_seed(0)
    moves = torch.tensor([-1.0, -0.125, 0.0, 0.0, 0.0, 0.125, 0.25])
    walk = 5 + moves[torch.randint(len(moves), (epochs, K), generator=gen)].cumsum(0)
    walk[torch.rand(epochs, K, generator=gen) < 0.1] = math.nan
    return walk


def _stacked(case: str):
    target, members = _members(case)
    opt = StackedSGD([torch.zeros(K, 2, requires_grad=True)], lr=LRS)
    return opt, build_stacked_scheduler(opt, target, members)


def _torch_member(case: str, k: int):
    """Member k alone: torch's SGD and scheduler over a parameter of its own."""
    target, members = _members(case)
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=LRS[k])
    options = {key: value for key, value in members[k].items() if key != "monitor"}
    return opt, getattr(torch.optim.lr_scheduler, target.rsplit(".", 1)[1])(opt, **options)


def _step_torch(case: str, refs, metrics: torch.Tensor, active: list[bool]) -> None:
    for k, (opt, sched) in enumerate(refs):
        if not active[k]:
            continue
        opt.step()  # no grads: a no-op that tells the scheduler the optimizer stepped first
        if case != "plateau":
            sched.step()
        elif not math.isnan(metrics[k]):
            sched.step(metrics[k])


def _assert_same_lr(opt, refs, epoch: int) -> None:
    for k, (ref, _) in enumerate(refs):
        assert opt.lr[k].item() == ref.param_groups[0]["lr"], f"member {k}, epoch {epoch}"


@pytest.mark.parametrize("case", CASES)
def test_matches_torch_member_by_member(case):
    opt, sched = _stacked(case)
    refs = [_torch_member(case, k) for k in range(K)]
    metrics, seen = _metrics(), [set() for _ in range(K)]
    for epoch in range(N):
        sched.step(metrics[epoch] if case == "plateau" else None)
        _step_torch(case, refs, metrics[epoch], [True] * K)
        _assert_same_lr(opt, refs, epoch)
        for k in range(K):
            seen[k].add(opt.lr[k].item())
    assert all(len(lrs) >= 2 for lrs in seen)  # every member's lr moved: no vacuous match


def test_plateau_counts_its_state_as_torch():
    """Best value, bad epochs and cooldown of every member equal torch's, epoch by epoch."""
    opt, sched = _stacked("plateau")
    refs = [_torch_member("plateau", k) for k in range(K)]
    metrics, cuts = _metrics(), 0
    for epoch in range(N):
        before = opt.lr.clone()
        sched.step(metrics[epoch].tolist())  # a list works as well as a tensor
        _step_torch("plateau", refs, metrics[epoch], [True] * K)
        cuts += int((opt.lr != before).sum())
        for k, (_, ref) in enumerate(refs):
            ours = sched.members[k]
            theirs = (ref.best, ref.num_bad_epochs, ref.cooldown_counter)
            assert (ours["best"], ours["num_bad_epochs"], ours["cooldown_counter"]) == theirs
    assert cuts >= 8


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("via", ["argument", "optimizer"])
def test_inactive_members_keep_lr_and_state(case, via):
    """Members 1 and 3 sit out epochs 10-24; then they go on like torch stepped 15 fewer times."""
    opt, sched = _stacked(case)
    refs = [_torch_member(case, k) for k in range(K)]
    metrics = _metrics()
    for epoch in range(N):
        active = [True, not 10 <= epoch < 25, True, not 10 <= epoch < 25]
        if epoch == 10:
            lr, state = opt.lr.clone(), sched.state_dict()["members"]
        if via == "optimizer":
            opt.set_active(active)
        sched.step(metrics[epoch], active=active if via == "argument" else None)
        _step_torch(case, refs, metrics[epoch], active)
        _assert_same_lr(opt, refs, epoch)
        if epoch == 24:
            for k in (1, 3):
                assert opt.lr[k] == lr[k] and sched.state_dict()["members"][k] == state[k]


@pytest.mark.parametrize("case", CASES)
def test_state_dict_round_trip_is_exact(case):
    """Save after 20 epochs, load into a fresh optimizer and scheduler built from the config,
    go on 20 epochs = 40 epochs uninterrupted."""
    opt, sched = _stacked(case)
    opt.set_active([True, True, False, True])
    metrics = _metrics()
    for epoch in range(20):
        sched.step(metrics[epoch])
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    fresh_opt, fresh = _stacked(case)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    fresh.load_state_dict(saved["sched"])
    fresh_opt.load_state_dict(saved["opt"])  # the lrs live in the optimizer's state
    for epoch in range(20, 40):
        sched.step(metrics[epoch])
        fresh.step(metrics[epoch])
        assert torch.equal(opt.lr, fresh_opt.lr)
    assert fresh.state_dict() == sched.state_dict()
    assert opt.lr[2] == LRS[2]
    with pytest.raises(ConfigError, match=r"^saved scheduler='torch.*' is invalid: 'torch"):
        other = "step" if case != "step" else "cosine"
        _stacked(other)[1].load_state_dict(saved["sched"])


def test_plateau_without_metrics_does_not_step():
    opt, sched = _stacked("plateau")
    state = sched.state_dict()
    for _ in range(30):
        sched.step()
        sched.step(torch.full((K,), math.nan))
    assert sched.state_dict() == state and opt.lr.tolist() == LRS


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scheduler_config_builds(path):
    root = OmegaConf.create({"trainer": {"max_epochs": 7}, "scheduler": OmegaConf.load(path)})
    cfg = OmegaConf.to_container(root, resolve=True)["scheduler"]
    assert cfg["_target_"] in {None, *SCHEDULERS}
    opt = StackedSGD([torch.zeros(K, 2)], lr=LRS)
    sched = build_stacked_scheduler(opt, cfg["_target_"], [cfg] * K)
    if cfg["_target_"] is None:
        assert sched is None
        return
    for _ in range(12):
        sched.step(torch.ones(K))  # plateau: never better than the first epoch
    assert (opt.lr < torch.tensor(LRS, dtype=torch.float64)).all()


STEP, PLATEAU = CASES["step"][0], CASES["plateau"][0]


@pytest.mark.parametrize(
    ("target", "member", "message"),
    [
        ("foo", {}, r"^scheduler._target_='foo' is invalid: one of \['torch"),
        ("torch.optim.lr_scheduler.OneCycleLR", {}, r"^scheduler._target_='torch.optim.lr_sc"),
        (STEP, {"step_size": -1}, r"^members\[1\].step_size=-1 is invalid: an integer >= 1$"),
        (STEP, {"step_size": 2.5}, r"^members\[1\].step_size=2.5 is invalid: an integer"),
        (STEP, {}, r"^members\[1\].step_size=None is invalid: required, an integer >= 1$"),
        (STEP, {"step_size": 2, "gamma": -0.5}, r"members\[1\].gamma=-0.5 is invalid: a finite"),
        (STEP, {"step_size": 2, "last_epoch": 3}, r"members\[1\].last_epoch=3 is invalid: not"),
        (STEP, {"_target_": PLATEAU}, r"^members\[1\]._target_='torch.* is invalid: 'torch"),
        (PLATEAU, {"factor": 1.0}, r"^members\[1\].factor=1.0 is invalid: a number in \[0, 1\)$"),
        (PLATEAU, {"factor": math.nan}, r"^members\[1\].factor=nan is invalid"),
        (PLATEAU, {"mode": "mean"}, r"^members\[1\].mode='mean' is invalid: one of \['min'"),
        (PLATEAU, {"patience": True}, r"^members\[1\].patience=True is invalid: an integer"),
        (PLATEAU, {"min_lr": math.inf}, r"^members\[1\].min_lr=inf is invalid: a finite"),
        (CASES["cosine"][0], {"T_max": 0}, r"^members\[1\].T_max=0 is invalid: an integer >= 1"),
    ],
)
def test_config_errors_are_one_line(target, member, message):
    opt = StackedSGD([torch.zeros(2, 3)], lr=[0.1, 0.1])
    first = {"step_size": 1} if target == STEP else {"T_max": 5} if "Cosine" in target else {}
    with pytest.raises(ConfigError, match=message) as err:
        build_stacked_scheduler(opt, target, [first, member])
    assert "\n" not in str(err.value)


def test_no_target_is_no_scheduler_and_members_match_the_optimizer():
    opt = StackedSGD([torch.zeros(2, 3)], lr=[0.1, 0.1])
    assert build_stacked_scheduler(opt, None, [{}, {}]) is None
    with pytest.raises(ConfigError, match=r"^members=\[\{'step_size': 1\}\] is invalid: 2 dicts"):
        build_stacked_scheduler(opt, STEP, [{"step_size": 1}])


class _Population(L.LightningModule):
    """Manual optimization with the scheduler in ``configure_optimizers``: Lightning saves and
    restores its state in the checkpoint; the module steps it at epoch end."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.zeros(K, 2))

    def configure_optimizers(self):
        opt = StackedSGD([self.w], lr=LRS)
        return {"optimizer": opt, "lr_scheduler": build_stacked_scheduler(opt, *_members("step"))}

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward((self.w**2).sum() + batch.sum())
        opt.step()

    def on_train_epoch_end(self):
        self.lr_schedulers().step()


def _fit(tmp_path, epochs: int, model: _Population, ckpt=None) -> L.Trainer:
    data = torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=1)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data, ckpt_path=ckpt)
    return trainer


def test_lightning_checkpoint_resume(tmp_path):
    """5 epochs, checkpoint, resume to 10 = the scheduler stepped 10 times by hand."""
    _fit(tmp_path, 5, _Population()).save_checkpoint(tmp_path / "half.ckpt")
    resumed = _Population()
    _fit(tmp_path, 10, resumed, ckpt=tmp_path / "half.ckpt")
    opt = StackedSGD([torch.zeros(K, 2)], lr=LRS)
    sched = build_stacked_scheduler(opt, *_members("step"))
    for _ in range(10):
        sched.step()
    assert torch.equal(resumed.optimizers().optimizer.lr, opt.lr)
    assert resumed.lr_schedulers().state_dict() == sched.state_dict()
