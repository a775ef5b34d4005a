"""Keep Python's cyclic garbage collector off the objects that live for the whole process.

Importing torch and Lightning leaves ~400k objects that are never garbage. Python's full
(generation 2) collection walks all of them: ~0.2 s on a 2-core CPU, as much as training a
64-member toy population for a quarter of its epochs. It runs whenever enough objects have
survived since the last one (a population of 64 configs builds that many), and every trial of
a sweep calls one on purpose (``gc_after_trial``, so trials don't pile up memory).

``freeze_startup_heap()`` collects once, then moves everything alive into the permanent
generation (``gc.freeze``); later collections walk only what the run itself made (measured:
a full collection 166 ms before, 0.01 ms after). It acts once per process, as early as the
heavy imports are done (the sweep before its first trial, a population before it trains):
frozen objects are still freed by reference counting, only a cycle among them is never
collected, and what is frozen that early lives for the whole process anyway.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> None:
    """Collect, then freeze everything alive now out of the collector's reach (once)."""
    global _frozen
    if _frozen:
        return
    gc.collect()
    gc.freeze()
    _frozen = True
