"""``mlplab-train -m hydra/launcher=population ...``: a multirun's jobs trained as populations.

Hydra only instantiates launchers whose class lives in the ``hydra_plugins`` namespace, so the
class is here; what it does is in ``mlplab.population.launcher`` (imported when a sweep
launches: Hydra imports this module on every start-up).
"""

# No `from __future__ import annotations`: Hydra runs this module without registering it in
# sys.modules, and dataclasses then can't read string annotations.
from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class PopulationLauncherConf:
    """``hydra.launcher`` of ``hydra/launcher=population`` (conf/hydra/launcher/population.yaml)."""

    _target_: str = "hydra_plugins.mlplab_launcher.population_launcher.PopulationLauncher"
    # At most this many jobs in one population (null: every stackable job of the sweep);
    # a larger group trains as several populations, one after another, to bound memory.
    max_members: int | None = None


ConfigStore.instance().store(
    group="hydra/launcher",
    name="population_schema",
    node=PopulationLauncherConf,
    provider="mlplab",
)


class PopulationLauncher(Launcher):
    """Groups the jobs of each launch into populations (``mlplab.population.launcher``)."""

    def __init__(self, max_members: int | None = None) -> None:
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.populations = 0  # populations trained so far (names population_<i> dirs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from mlplab.population.sweep_compose import install

        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        # Before the sweeper checks the batch: it composes each job through this same loader
        # (hydra_context is shared), then launch() composes them again.
        install(hydra_context.config_loader)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from mlplab.population.launcher import launch

        return launch(self, job_overrides, initial_job_idx)
