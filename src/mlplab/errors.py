"""Errors a user can act on, so every entry point prints one clear line instead of a traceback.

- ``ConfigError``: a config value, key, file or checkpoint is wrong (exit code 2);
- ``DivergedError``: training produced a non-finite loss (exit code 3).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class MlplabError(Exception):
    """An error whose message is the whole story: printed as ``error: <message>``."""

    exit_code = 2


class ConfigError(MlplabError, ValueError):
    """A config value is invalid. The message names the key, the value and what is allowed."""


class DivergedError(MlplabError, FloatingPointError):
    """The training loss (or the weights) became non-finite; the message says where."""

    exit_code = 3


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise `ConfigError("key=value is invalid: allowed")` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def user_error(err: BaseException | None) -> MlplabError | None:
    """The MlplabError that caused ``err`` (Hydra and Lightning wrap exceptions), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MlplabError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def fail(err: MlplabError) -> None:
    """Print ``error: <message>`` (one line) on stderr and exit with the error's code."""
    message = " ".join(str(err).split("\n"))
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(err.exit_code)


@contextmanager
def clean_exit(cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """In an entry point: an MlplabError (also one wrapped by Hydra or Lightning) becomes one
    ``error: ...`` line on stderr and its exit code (no traceback); ``cleanup`` runs first
    (e.g. remove a half-made run dir)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 — only our own errors are turned into a line
        cause = user_error(err)
        if cause is None:
            raise
        if cleanup is not None:
            cleanup()
        fail(cause)
