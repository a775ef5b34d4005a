"""The lecture's networks: the from-scratch ``Dense`` layer, ``MLP`` and ``MLPModule``.

Imported on first use (``mlplab.models.MLPModule`` is what configs name): the command line
checks a model's arguments (``models.arguments``) before torch and Lightning are loaded."""

from importlib import import_module

_WHERE = {
    "ACTIVATIONS": "mlplab.models.dense",
    "Dense": "mlplab.models.dense",
    "MLP": "mlplab.models.mlp",
    "MLPModule": "mlplab.models.module",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'mlplab.models' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
