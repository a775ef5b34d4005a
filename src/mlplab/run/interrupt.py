"""Ctrl-C while a run trains: the first press stops it at the end of the current epoch, as if
it had been asked for that many epochs (validation, checkpoints, figures, the test of the best
checkpoint, ``metrics.json``); the run then names the command that continues it and exits 130.
A second press stops at once: ``last.ckpt`` holds the last finished epoch.

``session()`` wraps one ``mlplab-train`` run (the handler is put back afterwards); the
``mlplab.run.fit.StopAtEpochEnd`` callback takes Ctrl-C over when training starts, so an
interrupt while the run starts up (imports, data) is still a plain ``KeyboardInterrupt``.
Lightning-free: the entry point imports it before Lightning.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CODE = 130  # what a shell reports for a process stopped by SIGINT


class StopNow(BaseException):
    """The second Ctrl-C: stop without finishing the epoch."""


_pressed = 0


def requested() -> bool:
    """True once Ctrl-C was pressed during this session's training."""
    return _pressed > 0


def _on_sigint(signum, frame) -> None:
    global _pressed
    _pressed += 1
    if _pressed > 1:
        raise StopNow
    print(
        "\ninterrupt: stopping at the end of this epoch (Ctrl-C again to stop now)",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def session() -> Iterator[None]:
    """One run's Ctrl-C handling: starts with none pressed; the process's handler is restored
    at the end."""
    global _pressed
    _pressed = 0
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, previous)


def take_over() -> None:
    """From now on Ctrl-C asks the run to stop at the end of its epoch (main thread only:
    elsewhere Python can't install a handler, and Ctrl-C stays a KeyboardInterrupt)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
