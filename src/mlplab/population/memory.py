"""How many members of a population fit in memory at once.

K members hold K copies of what a run holds (weights, gradients, optimizer state, activations,
and the data when their splits differ): about ``fixed + K × per_member`` bytes (``footprint``).
``chunk_size`` compares that with ``memory_bound`` (a share of the free GPU memory or of the
available RAM): a population that doesn't fit trains in chunks, one after another. Members are
independent, so a member ends with the same numbers in a chunk of 2 as in a population of 64.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mlplab.errors import ConfigError

BYTES = 4  # float32 everywhere
CPU_SHARE = 0.5  # of MemAvailable: the rest for the OS, other processes, Python and pandas
GPU_SHARE = 0.8  # of the free CUDA memory: the allocator's fragmentation, CUDA's workspaces
# Tensors shaped like the parameters, per member: the weights, their gradient, the best weights
# the module keeps, and the optimizer step's temporaries.
PARAMETER_COPIES = 3
STEP_TEMPORARIES = 2
# Per hidden (and output) unit and training row: the pre-activation and the activation kept for
# backward, the dropout mask, and the gradient flowing back through them; members with
# different activations keep each kind's output and the pick's mask.
ACTIVATION_COPIES = 4
MIXED_ACTIVATION_COPIES = 2  # per kind beyond the first
OPTIMIZER_BUFFERS = {"SGD": 1, "Adam": 2, "AdamW": 2, "Adadelta": 2, "Adagrad": 1, "RMSprop": 3}
TABLE_BYTES = 8  # a DataModule's own tables (pandas) of its split: about 8 bytes a cell
MEMBER_OVERHEAD = 256 * 2**10  # the Python objects of a member (DataModule, configs, rows)


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


def footprint(config: dict, datamodule, shared_split: bool, kinds: int = 1) -> Footprint:
    """The bytes a population needs per member and in all, from its data's shape.

    Args:
        config: a member's config, plain data (architecture, optimizer, batch size: shared).
        datamodule: its DataModule after ``setup("fit")`` (rows per split, features, outputs).
        shared_split: every member trains on the same split (the same data config): one copy
            of the data for all; else each member holds its own split plus its stacked copy.
        kinds: how many activations the members have between them.
    """
    hp = datamodule.hparams
    rows = {name: int(t[0].shape[0]) for name, t in datamodule.tensors.items()}
    columns = max(len(frame.columns) for frame in datamodule.frames.values())
    d_in, d_out = int(datamodule.in_features), int(datamodule.out_features)
    hidden = list(config["model"].get("hidden_sizes") or [])
    batch = rows["train"] if hp.batch_size == "full" else int(hp.batch_size)
    eval_rows = min(int(hp.eval_batch_size), max(rows.get("val", 1), rows.get("test", 1)))
    widths = [*hidden, d_out]
    name = str(config["optimizer"].get("_target_", "")).rsplit(".", 1)[-1]
    copies = PARAMETER_COPIES + STEP_TEMPORARIES + OPTIMIZER_BUFFERS.get(name, 3)
    weights = parameter_count(d_in, hidden, d_out) * copies
    per_unit = ACTIVATION_COPIES + MIXED_ACTIVATION_COPIES * (kinds - 1)
    activations = batch * sum(widths) * per_unit + eval_rows * max(widths) * 2
    gathered = batch * (d_in + 1)  # each member's batch, gathered
    scores = (rows.get("val", 0) + rows.get("test", 0)) * d_out  # an epoch's predictions
    n_rows = sum(rows.values())
    data = n_rows * (d_in + 1)
    tables = n_rows * columns * TABLE_BYTES // BYTES
    own = 0 if shared_split else 2 * data + tables
    per_member = (weights + activations + gathered + scores + own) * BYTES + MEMBER_OVERHEAD
    return Footprint(per_member, (data + tables) * BYTES if shared_split else 0)


def memory_bound(config: dict) -> int | None:
    """Bytes a population may take on the device it trains on: ``GPU_SHARE`` of the free CUDA
    memory, or ``CPU_SHARE`` of the available RAM; None when that can't be read."""
    accelerator = str(config["trainer"].get("accelerator", "auto"))
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free * GPU_SHARE)
    return None if (available := _available_ram()) is None else int(available * CPU_SHARE)


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


def chunk_size(need: Footprint, members: int, bound: int | None, what: str) -> int:
    """How many of ``members`` train at once under ``bound`` bytes (all of them when the bound
    is unknown); a ConfigError when not even one fits. Says so in a line when they don't all."""
    if bound is None:
        return members
    fit = (bound - need.fixed) // need.per_member
    if fit < 1:
        raise ConfigError(
            f"{what}: one member needs about {need.bytes(1) / 2**20:.0f} MiB, more than the "
            f"{bound / 2**20:.0f} MiB this device can give: use a smaller model, batch or data"
        )
    if fit < members:
        print(
            f"population: {members} members need about {need.bytes(members) / 2**20:.0f} MiB, "
            f"more than the {bound / 2**20:.0f} MiB this device can give; trained in chunks of "
            f"at most {fit}",
            flush=True,
        )
    return int(min(fit, members))
