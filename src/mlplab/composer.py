"""Compose many train configs fast: what a sweep and a population do for every trial.

``compose_config("train", overrides)`` runs Hydra's whole composition: ~110 ms a config on a
2-core CPU, as long as training a toy trial's tenth and longer than a 64-member population
spends on one member. Trials of one sweep differ in a few ``key=value`` overrides, so
``Composer`` lets Hydra compose once per distinct set of the overrides that change what is
composed (config groups ``optimizer=adam``, additions ``+key=…``, deletions, ``hydra.*``), keeps
that config pickled, and applies each run's plain values to a copy as Hydra applies them:
after composition, in order, with ``OmegaConf.update(merge=True)``, type-checked by the schema
(~3 ms a config). A run whose values don't apply that way (a new key, a typo, a wrong type)
is composed by Hydra itself, so it fails with Hydra's own error.
``tests/test_population.py::test_compose_runs_equals_composing_each_member`` and
``tests/test_sweep.py`` check that the configs are Hydra's.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mlplab.config import CONF_DIR, QUIET, compose_config
from mlplab.run.heap import heap_frozen

_NUMBER = re.compile(
    r"(?P<key>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)="
    r"(?:(?P<int>-?(?:0|[1-9][0-9]*))"
    r"|(?P<float>-?(?:(?:0|[1-9][0-9]*)\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|-?(?:0|[1-9][0-9]*)[eE][+-]?[0-9]+))",
    re.ASCII,
)
MEMO = 20_000  # parsed override lines kept (a sweep's trials bring a few new ones each)
BASES = 256  # composed bases kept (~10 KB each): one per set of group choices seen


class PickledBases:
    """What both fast composers keep (this ``Composer`` and the population launcher's
    ``SweepComposer``): each override line parsed once (``parse``), and each composed base
    pickled once and copied per config (``copy_of``), both bounded."""

    def __init__(self) -> None:
        self._parser = OverridesParser.create()
        self._parsed: dict[str, tuple[Override, bool, bool]] = {}  # line → parse(line)
        self._bases: dict[tuple, bytes] = {}

    def parse(self, line: str) -> tuple[Override, bool, bool]:
        """The line's ``Override`` (parsed once), whether it is a plain value (applied after
        Hydra), and whether Hydra applies it in command-line order with the plain values (a
        config override, not a group choice: Hydra's split, ``defaults_list.Overrides``)."""
        if line not in self._parsed:
            if len(self._parsed) > MEMO:
                self._parsed.clear()
            o = parse_override(self._parser, line)
            group = self.is_group(o.key_or_group)
            ordered = isinstance(o.value(), dict) or not group
            self._parsed[line] = (o, _plain_value(o) and not group, ordered)
        return self._parsed[line]

    def is_group(self, key: str) -> bool:
        """Whether ``key`` names a config group (its subclass knows where they are)."""
        raise NotImplementedError

    def copy_of(self, key: tuple, compose: Callable[[], DictConfig]) -> DictConfig:
        """A copy of the base ``key`` (``compose()`` makes it the first time)."""
        if key not in self._bases:
            if len(self._bases) >= BASES:  # a sweep over an added key: each trial a base
                self._bases.clear()
            self._bases[key] = pickle.dumps(compose())
        return pickle.loads(self._bases[key])  # a deep copy (OmegaConf pickles): 0.4 ms


def apply_values(cfg: DictConfig, overrides: Iterable[Override]) -> DictConfig:
    """Plain ``key=value`` overrides applied as Hydra applies them after composing: in order,
    merged (``OmegaConf.update(merge=True)``), checked by the schema."""
    for o in overrides:
        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
    return cfg


def copy_config(cfg: DictConfig) -> DictConfig:
    """``copy.deepcopy(cfg)`` of a root config (no parent): OmegaConf pickles, 2-6x faster
    (a task config ~0.4 ms instead of ~2.5 ms)."""
    return pickle.loads(pickle.dumps(cfg))


class Composer(PickledBases):
    """``composer(overrides)`` is ``compose_config(config_name, overrides)``, fast for many.

    ``shared``: lines every config of this composer has (``compose_runs``' common ones); they
    are composed into the base too (not applied again per config) unless another line of the
    same config sets the same key, which keeps Hydra's order."""

    def __init__(
        self,
        config_name: str = "train",
        config_dir: str | Path | None = None,
        return_hydra_config: bool = False,
    ) -> None:
        """``config_dir`` and ``return_hydra_config``: as ``compose_config``'s. With the hydra
        node, its per-run fields (``hydra.overrides.task``, ``hydra.job.override_dirname``)
        are the base's: what ``run.preflight`` checks doesn't read them."""
        super().__init__()
        self.config_name, self.config_dir = config_name, config_dir
        self.return_hydra_config = return_hydra_config
        # where config groups are: the user's folder first, as Hydra searches
        self._groups = [Path(d) for d in (config_dir, CONF_DIR) if d]

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """Hydra's whole composition of ``overrides``."""
        return compose_config(
            self.config_name,
            list(overrides),
            config_dir=self.config_dir,
            return_hydra_config=self.return_hydra_config,
        )

    def __call__(self, overrides: Sequence[str], shared: Iterable[str] = ()) -> DictConfig:
        parsed = [(line, *self.parse(line)) for line in overrides]
        shared = set(shared)
        own = {o.key_or_group for line, o, *_ in parsed if line not in shared}
        # (line, override, applied after Hydra): plain values, but shared ones go to the base
        parts = [
            (line, o, plain and (line not in shared or o.key_or_group in own), ordered)
            for line, o, plain, ordered in parsed
        ]
        if reordered([(o.key_or_group, after, ordered) for _, o, after, ordered in parts]):
            return self.compose(overrides)
        values = [o for _, o, after, _ in parts if after]
        base = tuple(line for line, _, after, _ in parts if not after)
        cfg = self.copy_of(base, lambda: self.compose(base))
        try:
            return apply_values(cfg, values)
        except OmegaConfBaseException:
            return self.compose(overrides)

    def is_group(self, key: str) -> bool:
        return any((root / key.replace(".", "/")).is_dir() for root in self._groups)


def reordered(lines: list[tuple[str, bool, bool]]) -> bool:
    """``(key, applied after Hydra, ordered)`` per line: whether a value applied after Hydra
    comes before a config override of the same key (or of a key inside it, or around it) that
    Hydra composes: Hydra applies that value first, the fast path last (then Hydra composes)."""
    for i, (key, after, _) in enumerate(lines):
        if after:
            for other, other_after, ordered in lines[i + 1 :]:
                if ordered and not other_after and _overlap(key, other):
                    return True
    return False


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


@heap_frozen()  # 64 configs' objects would set off full collections of torch's
def compose_runs(
    output_dir: str | Path, members: Sequence[Sequence[str]], quiet: bool = True
) -> list[DictConfig]:
    """``[compose_run(output_dir, *m) for m in members]`` with one ``Composer``: values every
    member sets are composed into the base once."""
    composer = Composer("train")
    head = [f"paths.output_dir={output_dir}", *(QUIET if quiet else ())]
    lines = [[*head, *member] for member in members]
    shared = set.intersection(*(set(m) for m in lines)) if lines else set()
    return [composer(overrides, shared) for overrides in lines]


def parse_override(parser: OverridesParser, line: str) -> Override:
    """``parser.parse_override(line)``; ``key=<a number>`` (most of a sweep's own overrides)
    without Hydra's ANTLR grammar (~0.3 ms a line): the same ``Override``
    (``test_number_overrides_parse_as_hydra_parses_them``)."""
    match = _NUMBER.fullmatch(line)
    if match is None:
        return parser.parse_override(line)
    number = int(match["int"]) if match["int"] is not None else float(match["float"])
    return Override(
        type=OverrideType.CHANGE,
        key_or_group=match["key"],
        value_type=ValueType.ELEMENT,
        _value=number,
        input_line=line,
    )


def _plain_value(override: Override) -> bool:
    """``key=value`` changing a config key (not ``hydra``'s); Hydra applies those last unless
    the key is a config group (the caller knows its groups)."""
    return (
        override.type == OverrideType.CHANGE
        and override.package is None
        and not override.is_sweep_override()
        and not override.key_or_group.startswith("hydra")
    )
