"""``mlplab-train cv=K``: K-fold cross-validation trained as one population.

Member k is the run ``mlplab-train data.cv_folds=K data.cv_fold=k`` makes: it trains on the
train+val rows outside fold k, validates on fold k and tests on the untouched test split
(``mlplab.data.folds``). All K train at once (``mlplab.population.run.train_population``); the
command reports the mean ± std of every metric over the folds: ``val/…`` (the held-out folds)
is the cross-validation estimate, ``test/…`` the K fold models scored on the test split.

    mlplab-train data=moons cv=5            # logs/train/<run>/member_000 … member_004
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig

from mlplab.errors import ConfigError, check


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_cv(cfg: DictConfig) -> tuple[int, int]:
    """Raise a ConfigError naming the key unless ``cfg`` (with ``cv=K``) can be cross-validated;
    else return (rows per fold, left-over rows in every training split). Reads the data, trains
    nothing, writes nothing."""
    from mlplab.data.datamodule import split_indices
    from mlplab.data.folds import cv_split
    from mlplab.data.sources import load_source
    from mlplab.run.build import build_datamodule

    k = cfg.cv
    check(_is_int(k) and k >= 2, "cv", k, "an integer >= 2 (the number of folds)")
    if cfg.get("seeds") is not None:
        raise ConfigError(
            f"cv={k} and seeds={cfg.seeds} can't be combined: each seed has its own split, so "
            "the seeds would not share a test split or folds; run cv=K once per seed=S instead"
        )
    if cfg.get("ckpt_path"):
        from mlplab.population.resume import refuse_ckpt_path

        refuse_ckpt_path(cfg.ckpt_path, "cv=")
    data = cfg.data
    check("cv_folds" in data, "cv", k, "needs data with cv_folds (mlplab.data.TabularDataModule)")
    for key in ("cv_folds", "cv_fold"):
        value = data.get(key)
        check(value is None, f"data.{key}", value, f"null with cv={k}: cv sets it per member")
    hp = build_datamodule(cv_members(cfg)[0]).hparams  # the DataModule checks its arguments
    df, spec = load_source(hp.source, **(hp.options or {}))
    parts = split_indices(df, spec, hp.val_fraction, hp.test_fraction, hp.seed)
    folds = [cv_split(df, spec, parts, k, i, hp.seed, key="cv") for i in range(k)]
    if hp.balance_classes and spec.task != "regression":
        target = df[spec.target]
        counts = {tuple(target.iloc[f["train"]].value_counts().sort_index()) for f in folds}
        check(
            len(counts) == 1,
            "data.balance_classes",
            True,
            f"not offered with cv={k} here: the folds' training rows differ by a row in some "
            "class's count, so the members' class weights differ and can't be stacked; leave "
            f"it false, or train each fold alone (data.cv_folds={k} data.cv_fold=0 ...)",
        )
    pool = len(folds[0]["train"]) + len(folds[0]["val"])  # the train+val rows
    return pool // k, pool % k


def cv_members(cfg: DictConfig) -> list[DictConfig]:
    """The K configs of ``cfg``'s ``cv=K``: ``data.cv_folds=K data.cv_fold=k``, ``cv=null``."""
    members = []
    for fold in range(cfg.cv):
        member = copy.deepcopy(cfg)
        member.cv = None
        member.data.cv_folds = cfg.cv
        member.data.cv_fold = fold
        members.append(member)
    return members


def train_cv(cfg: DictConfig) -> dict[str, float]:
    """``cv=K``: the K folds as one population, each a run dir inside this one. Returns the
    mean and std (``<metric>.std``) of every metric over the folds that trained. ``resume=auto``
    continues the population from its checkpoint (``population.resume``); folds that don't fit
    in memory at once train in chunks (``population.chunks``)."""
    from mlplab.population.chunks import train_in_chunks
    from mlplab.population.run import mean_and_std

    held_out, leftover = check_cv(cfg)
    # rerun=<this dir> cross-validates again (run info written once resume is checked)
    resume = cfg.get("resume") == "auto"
    summary = train_in_chunks(cv_members(cfg), cfg.paths.output_dir, resume=resume, run_info=cfg)
    failed = summary[summary.status == "diverged"]
    rows = "row" if leftover == 1 else "rows"
    extra = f", {leftover} left-over {rows} held out by none" if leftover else ""
    print(
        f"cross-validation: {len(summary) - len(failed)} of {len(summary)} folds trained "
        f"({held_out} held-out rows each{extra}; test: the same rows for every fold)",
        flush=True,
    )
    for _, row in failed.iterrows():
        print(f"  fold {row.member}: {row.error}", flush=True)
    return mean_and_std(summary)
