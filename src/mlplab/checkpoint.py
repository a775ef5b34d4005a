"""Moved to :mod:`mlplab.run.checkpoint`; kept so existing imports keep working."""

from mlplab.run.checkpoint import load_checkpoint

__all__ = ["load_checkpoint"]
