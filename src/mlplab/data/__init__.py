"""Datasets as DataFrame + column spec, and the one DataModule that serves them all."""

from mlplab.data.batches import BatchIterator
from mlplab.data.datamodule import TabularDataModule
from mlplab.data.preprocess import Preprocessor
from mlplab.data.sources import SOURCES, load_source
from mlplab.data.spec import TableSpec

__all__ = [
    "SOURCES",
    "BatchIterator",
    "Preprocessor",
    "TableSpec",
    "TabularDataModule",
    "load_source",
]
