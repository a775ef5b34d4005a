"""Errors a user can act on, so every entry point prints one clear line instead of a traceback.

- ``ConfigError``: a config value, key, file or checkpoint is wrong (exit code 2);
- ``DivergedError``: training produced a non-finite loss (exit code 3).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
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


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one ``ConfigError`` line, not its usage text."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see --help)")


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
def clean_exit() -> Iterator[None]:
    """In an entry point: an MlplabError (also one wrapped by Hydra or Lightning) becomes one
    ``error: ...`` line on stderr and its exit code (no traceback)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 — only our own errors are turned into a line
        cause = user_error(err)
        if cause is None:
            raise
        fail(cause)


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its class name if it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def import_target(target: str, failure: str) -> Any:
    """The object a ``_target_`` names (``my_model.LitMLP``), or a ConfigError: ``failure``
    (what could not be imported, for what), then the import's own reason (``import_reason``)."""
    try:
        return locate(target)
    except Exception as err:  # noqa: BLE001 — whatever the import raised, said in one line
        raise ConfigError(f"{failure}: {import_reason(err, target)}") from None


def locate(target: str) -> Any:
    """``module.attr[.attr...]`` → the object, importing the longest prefix that is a module;
    the import's own error if there is none (not Hydra's ``get_class``: its message hides the
    reason behind a line of its own, and it logs the failure on several more)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as err:  # not a module: a shorter prefix may be
            if err.name and (module == err.name or module.startswith(f"{err.name}.")):
                continue
            raise
        for attr in parts[i:]:
            found = getattr(found, attr)
        return found
    raise ModuleNotFoundError(f"No module named {parts[0]!r}", name=parts[0])


def import_reason(err: BaseException, target: str) -> str:
    """Why ``target`` could not be imported, in one line: the error the import raised (a
    module not on the path, a ``NameError`` in the user's file), and for a module of one's own
    where Python looks for it."""
    reason = f"{type(err).__name__}: {' '.join(str(err).split())}"
    top = target.split(".")[0]
    if isinstance(err, ModuleNotFoundError) and err.name == top:
        reason += (
            f" (a module of your own: run from the folder that holds {top}.py, or add that "
            "folder to PYTHONPATH)"
        )
    return reason
