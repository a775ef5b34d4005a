"""How rows are split: the seeded train/val/test split (``split_indices``, stratified by class
for classification), and K-fold cross-validation over its train+val rows (the test rows stay).

    rows ─► split_indices ─► train | val | test        (test: the rows a run without CV tests on)
         ─► pool = train ∪ val (N rows) ─► K folds of N // K rows + N mod K left-over rows
         ─► fold k's run: val = fold k, train = every other pool row (left-overs included)

``mlplab-train data.cv_folds=K data.cv_fold=k`` is fold k's run; ``mlplab-train cv=K`` trains
all K folds as one population (``mlplab.population``).

Why left-over rows: a population stacks its members' splits into one tensor, so every member
needs a train split of the same size and a val split of the same size. N rows only part into
K equal folds when K divides N; the N mod K rows the seeded shuffle sets aside (a share of each
class, like the folds) are held out by no fold and are in every member's training rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlplab.data.spec import SPLITS, TableSpec
from mlplab.errors import check


def _allocate(total: int, counts: np.ndarray, cap: np.ndarray | None = None) -> np.ndarray:
    """Split ``total`` rows across groups in proportion to ``counts`` (largest remainder, so
    the shares add up to ``total``); a group never gets more than its ``cap``."""
    raw = counts * total / counts.sum()
    cap = np.full(len(counts), total) if cap is None else cap
    share = np.minimum(np.floor(raw).astype(int), cap)
    order = np.argsort(share - raw, kind="stable")
    turn = 0
    while share.sum() < total:
        c = order[turn % len(order)]
        if share[c] < cap[c]:
            share[c] += 1
        turn += 1
    return share


def split_indices(
    df: pd.DataFrame, spec: TableSpec, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Seeded train/val/test row indices, stratified by class for classification tasks.

    Val and test get ``round(n · fraction)`` rows each, shared out across classes in
    proportion to their size; train gets the rest.
    """
    rng = np.random.default_rng(seed)
    if spec.task == "regression":
        groups = [np.arange(len(df))]
    else:
        codes = pd.factorize(df[spec.target], sort=True)[0]
        groups = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    counts = np.array([len(g) for g in groups])
    n_val = _allocate(round(len(df) * val_fraction), counts)
    n_test = _allocate(round(len(df) * test_fraction), counts)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for rows, v, t in zip(groups, n_val, n_test, strict=True):
        rows = rng.permutation(rows)
        parts["val"].append(rows[:v])
        parts["test"].append(rows[v : v + t])
        parts["train"].append(rows[v + t :])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_fraction(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


def check_data_args(batch_size, val_fraction, test_fraction, eval_batch_size) -> None:
    """The DataModule's batch sizes and split fractions."""
    ok_batch = batch_size == "full" or (_is_int(batch_size) and batch_size >= 1)
    check(ok_batch, "data.batch_size", batch_size, "an integer >= 1 or 'full'")
    check(_is_fraction(val_fraction), "data.val_fraction", val_fraction, "must be in (0, 1)")
    check(_is_fraction(test_fraction), "data.test_fraction", test_fraction, "must be in (0, 1)")
    total, key = val_fraction + test_fraction, "data.val_fraction + data.test_fraction"
    check(total < 1, key, total, "must be < 1 to leave rows for training")
    ok_eval = _is_int(eval_batch_size) and eval_batch_size >= 1
    check(ok_eval, "data.eval_batch_size", eval_batch_size, "an integer >= 1")


def check_cv_args(cv_folds, cv_fold) -> None:
    """The DataModule's ``cv_folds``/``cv_fold`` pair: both null, or K ≥ 2 and k in 0..K−1."""
    if cv_folds is None:
        why = "needs data.cv_folds (the number of folds) too; or train every fold with cv=K"
        check(cv_fold is None, "data.cv_fold", cv_fold, why)
        return
    allowed = "an integer >= 2 (the number of folds), or null for no cross-validation"
    check(_is_int(cv_folds) and cv_folds >= 2, "data.cv_folds", cv_folds, allowed)
    allowed = (
        f"the held-out fold, an integer in 0..{cv_folds - 1} when data.cv_folds={cv_folds} "
        "(cv=K trains every fold)"
    )
    check(_is_int(cv_fold) and 0 <= cv_fold < cv_folds, "data.cv_fold", cv_fold, allowed)


def assign_folds(codes: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0 … K−1) of each row, or −1 for a left-over row. Stratified by ``codes``.

    Each class's rows are shuffled (seeded by ``(seed, K)``); the first of them are the class's
    share of the N mod K left-overs, the rest are dealt out in turn, class after class, to
    folds 0, 1, …, K−1, 0, 1, … So every fold gets exactly N // K rows, and ⌊m/K⌋ or ⌈m/K⌉ of
    a class that has m rows in the folds. ``codes``: each row's class (0 … C−1, all 0 for
    regression), every class with at least K rows.
    """
    rng = np.random.default_rng([seed, folds])
    counts = np.bincount(codes)
    # each class's share of the left-overs, never so many that the class misses a fold: every
    # class has ≥ K rows, so its spare rows (N − C·K ≥ N mod K) always cover them
    extra = _allocate(len(codes) % folds, counts, cap=counts - folds)
    dealt = [rng.permutation(np.flatnonzero(codes == c))[n:] for c, n in enumerate(extra)]
    order = np.concatenate(dealt)  # (K · (N // K),)
    fold = np.full(len(codes), -1)
    fold[order] = np.arange(len(order)) % folds
    return fold


def _fold_pool(df: pd.DataFrame, spec: TableSpec, parts: dict, folds: int, key: str):
    """The train+val rows that K folds part (sorted), or a ConfigError naming ``key`` for data
    with its own split column or too few rows (of the smallest class) for K folds."""
    why = (
        f"this data splits its rows by its own column {spec.split_by!r} (flights: by date, so "
        "val and test come after train); shuffled folds would undo that, so cross-validation "
        "is not offered for it"
    )
    check(not spec.split_by, key, folds, why)
    pool = np.sort(np.concatenate([parts["train"], parts["val"]]))
    n, values, where = len(pool), df[spec.target].iloc[pool], "outside the test split"
    if spec.task == "regression":  # R² is undefined on one row
        why = (
            f"{n} rows {where} make folds of {n // folds}; regression metrics (R²) need at "
            f"least 2 rows per fold: at most {n // 2} folds"
        )
        check(n // folds >= 2, key, folds, why)
        return pool
    counts = values.value_counts()
    smallest = counts.index.tolist()[int(np.argmin(counts.to_numpy()))]  # a Python value
    why = (
        f"class {smallest!r} of {spec.target!r} has {counts.min()} rows {where} and stratified "
        f"folds hold out at least one row of every class: at most {counts.min()} folds"
    )
    check(counts.min() >= folds, key, folds, why)
    return pool


def cv_split(
    df: pd.DataFrame,
    spec: TableSpec,
    parts: dict[str, np.ndarray],
    folds: int,
    fold: int,
    seed: int,
    key: str = "data.cv_folds",
) -> dict[str, np.ndarray]:
    """Fold ``fold``'s train/val/test row indices: the train and val rows of ``parts``
    (``split_indices``' result) re-split into ``folds`` folds, fold ``fold`` held out as val,
    the test rows kept. ``key``: how the user spelt K (``data.cv_folds`` or ``cv``)."""
    pool = _fold_pool(df, spec, parts, folds, key)
    if spec.task == "regression":
        codes = np.zeros(len(pool), dtype=int)
    else:
        codes = pd.factorize(df[spec.target].iloc[pool], sort=True)[0]
    assigned = assign_folds(codes, folds, seed)
    return {"train": pool[assigned != fold], "val": pool[assigned == fold], "test": parts["test"]}


def check_folds(data, folds: int, key: str = "cv") -> tuple[int, int]:
    """Check that ``data`` (a data config) parts into ``folds`` folds, without making them (a
    ConfigError naming ``key`` if not): (rows each fold holds out, left-over rows held out by
    none), N // K and N mod K of its N train+val rows."""
    from mlplab.data.sources import load_source

    df, spec = load_source(data["source"], **(data.get("options") or {}))
    parts = split_indices(df, spec, data["val_fraction"], data["test_fraction"], data["seed"])
    pool = _fold_pool(df, spec, parts, folds, key)
    return len(pool) // folds, len(pool) % folds
