"""One exception type for bad user input, so entry points can print one clear line."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value is invalid. The message names the key, the value and what is allowed."""


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise `ConfigError("key=value is invalid: allowed")` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")
