"""One exception type for bad user input, so entry points can print one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class ConfigError(ValueError):
    """A config value is invalid. The message names the key, the value and what is allowed."""


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise `ConfigError("key=value is invalid: allowed")` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


@contextmanager
def clean_exit(cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """In an entry point: a ConfigError becomes one ``error: ...`` line on stderr and exit
    code 2 (no traceback); ``cleanup`` runs first (e.g. remove a half-made run dir)."""
    try:
        yield
    except ConfigError as err:
        if cleanup is not None:
            cleanup()
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
