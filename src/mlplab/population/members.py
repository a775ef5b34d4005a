"""What the members of one population may differ in: the one place that says so.

A population is one composed config plus a table of member values (``[{"seed": 42}, {"seed":
43}]`` for ``seeds=2``); what follows a member value by interpolation follows it. Members share
the architecture, the data and its batch size, the optimizer type and the trainer. They may
differ in

- ``seed`` (weights, split and shuffle), ``data.seed``, the cross-validation fold;
- every number of the optimizer (``optimizer.lr``, ``optimizer.betas``, ...), not its type or
  flags (``nesterov``, ``centered``); the scheduler, its type too (not what it monitors);
- ``model.activation``, ``model.dropout``, ``model.l1``, ``callbacks.early_stopping.patience``
  and ``trainer.gradient_clip_val``.

``is_member_key`` answers for one key; the population engine, the sweep (which samples the
other keys once per population) and the checks below all ask it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from omegaconf import DictConfig, OmegaConf

from mlplab.config import derived
from mlplab.errors import ConfigError, check
from mlplab.run.rundir import POPULATION_CHECKPOINT

MEMBER_KEYS = (  # prefixes of dotted keys
    "seed",
    "data.seed",
    "data.cv_fold",
    "optimizer.",
    "scheduler.",
    "model.activation",
    "model.dropout",
    "model.l1",
    "callbacks.early_stopping.patience",
    "trainer.gradient_clip_val",
)
SHARED = (  # inside those prefixes, but one per population: they change the formula
    "optimizer._target_",
    "optimizer.nesterov",
    "optimizer.centered",
    "optimizer.amsgrad",
    "optimizer.maximize",
    "scheduler.monitor",
)
# Members that differ only in these are replicas of one config (seeds=, cv=): their mean is
# that config's result, and their mean decision boundary its figure.
REPLICA_KEYS = ("seed", "data.seed", "data.cv_fold", "data.cv_folds")
POPULATION_KEYS = ("seeds", "cv")  # a population's own keys: null in its members' configs
# Members of one population at most: it trains in chunks that fit in memory, but its table of
# members, its per-epoch history and its run dirs grow with it.
MAX_MEMBERS = 10_000


def is_member_key(key: str) -> bool:
    """Whether members of one population may have different values of dotted ``key``."""
    if any(key == s or key.startswith(f"{s}.") for s in SHARED):
        return False
    return any(
        key == prefix or key.startswith(prefix if prefix.endswith(".") else f"{prefix}.")
        for prefix in MEMBER_KEYS
    )


def are_replicas(keys: Iterable[str]) -> bool:
    """Whether members that differ in ``keys`` are replicas of one config."""
    return all(key in REPLICA_KEYS for key in keys)


def check_members(cfg: DictConfig, members: list[Mapping]) -> list[str]:
    """The keys whose values differ between the members; a ConfigError naming the first one
    they can't differ in, or a key that follows one of them by interpolation
    (``model.hidden_sizes: [${seed}]``). A key every member sets to one value is no
    difference: it is that population's setting (``data.cv_folds`` of ``cv=K``)."""
    check(len(members) >= 1, "population", len(members), "at least one member")
    keys = sorted({key for member in members for key in member})
    missing = object()
    varying = [k for k in keys if len({repr(m.get(k, missing)) for m in members}) > 1]
    for key in varying:
        if not is_member_key(key):
            raise ConfigError(
                f"population members differ in {key}, which can't be stacked: members share "
                "the architecture, data, batch size and optimizer type (train them as separate "
                "populations)"
            )
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key in derived(raw, varying):
        if not is_member_key(key):
            source = next((k for k in varying if key in derived(raw, [k])), varying[0])
            raise ConfigError(
                f"{key} follows {source} by interpolation, and population "
                "members can't differ in it (it would give them different architectures or "
                "data): set it to a value"
            )
    return varying


def _check_count(key: str, value, low: int, what: str, most: str) -> None:
    """``key``'s value: an integer from ``low`` to MAX_MEMBERS (the number of ``what``)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    check(ok, key, value, f"an integer >= {low} (the number of {what})")
    check(value <= MAX_MEMBERS, key, value, f"at most {MAX_MEMBERS} ({most})")


def check_population_args(cfg: DictConfig) -> None:
    """``cfg``'s ``seeds=``/``cv=`` and what they rule out, checked without the data: a
    ConfigError naming the first bad key (``check_folds`` tells if the data parts into the
    folds)."""
    n, k = cfg.get("seeds"), cfg.get("cv")
    if n is not None:
        _check_count("seeds", n, 1, "seeds trained as one population", "split them into runs")
    if k is not None:
        _check_count("cv", k, 2, "folds", "folds")
        if n is not None:
            raise ConfigError(
                f"cv={k} and seeds={n} can't be combined: each seed has its own split, so the "
                "seeds would not share a test split or folds; run cv=K once per seed=S instead"
            )
    if n is None and k is None:
        return
    which = f"cv={k}" if k is not None else f"seeds={n}"
    check(
        not cfg.get("ckpt_path"),
        "ckpt_path",
        cfg.get("ckpt_path"),
        f"not set with {which}: a population continues from its own checkpoint "
        f"({POPULATION_CHECKPOINT} in its dir), add resume=auto instead",
    )
    if k is not None:
        data = cfg.data
        allowed = "needs data with cv_folds (mlplab.data.TabularDataModule)"
        check("cv_folds" in data, "cv", k, allowed)
        for key in ("cv_folds", "cv_fold"):
            value = data.get(key)
            check(value is None, f"data.{key}", value, f"null with cv={k}: cv sets it per member")


def population_members(cfg: DictConfig) -> list[dict] | None:
    """The member table of ``cfg``'s ``cv=K`` (folds ``0 … K−1`` of ``data.cv_folds=K``) or
    ``seeds=N`` (seeds ``seed … seed+N−1``); None: a single run."""
    check_population_args(cfg)
    if cfg.get("cv") is not None:
        from mlplab.data.splits import check_folds

        check_folds(cfg.data, cfg.cv)  # too many folds for the rows: said before any build
        return [{"data.cv_folds": cfg.cv, "data.cv_fold": fold} for fold in range(cfg.cv)]
    if cfg.get("seeds") is not None:
        return [{"seed": cfg.seed + i} for i in range(cfg.seeds)]
    return None


def shared_params(params: Iterable[str]) -> list[str]:
    """Of a search space's parameters, those a population samples once for all its members."""
    return [key for key in params if not is_member_key(key)]
