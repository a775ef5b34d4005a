"""How many CPU threads torch uses for one run (``threads=`` in the train config).

Torch's intra-op pool defaults to every core. For the small MLPs here a step is a few tiny
matrix products: splitting them across threads costs more in synchronisation than it saves,
most of all on a busy machine (``scripts/bench_threads.py`` measures it). ``auto`` uses one
thread below ``SMALL_STEP`` multiply-adds per mini-batch and torch's default above it.
"""

from __future__ import annotations

import torch

from mlplab.errors import check

# Multiply-adds of one mini-batch forward pass (parameters × rows) below which one thread
# wins: from scripts/bench_threads.py on a 2-core CPU (see the README's speed section).
SMALL_STEP = 20_000_000


def choose_threads(setting, parameters: int, batch_rows: int) -> int | None:
    """The thread count for ``threads=setting`` (``"auto"``, an integer >= 1, or None): an int,
    or None for torch's default. ``parameters``: the model's; ``batch_rows``: per mini-batch."""
    if setting is None:
        return None
    if setting == "auto":
        return 1 if parameters * batch_rows < SMALL_STEP else None
    ok = isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1
    check(ok, "threads", setting, "'auto', an integer >= 1, or null (torch's default)")
    return setting


def apply_threads(setting, parameters: int, batch_rows: int) -> int:
    """Set torch's intra-op threads for this run; returns the count in use."""
    count = choose_threads(setting, parameters, batch_rows)
    if count is not None:
        torch.set_num_threads(count)
    return torch.get_num_threads()
