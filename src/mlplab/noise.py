"""Silence exactly two known start-up messages; every other warning still shows."""

from __future__ import annotations

import logging
import warnings


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


_FILTER = _DropLitLoggerTip()


def silence_known_noise() -> None:
    # torch deprecated `isinstance(x, LeafSpec)`; Lightning still does it on every fit.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # Lightning advertises its cloud logger ("💡 Tip: ... litlogger ...") at every Trainer init.
    # addFilter ignores a filter already present, so calling this twice is harmless.
    logging.getLogger("lightning.fabric.utilities.rank_zero").addFilter(_FILTER)
