"""The lecture's networks: the from-scratch ``Dense`` layer, ``MLP`` and ``MLPModule``."""

from mlplab.models.dense import ACTIVATIONS, Dense
from mlplab.models.mlp import MLP
from mlplab.models.module import MLPModule

__all__ = ["ACTIVATIONS", "MLP", "Dense", "MLPModule"]
