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
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    # Lightning advertises its cloud logger ("💡 Tip: ... litlogger ...") at every Trainer init.
    # It goes through whichever of these two loggers was imported last; addFilter ignores a
    # filter already present, so calling this twice is harmless.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_FILTER)
