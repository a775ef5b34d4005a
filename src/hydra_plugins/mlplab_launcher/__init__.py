"""mlplab's Hydra launcher plugin: ``hydra/launcher=population`` (see population_launcher.py).

Hydra imports every module under the ``hydra_plugins`` namespace at start-up, so this package
stays cheap to import: no torch, no Lightning.
"""
