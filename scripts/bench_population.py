"""Population training vs one trial after another: the same work, side by side, in one run.

    python scripts/bench_population.py [--only toy] [--only space-toy] [--repeats 5]

Two kinds of case; the last line printed is one JSON object with every number.

Member-only configs (``toy``, ``breast_cancer``, ``flights``): 64 configs on moons ([16, 16],
20 epochs), 64 on breast_cancer ([64, 64]), 8 on flights ([256, 256], batch 512), varying the
learning rate, Adam's betas and weight decay, and the seed (weights, split and shuffle). One
after another: what a sweep does per trial — compose the config with Hydra, ``train(cfg)`` in
this process with the CSV logger, write ``metrics.json`` (figures and wandb off). Population:
compose once and ``train_population`` with the members' values, writing each member's run dir.
The population side runs ``--repeats`` times (the median: a run of a few seconds on a shared VM
can land in a slow phase). Both sides must agree: the largest difference of a member's
test/loss is printed (float32 sums in another order: batched vs one-by-one products).

The shipped search spaces through ``mlplab-sweep`` itself (``space-toy``: ``hparams_search=toy``;
``space-tabular``: ``hparams_search=tabular data=breast_cancer``): ``n_trials=64`` with
``population=16`` against ``population=1``, Optuna (its journal file, the sweep's default;
``--space-storage sqlite``: an sqlite study), pruner and reports included (``--no-figures``:
without the two figures of every run and population), once each; printed
with the best value each found (the searches sample differently, so the best values are in the
same range, not equal).

On a CUDA machine the member-only cases also run on the GPU (``--device cuda``, or ``all``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import torch

from mlplab.config import QUIET, compose_config
from mlplab.population.engine import train_population
from mlplab.run.console import silence_known_noise
from mlplab.sweep.objective import TRIAL_DEFAULTS
from mlplab.train import train

COMMON = [
    *TRIAL_DEFAULTS,
    "logger=csv",
    "callbacks.learning_curves=null",
    "callbacks.decision_boundary=null",
    "threads=1",
    "optimizer=adam",
]
CASES = {
    "toy": (["data=moons", "model.hidden_sizes=[16,16]", "trainer.max_epochs=20"], 64),
    "breast_cancer": (["data=breast_cancer", "model.hidden_sizes=[64,64]"], 64),
    "flights": (["data=flights", "model.hidden_sizes=[256,256]", "data.batch_size=512"], 8),
}
SPACES = {"space-toy": ["hparams_search=toy"], "space-tabular": ["hparams_search=tabular"]}


def member_values(k: int) -> dict:
    """Config k of a case: a random-search point (seeded by k) plus seed k."""
    rng = np.random.default_rng(k)
    return {
        "seed": k,
        "optimizer.lr": float(f"{10 ** rng.uniform(-3.5, -1.5):.6g}"),
        "optimizer.betas": [float(rng.choice([0.8, 0.9, 0.95])), float(rng.choice([0.99, 0.999]))],
        "optimizer.weight_decay": float(rng.choice([0.0, 1e-4, 1e-3])),
    }


def _override(key: str, value) -> str:
    return f"{key}={value}".replace(" ", "")


def run_case(name: str, args, root: Path, device: str) -> dict:
    base, members = CASES[name]
    members = {"toy": args.toy_members, "breast_cancer": args.bc_members}.get(name, members)
    extra = [f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}"]
    if name == "flights":
        extra += [
            f"data.options.sample={args.flights_sample}",
            f"trainer.max_epochs={args.flights_epochs}",
        ]
    common = [*QUIET, *COMMON, *base, *extra]

    start = time.perf_counter()
    alone = []
    for k in range(members):
        out = root / f"{name}-{device}-alone" / f"trial_{k}"
        mine = [_override(key, v) for key, v in member_values(k).items()]
        metrics = train(compose_config("train", [f"paths.output_dir={out}", *common, *mine]))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        alone.append(metrics)
    sequential = time.perf_counter() - start

    times = []
    for rep in range(args.repeats):  # the median: one short run can land in a slow second
        out = root / f"{name}-{device}-population-{rep}"
        start = time.perf_counter()
        cfg = compose_config("train", [f"paths.output_dir={out}", *common])
        summary = train_population(cfg, [member_values(k) for k in range(members)], out)
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


def run_space(name: str, args, root: Path) -> dict:
    """A shipped search space through ``mlplab-sweep``: population=1 vs population=K."""
    from mlplab.sweep.cli import sweep

    n, k = args.space_trials, args.space_population
    base = [*SPACES[name], f"n_trials={n}", "trainer.accelerator=cpu", "study_name=bench"]
    if name == "space-tabular":
        base.append("data=breast_cancer")
    if args.no_figures:
        base += ["callbacks.learning_curves=null", "callbacks.decision_boundary=null"]

    def once(size: int) -> tuple[float, object]:
        where = root / f"{name}-{size}-{args.space_storage}"
        argv = [*base, f"sweep_dir={where}", f"population={size}"]
        if args.space_storage == "sqlite":  # the default is the sweep dir's journal file
            argv.append(f"storage=sqlite:///{where}.db")
        start = time.perf_counter()
        with redirect_stdout(StringIO()):
            study = sweep(argv)
        return time.perf_counter() - start, study

    sequential, one = once(1)
    population, many = once(k)
    return _timings(n, sequential, [population]) | {
        "population": k,
        "best_sequential": round(one.best_value, 4),
        "best_population": round(many.best_value, 4),
        "direction": one.direction.name.lower(),
        "complete_sequential": sum(t.state.name == "COMPLETE" for t in one.trials),
        "complete_population": sum(t.state.name == "COMPLETE" for t in many.trials),
    }


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
    parser.add_argument("--only", choices=[*CASES, *SPACES], action="append")
    parser.add_argument("--toy-members", type=int, default=64)
    parser.add_argument("--bc-members", type=int, default=64)
    parser.add_argument("--flights-sample", type=float, default=0.25)
    parser.add_argument("--flights-epochs", type=int, default=3)
    parser.add_argument("--space-trials", type=int, default=64)
    parser.add_argument("--space-population", type=int, default=16)
    parser.add_argument("--space-storage", choices=["journal", "sqlite"], default="journal")
    parser.add_argument("--no-figures", action="store_true", help="spaces without figures")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=5, help="population runs (median)")
    args = parser.parse_args()
    silence_known_noise()
    torch.set_num_threads(1)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else ["cpu"]
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="mlplab-bench-population-") as tmp:
        for device in devices:
            for name in args.only or [*CASES, *SPACES]:
                if name in SPACES and device != "cpu":
                    continue
                if name in SPACES:
                    r = run_space(name, args, Path(tmp))
                    detail = (
                        f"| best {r['direction'][:3]} {r['best_sequential']:.4f} one by one, "
                        f"{r['best_population']:.4f} population={r['population']}"
                    )
                else:
                    r = run_case(name, args, Path(tmp), device)
                    detail = (
                        f"| |test/loss diff| max {r['max_test_loss_diff']:.1e} "
                        f"median {r['median_test_loss_diff']:.1e}"
                    )
                results[f"{name}_{device}"] = r
                print(
                    f"{name:14s} {device:4s} {r['members']:3d} trials: one by one "
                    f"{r['sequential_s']:7.2f} s ({r['trials_per_hour_sequential']:>7} trials/h) "
                    f"| population {r['population_s']:6.2f} s "
                    f"({r['trials_per_hour_population']:>8} trials/h) | {r['speedup']:6.1f}x "
                    + detail,
                    flush=True,
                )
    line: dict = {}
    for key, r in results.items():
        name, device = key.rsplit("_", 1)
        line[f"speedup_{name}" if device == "cpu" else f"speedup_{name}_gpu"] = r["speedup"]
        if device == "cuda":
            line[f"members_per_second_{name}_gpu"] = round(r["members"] / r["population_s"], 2)
    line["cases"] = results
    print(json.dumps(line))


if __name__ == "__main__":
    main()
