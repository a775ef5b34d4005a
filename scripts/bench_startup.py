"""How fast a mistake answers, side by side with importing Lightning: each command in a fresh
process, ``--repeats`` times, the median wall time and its ratio to ``import
lightning.pytorch`` alone. The last printed line is one JSON object.

    python scripts/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

CASES = {
    "import lightning.pytorch": ["-c", "import lightning.pytorch"],
    "optimizer.lr=-0.1": ["-m", "mlplab.train", "optimizer.lr=-0.1"],
    "a missing CSV file": [
        "-m",
        "mlplab.train",
        "data=csv",
        "data.options.path=missing.csv",
        "data.options.target=y",
    ],
    "trainer.precision=8": ["-m", "mlplab.train", "trainer.precision=8"],
    "max_epochs=3 (did you mean)": ["-m", "mlplab.train", "max_epochs=3"],
    "mlplab-train --help": ["-m", "mlplab.train", "--help"],
}


def timed(args: list[str], folder: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=folder, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    with tempfile.TemporaryDirectory() as folder:
        times = {name: [] for name in CASES}
        for _ in range(repeats):  # interleaved: a busy moment hits every case alike
            for name, args in CASES.items():
                times[name].append(timed(args, folder))
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["import lightning.pytorch"]
    print(f"{'case':32s} {'median s':>9s} {'× import lightning.pytorch':>27s}")
    for name, median in medians.items():
        print(f"{name:32s} {median:9.2f} {median / base:27.2f}")
    print(json.dumps({"repeats": repeats, "median_s": medians}))


if __name__ == "__main__":
    main()
