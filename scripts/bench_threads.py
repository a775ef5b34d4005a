"""How many intra-op threads should torch use for mlplab's models? Side by side, one run.

Trains the same config with ``threads=1``, ``2`` and torch's default (all cores), on an idle
machine and with another process keeping one core busy (``--busy``, the normal state of a
shared box or a laptop), for a small, a medium and a large MLP, and prints seconds and ratios:

    .venv/bin/python scripts/bench_threads.py [--repeats 3] [--no-busy]

``threads=auto`` (the default) uses one thread for models whose step is too small for torch's
parallel kernels to pay for their synchronisation (see ``mlplab.run.threads``); this script is
where that threshold comes from.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time

CASES = {  # name → train overrides
    "small (default run: pass_fail [16,16], batch 32)": [],
    "medium (synthetic 20→[256,256], batch 512)": [
        "data=synthetic",
        "data.options.n_samples=50000",
        "data.batch_size=512",
        "model.hidden_sizes=[256,256]",
        "trainer.max_epochs=3",
    ],
    "large (synthetic 20→[1024,1024], batch 1024)": [
        "data=synthetic",
        "data.options.n_samples=50000",
        "data.batch_size=1024",
        "model.hidden_sizes=[1024,1024]",
        "trainer.max_epochs=2",
    ],
}
THREADS = ("1", "2", "all")


def _spin(stop: mp.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _run(overrides: list[str], threads: str, root: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MLPLAB_RUN_ID")}
    cmd = [
        sys.executable,
        "-m",
        "mlplab.train",
        *overrides,
        f"threads={'null' if threads == 'all' else threads}",
        "logger=csv",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "test=false",
        f"paths.log_dir={root}",
    ]
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-busy", action="store_true", help="skip the busy-machine rows")
    args = parser.parse_args()
    import tempfile

    loads = [False] if args.no_busy else [False, True]
    print(f"cores: {os.cpu_count()}; best of {args.repeats} runs, whole command (s)")
    for name, overrides in CASES.items():
        for busy in loads:
            stop = mp.Event()
            spinner = mp.Process(target=_spin, args=(stop,)) if busy else None
            if spinner:
                spinner.start()
            try:
                with tempfile.TemporaryDirectory() as root:
                    best = {
                        t: min(_run(overrides, t, root) for _ in range(args.repeats))
                        for t in THREADS
                    }
            finally:
                if spinner:
                    stop.set()
                    spinner.join()
            ratios = "  ".join(
                f"{t}: {best[t]:6.2f}s ({best[t] / best['1']:.2f}×)" for t in THREADS
            )
            print(f"{name:<48} {'busy' if busy else 'idle'}  {ratios}")


if __name__ == "__main__":
    main()
