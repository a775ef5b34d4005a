"""How fast ``mlplab-runs`` lists many runs: train one tiny real run (or take ``--from`` a run
dir), copy it ``--runs`` times as the jobs of multiruns (each copy with its own learning rate,
seed and metrics), then time ``mlplab-runs`` on them in a fresh process, ``--repeats`` times: the
listing, ``--group-by optimizer.lr`` (which imports pandas) and ``--json``. Prints the median
wall time and runs/second of each; the last printed line is one JSON object.

    python scripts/bench_runs.py [--runs 1000] [--repeats 5] [--from logs/train/<run>]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CASES = {
    "list": [],
    "--group-by optimizer.lr": ["--group-by", "optimizer.lr"],
    "--json": ["--json"],
}
JOBS_PER_MULTIRUN = 50


def real_run(folder: Path) -> Path:
    """One tiny real run dir, trained here."""
    args = ["data=moons", "trainer.max_epochs=1", "logger=csv", "run_name=template"]
    subprocess.run([BIN / "mlplab-train", *args], cwd=folder, capture_output=True, check=True)
    return folder / "logs" / "train" / "template"


def fabricate(template: Path, logs: Path, n: int, seed: int = 0) -> None:
    """``n`` copies of ``template`` as multirun jobs ``logs/train/multirun/m<k>/<job>``, each
    with its own ``optimizer.lr``, ``seed`` and final metrics."""
    rng = random.Random(seed)
    config = (template / "config.yaml").read_text()
    metrics = json.loads((template / "metrics.json").read_text())
    for i in range(n):
        job = (
            logs / "train" / "multirun" / f"m{i // JOBS_PER_MULTIRUN}" / str(i % JOBS_PER_MULTIRUN)
        )
        shutil.copytree(template, job)
        lr = rng.choice([0.1, 0.01, 0.001])
        text = re.sub(r"(?m)^  lr: .*$", f"  lr: {lr}", config)
        text = re.sub(r"(?m)^seed: .*$", f"seed: {i}", text)
        (job / "config.yaml").write_text(text)
        values = {k: v * rng.uniform(0.95, 1.0) for k, v in metrics.items()}
        (job / "metrics.json").write_text(json.dumps(values, indent=2) + "\n")


def timed(args: list[str], folder: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run([BIN / "mlplab-runs", *args], cwd=folder, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"mlplab-runs {' '.join(args)} failed: {out.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--from", dest="template", type=Path, help="a run dir to copy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        template = args.template or real_run(folder)
        fabricate(template, folder / "bench" / "logs", args.runs)
        where = folder / "bench"
        times: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(args.repeats):  # interleaved: a busy moment hits every case alike
            for name, extra in CASES.items():
                times[name].append(timed(extra, where))
    result = {"runs": args.runs, "repeats": args.repeats}
    print(f"{args.runs} run dirs, median of {args.repeats} (fresh process each):")
    for name, t in times.items():
        median = statistics.median(t)
        result[name] = {"seconds": round(median, 3), "runs_per_second": round(args.runs / median)}
        print(f"  mlplab-runs {name:<26} {median:6.2f} s  {args.runs / median:8.0f} runs/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
