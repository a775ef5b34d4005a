"""mlplab: Lightning + Hydra research template for MLPs on toy and tabular data."""

__version__ = "0.1.0"
