"""Datasets as DataFrame + column spec, and the one DataModule that serves them all.

Imported on first use (``mlplab.data.TabularDataModule`` is what configs name): the command
line checks the data's arguments and files before torch and Lightning are loaded."""

from importlib import import_module

_WHERE = {
    "BatchIterator": "mlplab.data.batches",
    "TabularDataModule": "mlplab.data.datamodule",
    "Preprocessor": "mlplab.data.preprocess",
    "SOURCES": "mlplab.data.sources",
    "load_source": "mlplab.data.sources",
    "TableSpec": "mlplab.data.spec",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'mlplab.data' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
