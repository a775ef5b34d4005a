"""Population training vs one run after another: the same K configs, side by side.

    python scripts/bench_population.py [--members 16] [--epochs 10]

Both sides train K seeds of one config (moons, [16, 16], Adam, batch 32) and write each
member's run dir with checkpoint and metrics; the sequential side is ``train(cfg)`` in this
process per seed (no subprocess start-up: the fastest way to run trials one by one), with the
CSV logger only and no figures. Prints wall times, trials per hour and the ratio, and checks
that both sides give the same test metrics.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mlplab.config import compose_run
from mlplab.population.run import train_population
from mlplab.run.console import silence_known_noise
from mlplab.train import train

COMMON = [
    "data=moons",
    "data.options.n_samples=1000",
    "model.hidden_sizes=[16,16]",
    "data.batch_size=32",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
    "print_config=false",
    "threads=1",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    silence_known_noise()
    torch.set_num_threads(1)
    common = [*COMMON, f"trainer.max_epochs={args.epochs}"]
    with tempfile.TemporaryDirectory(prefix="mlplab-bench-population-") as tmp:
        root = Path(tmp)
        cfgs = [compose_run(root / "pop", *common, f"seed={s}") for s in range(args.members)]
        start = time.perf_counter()
        summary = train_population(cfgs, root / "pop")
        population = time.perf_counter() - start

        start = time.perf_counter()
        alone = [
            train(compose_run(root / f"alone_{s}", *common, f"seed={s}"))
            for s in range(args.members)
        ]
        sequential = time.perf_counter() - start
    diff = max(abs(a["test/loss"] - p) for a, p in zip(alone, summary["test/loss"], strict=True))
    k = args.members
    print(f"{k} members, moons 1000 rows, [16, 16], Adam, batch 32, {args.epochs} epochs, CPU")
    for name, seconds in (
        ("one after another (in-process train)", sequential),
        ("one population", population),
    ):
        print(f"  {name:38s} {seconds:7.2f} s  {k / seconds * 3600:8.0f} trials/h")
    print(f"  speed-up: {sequential / population:.1f}x   max |test/loss difference|: {diff:.2e}")


if __name__ == "__main__":
    main()
