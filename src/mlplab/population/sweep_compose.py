"""Compose a multirun's jobs fast: Hydra's ``load_sweep_config``, once per kind of job.

Hydra composes every job of a multirun twice, ~110 ms each on a 2-core CPU: the sweeper
checks the batch (``Sweeper.validate_batch_is_legal``), then the launcher composes each job
again. A 64-job grid spent ~14 s there before anything trained. Jobs of a grid differ in a
few ``key=value`` lines, so ``SweepComposer`` lets Hydra compose once per distinct set of the
lines that change what is composed (``mlplab.composer``'s rule: config groups, ``+``/``++``/
``~``, packages, ``hydra.*``), keeps that config pickled, and makes each job's config from a
copy as ``ConfigLoaderImpl._load_configuration_impl`` would: the plain values applied after
composition, in order, with ``OmegaConf.update(merge=True)``; then what Hydra's node says about
the job's own lines (``hydra.overrides.task``, ``hydra.job.override_dirname``); then the
master's resolver cache, as ``load_sweep_config`` copies it. Everything else in the config
(choices, config sources, cwd, env) depends only on what Hydra composed.

Whatever this doesn't do exactly as Hydra does is composed by Hydra itself, so its errors
are Hydra's own: a value that doesn't apply (typo, wrong type), a line that doesn't parse, a
plain value followed by a line that changes the same key (Hydra applies them in command-line
order; here the later line would be in the base, applied first), ``hydra.searchpath`` (more
config groups than the loader's repository knows). ``install`` puts it on one run's config
loader, from ``PopulationLauncher.setup``: the sweeper and the launcher share that loader
(``HydraContext``), nothing else sees it. ``tests/test_population_launcher.py`` checks each
job's whole config (hydra node included) against Hydra's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from hydra._internal.config_loader_impl import get_overrides_dirname
from omegaconf import DictConfig, OmegaConf

from mlplab.composer import PickledBases, apply_values, reordered


class SweepComposer(PickledBases):
    """``composer(master_config, sweep_overrides)`` is the wrapped loader's
    ``load_sweep_config(master_config, sweep_overrides)``: the same config, fast for many."""

    def __init__(self, loader) -> None:
        super().__init__()
        self.hydra_load: Callable[..., DictConfig] = loader.load_sweep_config
        self.repository = loader.repository  # the config groups Hydra composes from
        self.composed = 0  # how many configs Hydra composed (for tests and benchmarks)

    def __call__(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> DictConfig:
        try:
            cfg = self._fast(master_config, list(sweep_overrides))
        except Exception:  # noqa: BLE001 — Hydra composes it and raises its own error
            cfg = None
        if cfg is None:
            self.composed += 1
            cfg = self.hydra_load(master_config, list(sweep_overrides))
        return cfg

    def _fast(self, master: DictConfig, sweep: list[str]) -> DictConfig | None:
        """The job's config from its base's copy, or None where only Hydra composes it."""
        hydra_lines = list(OmegaConf.to_container(master.hydra.overrides.hydra))
        parsed = [self.parse(line) for line in [*hydra_lines, *sweep]]
        if master.hydra.searchpath or any(o.key_or_group == "hydra.searchpath" for o, *_ in parsed):
            return None
        if reordered([(o.key_or_group, plain, ordered) for o, plain, ordered in parsed]):
            return None
        values = [o for o, plain, _ in parsed if plain]
        base = [line for line in sweep if not self.parse(line)[1]]
        key = (master.hydra.job.config_name, os.getcwd(), tuple(hydra_lines), tuple(base))
        cfg = apply_values(self.copy_of(key, lambda: self._compose(master, base)), values)
        task = [o for o, *_ in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=task,
            kv_sep=dirname.kv_sep,
            item_sep=dirname.item_sep,
            exclude_keys=dirname.exclude_keys,
        )
        OmegaConf.copy_cache(from_config=master, to_config=cfg)
        return cfg

    def _compose(self, master: DictConfig, base: list[str]) -> DictConfig:
        self.composed += 1
        return self.hydra_load(master, base)

    def is_group(self, key: str) -> bool:
        return self.repository.group_exists(key)


def install(loader) -> None:
    """Make ``loader.load_sweep_config`` a ``SweepComposer`` (this loader only; once)."""
    if isinstance(loader.load_sweep_config, SweepComposer) or not hasattr(loader, "repository"):
        return
    loader.load_sweep_config = SweepComposer(loader)
