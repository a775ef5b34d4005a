"""mlplab vs scikit-learn's MLPClassifier/MLPRegressor on the shipped dataset experiments.

Each experiment config is composed like training does; mlplab's ``train(cfg)`` runs as is,
and scikit-learn gets the SAME split and the SAME preprocessed features (the experiment's
DataModule), the same hidden sizes, activation, Adam lr, batch size and epoch budget. sklearn
trains on train only and chooses nothing on val; both report the test split. Then the flights
race: wall time until test AUROC ≥ 0.70 (evaluation time excluded from both clocks).
The last printed line is one JSON object.

    python scripts/baselines.py [--datasets wine digits ...] [--skip-flights] [--time-to-auroc]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score, roc_auc_score
from sklearn.neural_network import MLPClassifier, MLPRegressor

from mlplab.config import compose_run
from mlplab.run.build import build_callbacks, build_loggers, build_model, build_trainer
from mlplab.run.console import silence_known_noise
from mlplab.train import train as mlplab_train

DATASETS = ("breast_cancer", "wine", "penguins", "digits", "diabetes", "cars", "flights")
ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "sigmoid": "logistic", "identity": "identity"}
METRICS = {"binary": ("acc", "auroc"), "multiclass": ("acc",), "regression": ("r2", "mse")}
TARGET_AUROC = 0.70


def compose_experiment(name: str, output_dir: Path) -> DictConfig:
    return compose_run(output_dir, f"experiment={name}", "seed=42")


def setup_data(cfg: DictConfig):
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm


def sklearn_estimator(cfg: DictConfig, task: str, n_train: int, max_iter: int):
    """Same architecture and optimizer as the experiment. Note: sklearn scales its L2 term by
    1/batch rows (``alpha/n·W`` in the gradient), torch's Adam adds ``weight_decay·W``."""
    batch_size = cfg.data.batch_size
    cls = MLPRegressor if task == "regression" else MLPClassifier
    return cls(
        hidden_layer_sizes=tuple(cfg.model.hidden_sizes),
        activation=ACTIVATIONS[cfg.model.activation],
        solver="adam",
        learning_rate_init=cfg.optimizer.lr,
        alpha=cfg.optimizer.get("weight_decay") or 1e-4,
        batch_size=n_train if batch_size == "full" else int(batch_size),
        max_iter=max_iter,
        early_stopping=False,
        random_state=42,
    )


def score(task: str, est, x: np.ndarray, y: np.ndarray, pre) -> dict[str, float]:
    """Test metrics as mlplab reports them (acc at 0.5, micro acc; regression in real units)."""
    if task == "binary":
        return {
            "acc": accuracy_score(y, est.predict(x)),
            "auroc": roc_auc_score(y, est.predict_proba(x)[:, 1]),
        }
    if task == "multiclass":
        return {"acc": accuracy_score(y, est.predict(x))}
    real = pre.inverse_target
    y_true = real(torch.as_tensor(y)).numpy()
    y_pred = real(torch.as_tensor(est.predict(x))).numpy()
    return {"r2": r2_score(y_true, y_pred), "mse": mean_squared_error(y_true, y_pred)}


def numpy_split(dm, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = dm.tensors[split]
    y = y.numpy()
    return x.numpy(), (y if dm.task == "regression" else y.astype(np.int64))


def run_sklearn(cfg: DictConfig, dm) -> tuple[dict[str, float], float, int]:
    x, y = numpy_split(dm, "train")
    est = sklearn_estimator(cfg, dm.task, len(x), cfg.trainer.max_epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        est.fit(x, y)  # regression: standardized targets; score() inverts to real units
        seconds = time.perf_counter() - start
    return score(dm.task, est, *numpy_split(dm, "test"), dm.preprocessor), seconds, est.n_iter_


def compare(name: str, tmp: Path) -> dict:
    cfg = compose_experiment(name, tmp / name)
    start = time.perf_counter()
    ours = mlplab_train(cfg)
    ours_s = time.perf_counter() - start
    epochs = int(pd.read_csv(tmp / name / "csv" / "metrics.csv")["epoch"].max()) + 1
    dm = setup_data(cfg)
    theirs, theirs_s, theirs_epochs = run_sklearn(cfg, dm)
    keys = METRICS[dm.task]
    return {
        "task": dm.task,
        "mlplab": {k: ours[f"test/{k}"] for k in keys},
        "sklearn": {k: float(theirs[k]) for k in keys},
        "mlplab_fit_s": ours_s,
        "sklearn_fit_s": theirs_s,
        "mlplab_epochs": epochs,
        "sklearn_epochs": int(theirs_epochs),
    }


def table_rows(results: dict) -> list[tuple]:
    return [
        (name, r["task"], k, r["mlplab"][k], r["sklearn"][k], r["mlplab_fit_s"], r["sklearn_fit_s"])
        for name, r in results.items()
        for k in METRICS[r["task"]]
    ]


def print_tables(results: dict) -> None:
    head = ("dataset", "task", "metric", "mlplab", "sklearn", "mlplab fit s", "sklearn fit s")
    rows = table_rows(results)
    print(f"\n{head[0]:<14}{head[1]:<11}{head[2]:<7}" + "".join(f"{h:>14}" for h in head[3:]))
    for d, task, k, a, b, sa, sb in rows:
        print(f"{d:<14}{task:<11}{k:<7}{a:>14.4f}{b:>14.4f}{sa:>14.1f}{sb:>14.1f}")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * 3 + "---:|" * 4)
    for d, task, k, a, b, sa, sb in rows:
        print(f"| {d} | {task} | {k} | {a:.4f} | {b:.4f} | {sa:.1f} | {sb:.1f} |")


class TestAUROC(L.Callback):
    """At each train-epoch end: test AUROC, and training wall time so far (this evaluation
    excluded). Stops the fit at the first epoch that reaches ``target``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, target: float) -> None:
        self.x, self.y, self.target = x, y.numpy(), target
        self.start, self.paused = 0.0, 0.0
        self.aurocs: list[float] = []
        self.reached: tuple[int, float] | None = None  # (epoch, seconds)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        elapsed = now - self.start - self.paused
        pl_module.eval()
        with torch.no_grad():
            p = pl_module.predictions(pl_module(self.x.to(pl_module.device))).cpu().numpy()
        pl_module.train()
        self.aurocs.append(float(roc_auc_score(self.y, p)))
        if self.reached is None and self.aurocs[-1] >= self.target:
            self.reached = (len(self.aurocs), elapsed)
            trainer.should_stop = True  # the race is over; the rest would be unmeasured
        self.paused += time.perf_counter() - now


def race_mlplab(cfg: DictConfig) -> dict:
    """train()'s wiring (seed → data → model → callbacks, loggers → trainer → fit) plus the
    AUROC probe; the clock runs from just before ``trainer.fit``."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = setup_data(cfg)
    model = build_model(cfg, dm)
    probe = TestAUROC(*dm.tensors["test"], TARGET_AUROC)
    trainer = build_trainer(cfg, [*build_callbacks(cfg), probe], build_loggers(cfg))
    probe.start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    epoch, seconds = probe.reached or (None, None)
    return {"seconds": seconds, "epoch": epoch, "aurocs": probe.aurocs}


def race_sklearn(cfg: DictConfig) -> dict:
    """One ``partial_fit`` per epoch; only the partial_fit calls are on the clock."""
    dm = setup_data(cfg)
    (x, y), (xt, yt) = numpy_split(dm, "train"), numpy_split(dm, "test")
    est = sklearn_estimator(cfg, "binary", len(x), max_iter=1)
    clock, aurocs = 0.0, []
    for epoch in range(1, cfg.trainer.max_epochs + 1):
        start = time.perf_counter()
        est.partial_fit(x, y, classes=[0, 1])
        clock += time.perf_counter() - start
        aurocs.append(float(roc_auc_score(yt, est.predict_proba(xt)[:, 1])))
        if aurocs[-1] >= TARGET_AUROC:
            return {"seconds": clock, "epoch": epoch, "aurocs": aurocs}
    return {"seconds": None, "epoch": None, "aurocs": aurocs}


def time_to_auroc(tmp: Path) -> dict:
    cfg = compose_experiment("flights", tmp / "race")
    print(f"\nflights: time to test AUROC >= {TARGET_AUROC} (max {cfg.trainer.max_epochs} epochs)")
    result = {"mlplab": race_mlplab(cfg), "sklearn": race_sklearn(cfg)}
    for name, r in result.items():
        got = f"{r['seconds']:.1f} s at epoch {r['epoch']}" if r["epoch"] else "not reached"
        print(f"  {name:<8} {got:<26} AUROC per epoch: {[round(a, 4) for a in r['aurocs']]}")
    ours, theirs = result["mlplab"]["seconds"], result["sklearn"]["seconds"]
    result["sklearn_over_mlplab"] = theirs / ours if ours and theirs else None
    if result["sklearn_over_mlplab"]:
        print(f"  ratio sklearn/mlplab: {result['sklearn_over_mlplab']:.2f}x")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, help="default: all")
    parser.add_argument("--skip-flights", action="store_true", help="no flights, no race")
    parser.add_argument(
        "--time-to-auroc", action="store_true", help="the flights race (alone unless --datasets)"
    )
    args = parser.parse_args()
    silence_known_noise()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available"
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    names = args.datasets or ([] if args.time_to_auroc else list(DATASETS))
    names = [n for n in names if not (args.skip_flights and n == "flights")]
    print(f"torch threads {torch.get_num_threads()}")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: compare(n, Path(tmp)) for n in names}
        if not args.skip_flights:
            out["time_to_auroc"] = time_to_auroc(Path(tmp))
    if results:
        print_tables(results)
        out["datasets"] = results
    print(json.dumps(out))


if __name__ == "__main__":
    main()
