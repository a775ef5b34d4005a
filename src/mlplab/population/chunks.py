"""Split a population into chunks that fit in memory, and train it chunk by chunk.

A population of K members holds K copies of everything a run holds: weights, gradients,
optimizer state, activations, and (when the members' splits differ) K copies of the data. So
K members need about ``fixed + K × per_member`` bytes (``footprint``). ``chunks(cfgs,
max_members)`` splits the configs into stackable groups (``check_stackable``'s rule) and each
group into chunks of at most ``max_members`` that also fit under ``memory_bound``: a share of
the free GPU memory, or of the available RAM on CPU. Members are independent (each its own
weights, batches and optimizer state), so a member trained in a chunk of 2 ends with the
numbers it has in a population of 64.

``train_in_chunks(cfgs, out_dir)`` is what ``seeds=N`` and ``cv=K`` call: one
``train_population`` per chunk, members numbered on across chunks (``member_000`` …), one
``summary.csv``, ``metrics.csv``, figure and wandb run for the whole population. The population
launcher and ``mlplab-sweep population=K`` train each chunk as a population of its own.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from mlplab.config import portable_data
from mlplab.errors import MlplabError, check
from mlplab.population.tracking import PopulationTracker, closes_trackers
from mlplab.run.parses import to_plain

BYTES = 4  # float32 everywhere
CPU_SHARE = 0.5  # of MemAvailable: the rest for the OS, other processes, Python and pandas
GPU_SHARE = 0.8  # of the free CUDA memory: the allocator's fragmentation, CUDA's workspaces
# Tensors shaped like a parameter, per member: the weight, its gradient, the best weights the
# module keeps (best_stacked), and the vectorized optimizer step's temporaries (torch.where).
PARAMETER_COPIES = 3
STEP_TEMPORARIES = 2
# Per hidden (and output) unit and training row: the pre-activation and the activation kept for
# backward, the dropout mask, and the gradient flowing back through them.
ACTIVATION_COPIES = 4


@dataclass(frozen=True)
class Footprint:
    """Bytes a population of K members needs: ``fixed + K × per_member``."""

    per_member: int
    fixed: int

    def bytes(self, k: int) -> int:
        return self.fixed + k * self.per_member


def parameter_count(in_features: int, hidden_sizes: list[int], out_features: int) -> int:
    """Weights and biases of one MLP: Σ_l (n_{l−1} + 1) · n_l."""
    sizes = [in_features, *hidden_sizes, out_features]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))


def optimizer_buffers(optimizer: dict) -> int:
    """State tensors per parameter of the stacked optimizer of ``optimizer`` (``_target_`` and
    its numbers): Adam 2 (exp_avg, exp_avg_sq), SGD 1 (momentum_buffer, kept even at momentum 0),
    RMSprop 2 (+1 centered), ...; 2 for a class the population doesn't know (it refuses it)."""
    from mlplab.population.optim_config import OPTIMIZERS

    cls = OPTIMIZERS.get(str(optimizer.get("_target_")))
    if cls is None:
        return 2
    return len(cls.BUFFERS) + bool(optimizer.get("centered"))


def footprint(cfg: DictConfig, datamodule, shared_split: bool) -> Footprint:
    """The bytes ``cfg``'s population needs per member and in all, from its data's shape.

    Args:
        cfg: a member's config (architecture, optimizer, batch size: shared by the members).
        datamodule: its DataModule after ``setup("fit")`` (rows per split, features, outputs).
        shared_split: every member trains on the same split (the same data config): one copy
            of the data for all; else each member holds its own split plus its stacked copy.
    """
    hp = datamodule.hparams
    rows = {name: int(t[0].shape[0]) for name, t in datamodule.tensors.items()}
    d_in, d_out = int(datamodule.in_features), int(datamodule.out_features)
    hidden = list(cfg.model.get("hidden_sizes") or [])
    batch = rows["train"] if hp.batch_size == "full" else int(hp.batch_size)
    eval_rows = min(int(hp.eval_batch_size), max(rows.get("val", 1), rows.get("test", 1)))
    widths = [*hidden, d_out]
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    copies = PARAMETER_COPIES + STEP_TEMPORARIES + optimizer_buffers(optimizer)
    weights = parameter_count(d_in, hidden, d_out) * copies
    activations = batch * sum(widths) * ACTIVATION_COPIES + eval_rows * max(widths) * 2
    gathered = batch * (d_in + 1)  # x[rows, index], y[rows, index]: each member's batch
    scores = rows.get("val", 0) * d_out  # the validation predictions kept for the epoch
    data = sum(rows.values()) * (d_in + 1)
    per_member = weights + activations + gathered + scores + (0 if shared_split else 2 * data)
    return Footprint(per_member * BYTES, (data if shared_split else 0) * BYTES)


def estimate_bytes(cfgs: list[DictConfig]) -> int:
    """Bytes the population of ``cfgs`` (one stackable group) needs; reads its data once."""
    return _footprint(cfgs).bytes(len(cfgs))


def _footprint(cfgs: list[DictConfig]) -> Footprint:
    from mlplab.run.build import build_datamodule

    datamodule = build_datamodule(cfgs[0])
    datamodule.setup("fit")
    keys = {json.dumps(to_plain(c.data), sort_keys=True) for c in cfgs}
    return footprint(cfgs[0], datamodule, shared_split=len(keys) == 1)


def memory_bound(cfg: DictConfig) -> int | None:
    """Bytes a population may take on the device ``cfg`` trains on: ``GPU_SHARE`` of the free
    CUDA memory, or ``CPU_SHARE`` of the available RAM; None when that can't be read."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free * GPU_SHARE)
    available = _available_ram()
    return None if available is None else int(available * CPU_SHARE)


def _available_ram() -> int | None:
    """MemAvailable (Linux: free + reclaimable cache), else free pages (macOS, BSD)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _groups(flats: list[dict]) -> list[list[int]]:
    """Indices of the configs in stackable groups (equal outside ``MEMBER_KEYS``), in order."""
    from mlplab.population.run import MEMBER_KEYS, SHARED

    groups: dict[str, list[int]] = {}
    for i, flat in enumerate(flats):
        fixed = sorted((k, repr(v)) for k, v in flat.items() if not k.startswith(MEMBER_KEYS))
        fixed += [(k, repr(flat.get(k))) for k in SHARED]
        groups.setdefault(repr(fixed), []).append(i)
    return list(groups.values())


def _fitting(cfgs: list[DictConfig]) -> int:
    """How many of these (stackable) members fit under ``memory_bound`` at once (at least 1)."""
    bound = memory_bound(cfgs[0])
    if bound is None or len(cfgs) == 1:
        return len(cfgs)
    try:
        need = _footprint(cfgs)
    except MlplabError:  # bad data config: training says so, where it always has
        return len(cfgs)
    fit = max(1, (bound - need.fixed) // need.per_member)
    if fit < len(cfgs):
        print(
            f"population: {len(cfgs)} members need about {need.bytes(len(cfgs)) / 2**20:.0f} MiB,"
            f" more than the {bound / 2**20:.0f} MiB this device can give; trained in chunks of"
            f" at most {fit}",
            flush=True,
        )
    return min(fit, len(cfgs))


def chunks(
    cfgs: list[DictConfig], max_members: int | None = None, flats: list[dict] | None = None
) -> list[list[int]]:
    """The configs' indices in populations to train one after another: stackable groups (in
    order of their first member), each split into consecutive chunks of at most
    ``max_members`` members that also fit under ``memory_bound``. ``flats``: the configs
    flattened (``run._flat(portable_data(cfg))``), when the caller has them."""
    from mlplab.population.run import _flat

    ok = max_members is None or (type(max_members) is int and max_members >= 1)
    check(ok, "max_members", max_members, "null or an integer >= 1 (members per population)")
    flats = flats or [_flat(portable_data(c)) for c in cfgs]
    out = []
    for group in _groups(flats):
        size = _fitting([cfgs[i] for i in group])
        size = min(size, max_members or size)
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


@closes_trackers
def train_in_chunks(
    cfgs: list[DictConfig],
    out_dir: str | Path,
    max_members: int | None = None,
    resume: bool = False,
    run_info: DictConfig | None = None,
) -> pd.DataFrame:
    """Train ``cfgs`` (one population) as ``train_population`` does, in as many chunks as
    ``chunks`` says; returns the summary of all members (row k: member k).

    Member k is written into ``out_dir/member_<k>`` whichever chunk trains it; chunk i keeps
    its own summary and checkpoint in ``out_dir/chunk_<i>``, and after each chunk ``out_dir``'s
    ``summary.csv`` and ``metrics.csv`` hold every member trained so far. ``resume``: each
    chunk continues from its checkpoint (all are checked first: a ConfigError line before
    anything is written). ``run_info``: the population's own config, written into ``out_dir``
    once the first chunk's members are built and checked (``write_run_info``)."""
    from mlplab.population.resume import find_checkpoint
    from mlplab.population.run import _flat, check_stackable, train_population
    from mlplab.run.provenance import write_run_info

    portable = [portable_data(c) for c in cfgs]  # resolved once for every step below
    flats = [_flat(p) for p in portable]
    differ = check_stackable(cfgs, flats)  # one population, refused as before when it isn't
    parts = chunks(cfgs, max_members, flats)
    out_dir = Path(out_dir)
    homes = [out_dir] if len(parts) == 1 else [out_dir / f"chunk_{i}" for i in range(len(parts))]
    for part, home in zip(parts, homes, strict=True) if resume else ():
        find_checkpoint(home, [flats[k] for k in part])
    written = []

    def before_fit() -> None:  # the first chunk built: write the population's run info
        if run_info is not None and not written:
            write_run_info(run_info, out_dir)
            written.append(True)

    if len(parts) == 1:
        return train_population(
            cfgs, out_dir, resume=resume, before_fit=before_fit, portable=portable
        )
    varying = [k for k in differ if not k.startswith(("paths.", "run_name"))]
    tracker = PopulationTracker(cfgs, out_dir, flats)
    done = []
    for part, home in zip(parts, homes, strict=True):
        dirs = [out_dir / f"member_{k:03d}" for k in part]
        members = [_named(cfgs[k], d.name) for k, d in zip(part, dirs, strict=True)]
        summary = train_population(
            members,
            home,
            dirs,
            tracker=tracker.chunk(part),
            resume=resume,
            before_fit=before_fit,
            portable=[portable[k] for k in part],  # run_name stays a reference in it
        )
        # what varies in the whole population, also where this chunk's members agree
        summary = summary.drop(columns=[k for k in varying if k in summary], errors="ignore")
        for j, key in enumerate(varying):
            summary.insert(3 + j, key, pd.Series([flats[k].get(key) for k in part], dtype=object))
        summary["member"] = part
        done.append(summary)
        summary = pd.concat(done, ignore_index=True)
        summary.to_csv(out_dir / "summary.csv", index=False)
        history = pd.DataFrame(tracker.history)
        if len(history):  # rows in one population's order: epoch by epoch
            history = history.sort_values(["epoch", "member"], kind="stable")
        history.to_csv(out_dir / "metrics.csv", index=False)
    tracker.done(tracker.history, summary)
    return summary


def _named(cfg: DictConfig, name: str) -> DictConfig:
    """``cfg`` with ``run_name=name``: the name a member of one population gets (member_<k>)."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, "run_name", name, force_add=True)
    return cfg
