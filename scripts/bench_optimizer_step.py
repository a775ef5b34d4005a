"""What Lightning's optimizer step costs a run, side by side in one process.

- **raw**: ``bench_throughput``'s hand-written loop (``Adam(foreach=True)``, what mlplab builds);
- **mlplab**: the run ``mlplab-train`` builds; each mini-batch's ``optimizer.step()`` goes
  through Lightning's ``LightningOptimizer`` (callback and module hooks, step counting);
- **direct_step**: the same run, its module stepping the torch optimizer itself
  (``self.optimizers(use_pl_optimizer=False)``). Lightning then counts no step at all:
  ``trainer.global_step`` stays 0, so its ModelCheckpoints skip every save (about 1 % of an
  epoch here, which this contender is spared), which is why mlplab doesn't ship it. It
  measures what Lightning's step costs.

The three alternate for ``--rounds`` rounds (mlplab and direct_step in swapped order every
other round); each round gives each contender its fastest epoch after the first, and the
printed ratio to raw is the median over rounds. The last printed line is one JSON object.

    python scripts/bench_optimizer_step.py [--batch-sizes 512 32] [--rounds 6] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings

import torch

import bench_throughput as bt  # the same run, loop and data as the throughput bench (scripts/)
from mlplab.models import MLPModule
from mlplab.run.console import silence_known_noise


class DirectStep(MLPModule):
    """``MLPModule`` stepping the torch optimizer without Lightning's wrapper."""

    def optimizers(self, use_pl_optimizer: bool = True):
        return super().optimizers(use_pl_optimizer=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="training rows at batch ≥ 512")
    parser.add_argument("--small-rows", type=int, default=50_000, help="rows at batch < 512")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (first: warm-up)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 32])
    args = parser.parse_args()
    silence_known_noise()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    started, result = time.perf_counter(), {}
    for bs in args.batch_sizes:
        n = args.rows if bs >= 512 else args.small_rows
        torch.set_num_threads(bt.threads_for(20, bs))
        with tempfile.TemporaryDirectory() as tmp:
            data = bt.synthetic(n)
            configs = {
                "mlplab": bt.mlplab_config(tmp, data, bs, args.epochs),
                "direct_step": bt.mlplab_config(
                    tmp, data, bs, args.epochs, f"model._target_={__name__}.DirectStep"
                ),
            }
            datamodule = bt.build.build_datamodule(configs["mlplab"])
            datamodule.setup("fit")
            x, y = datamodule.tensors["train"]
            ratios: dict[str, list[float]] = {name: [] for name in configs}
            for r in range(args.rounds):
                raw = bt.best_epoch(bt.bench_raw(x, y, bs, args.epochs, "foreach"))
                order = list(configs) if r % 2 == 0 else list(reversed(configs))
                for name in order:
                    configs[name].paths.output_dir = f"{tmp}/{name}_{r}"
                    ratios[name].append(raw / bt.best_epoch(bt.bench_mlplab(configs[name])))
        print(f"batch {bs}: {len(x)} rows, {torch.get_num_threads()} threads, {args.rounds} rounds")
        for name, values in ratios.items():
            median = statistics.median(values)
            spread = f"{min(values):.3f}–{max(values):.3f}"
            print(f"  {name:<12} {median:.3f}× the raw loop (rounds: {spread})")
            result[f"{name}_vs_raw_b{bs}"] = round(median, 3)
    result["wall_s"] = round(time.perf_counter() - started)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
