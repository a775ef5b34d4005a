"""Population training vs one trial after another: the same configs, side by side, in one run.

    python scripts/bench_population.py [--only toy] [--toy-members 64] [--flights-sample 0.1]

Three cases (the issue's): toy = 64 configs on moons ([16, 16], 20 epochs); breast_cancer =
64 configs ([64, 64]); flights = 8 configs ([256, 256], batch 512). The configs vary the
learning rate, Adam's betas and weight decay, and the seed (weights, split and shuffle).

Sequential: what ``mlplab-sweep`` does per trial — compose the config (its ``Composer``: Hydra
composes once, each trial's values are applied to a copy), ``train(cfg)`` in this
process (no subprocess start-up: the fastest way to run trials one by one) with the CSV logger,
then write ``metrics.json``; figures and wandb off. Population: ``train_population`` on the same
configs, writing each member's run dir (config, run info, metrics.json, best.ckpt) and the
population's metrics.csv (a ``member`` column). Wall time runs from the first trial's start to
the last result written (config composition included on both sides). The population side runs
``--repeats`` times (fresh dirs) and reports the median: a run of a few seconds on a shared VM
can land in a slow phase that the sequential side's minute averages out. Both sides must agree:
the largest difference in a member's test/loss is printed (float32 summation order differs:
batched vs one-by-one matrix products). On a CUDA machine the same cases also run on the GPU
(``--device cuda``, or ``all``). The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlplab.composer import Composer, compose_runs
from mlplab.config import QUIET
from mlplab.population.run import train_population
from mlplab.run.console import silence_known_noise
from mlplab.run.heap import freeze_startup_heap
from mlplab.sweep.objective import TRIAL_DEFAULTS
from mlplab.train import train

COMMON = [
    *TRIAL_DEFAULTS,
    "logger=csv",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
    "threads=1",
]
CASES = {
    "toy": (["data=moons", "model.hidden_sizes=[16,16]", "trainer.max_epochs=20"], 64),
    "breast_cancer": (["data=breast_cancer", "model.hidden_sizes=[64,64]"], 64),
    "flights": (["data=flights", "model.hidden_sizes=[256,256]", "data.batch_size=512"], 8),
}


def member_overrides(k: int) -> list[str]:
    """Config k of a case: a random-search point (seeded by k) plus seed k."""
    rng = np.random.default_rng(k)
    return [
        f"seed={k}",
        "optimizer=adam",
        f"optimizer.lr={10 ** rng.uniform(-3.5, -1.5):.6g}",
        f"optimizer.betas=[{rng.choice([0.8, 0.9, 0.95])},{rng.choice([0.99, 0.999])}]",
        f"optimizer.weight_decay={rng.choice([0.0, 1e-4, 1e-3])}",
    ]


def run_case(name: str, args, root: Path, device: str) -> dict:
    base, members = CASES[name]
    members = {"toy": args.toy_members, "breast_cancer": args.bc_members}.get(name, members)
    extra = [f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}"]
    if name == "flights":
        extra += [
            f"data.options.sample={args.flights_sample}",
            f"trainer.max_epochs={args.flights_epochs}",
        ]
    common = [*COMMON, *base, *extra]

    freeze_startup_heap()  # as mlplab-sweep does before its first trial
    start = time.perf_counter()
    composer = Composer("train")  # as the sweep composes its trials (Objective.compose)
    alone = []
    for k in range(members):
        out = root / f"{name}-{device}-alone" / f"trial_{k}"
        lines = [f"paths.output_dir={out}", *QUIET, *common, *member_overrides(k)]
        metrics = train(composer(lines, shared=[*QUIET, *common]))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        alone.append(metrics)
    sequential = time.perf_counter() - start

    times = []
    for rep in range(args.repeats):  # the median: one short run can land in a slow second
        out = root / f"{name}-{device}-population-{rep}"
        start = time.perf_counter()
        cfgs = compose_runs(out, [[*common, *member_overrides(k)] for k in range(members)])
        summary = train_population(cfgs, out)
        times.append(time.perf_counter() - start)

    ok = summary.status != "diverged"
    diffs = [
        abs(a["test/loss"] - p)
        for a, p, good in zip(alone, summary["test/loss"], ok, strict=True)
        if good
    ]
    return _timings(members, sequential, times) | {
        # float32 summation order differs (batched vs one-by-one products); long high-lr runs
        # amplify it: the median shows the typical member, the max the most chaotic one
        "max_test_loss_diff": float(f"{max(diffs):.3g}"),
        "median_test_loss_diff": float(f"{float(np.median(diffs)):.3g}"),
    }


SWEEP_SEARCH = """
metric: val/loss
direction: minimize
sampler: {name: random, seed: 1}
pruner: {name: none}
overrides: [data=moons, "model.hidden_sizes=[16,16]", trainer.max_epochs=20, optimizer=adam,
            callbacks.learning_curves=null, callbacks.decision_boundary=null, threads=1]
params:
  optimizer.lr: {type: float, low: 3.0e-4, high: 3.0e-2, log: true}
  optimizer.betas: {type: categorical, choices: ["[0.8,0.99]", "[0.9,0.999]", "[0.95,0.999]"]}
  optimizer.weight_decay: {type: categorical, choices: [0.0, 1.0e-4, 1.0e-3]}
  seed: {type: int, low: 0, high: 100000}
"""


def run_sweep(args, root: Path) -> dict:
    """The toy case through ``mlplab-sweep`` itself (in this process, its sqlite study, Optuna's
    ask/report/tell for every trial and epoch, its reports): ``n_trials`` trials one by one vs
    ``population=n_trials``. No pruner, so both sides train every trial to the end.
    ``--sweep-storage journal``: both sides on an Optuna journal file instead of sqlite."""
    from contextlib import redirect_stdout
    from io import StringIO

    from mlplab.sweep.cli import sweep

    search = root / "sweep_toy.yaml"
    search.write_text(SWEEP_SEARCH)
    n = args.toy_members

    def once(name: str, *extra: str) -> float:
        argv = [f"hparams_search={search}", f"n_trials={n}", f"sweep_dir={root / name}"]
        if args.sweep_storage == "journal":  # Optuna's journal file: no SQL, no heartbeats
            argv.append(f"storage={root / name}.journal")
        start = time.perf_counter()
        with redirect_stdout(StringIO()):
            study = sweep([*argv, "study_name=bench", "trainer.accelerator=cpu", *extra])
        seconds = time.perf_counter() - start
        assert sum(t.state.name == "COMPLETE" for t in study.trials) >= n - 2, name
        return seconds

    sequential = once("sweep-alone")
    times = [once(f"sweep-population-{rep}", f"population={n}") for rep in range(args.repeats)]
    return _timings(n, sequential, times)


def _timings(members: int, sequential: float, times: list[float]) -> dict:
    """The side-by-side numbers of a case: the population's median of its runs."""
    population = float(np.median(times))
    return {
        "members": members,
        "sequential_s": round(sequential, 3),
        "population_s": round(population, 3),
        "population_runs_s": [round(t, 3) for t in times],
        "speedup": round(sequential / population, 2),
        "trials_per_hour_sequential": round(members / sequential * 3600),
        "trials_per_hour_population": round(members / population * 3600),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[*sorted(CASES), "sweep"], action="append")
    parser.add_argument("--toy-members", type=int, default=64)
    parser.add_argument("--bc-members", type=int, default=64)
    parser.add_argument("--flights-sample", type=float, default=0.25)
    parser.add_argument("--flights-epochs", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5, help="population runs (median)")
    parser.add_argument("--sweep-storage", choices=["sqlite", "journal"], default="sqlite")
    args = parser.parse_args()
    silence_known_noise()
    torch.set_num_threads(1)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="mlplab-bench-population-") as tmp:
        for device in devices:
            for name in args.only or [*CASES, "sweep"]:
                if name == "sweep" and device != "cpu":
                    continue
                r = (
                    run_sweep(args, Path(tmp))
                    if name == "sweep"
                    else run_case(name, args, Path(tmp), device)
                )
                results[f"{name}_{device}"] = r
                print(
                    f"{name:14s} {device:4s} {r['members']:3d} configs: one by one "
                    f"{r['sequential_s']:7.2f} s ({r['trials_per_hour_sequential']:>7} trials/h) "
                    f"| population {r['population_s']:6.2f} s "
                    f"({r['trials_per_hour_population']:>8} trials/h) | {r['speedup']:6.1f}x "
                    + (
                        f"| |test/loss diff| max {r['max_test_loss_diff']:.1e} "
                        f"median {r['median_test_loss_diff']:.1e}"
                        if "max_test_loss_diff" in r
                        else "| mlplab-sweep itself, Optuna included"
                    ),
                    flush=True,
                )
    first = next(iter(results.values()))
    line = {
        "trials_per_hour_sequential": first["trials_per_hour_sequential"],
        "trials_per_hour_population": first["trials_per_hour_population"],
    }
    for key, r in results.items():
        name, device = key.rsplit("_", 1)
        line[f"speedup_{name}" if device == "cpu" else f"speedup_{name}_gpu"] = r["speedup"]
        if device == "cuda":
            line[f"members_per_second_{name}_gpu"] = round(r["members"] / r["population_s"], 2)
    line["cases"] = results
    print(json.dumps(line))


if __name__ == "__main__":
    main()
