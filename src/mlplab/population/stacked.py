"""``StackedMLP``: K MLPs of one architecture trained at once, all their weights in one tensor.

Member k's row of the ``(K, N)`` parameter holds its weights layer by layer (``W`` (in, out),
then ``b``). Forward splits the row into views, so layer l of all members is one batched matmul
``a_l = g(baddbmm(b_l, a_{l-1}, W_l))``, and backward writes one ``(K, N)`` gradient. Member k is
exactly the MLP ``mlplab-train seed=s_k`` would build and train: its initial weights, its
mini-batches (``member_batches``), its loss (``member_losses``); ``member(k)`` gives it back as
a plain ``MLP``. Member losses are summed before backward, and ``∂(Σ_j J_j)/∂W_k = ∂J_k/∂W_k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlplab.data.batches import BatchIterator
from mlplab.data.spec import TASKS
from mlplab.errors import check
from mlplab.models.dense import ACTIVATIONS, Dense
from mlplab.models.mlp import MLP, TORCH_ACTIVATIONS

_ACTIVATION_NAMES = {cls: name for name, cls in TORCH_ACTIVATIONS.items()}


def _seeded_mlp(seed: int, *args, **kwargs) -> tuple[MLP, torch.Tensor]:
    """``MLP(*args, **kwargs)`` as ``mlplab.train`` builds it after seeding, and the CPU
    generator's state after it (what that run's dropout draws from next), leaving the caller's
    random state alone. nn.Linear draws its init from the CPU generator only."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return MLP(*args, **kwargs), torch.get_rng_state()


def _linears(mlp: MLP) -> list[nn.Linear]:
    scratch = any(isinstance(m, Dense) for m in mlp.modules())
    check(not scratch, "model.layer", "scratch", "StackedMLP stacks layer=torch members only")
    return [m for m in mlp.modules() if isinstance(m, nn.Linear)]


def _architecture(mlp: MLP) -> dict:
    """The constructor arguments of a torch-layer ``MLP``, read back from its modules."""
    linears = _linears(mlp)
    acts = [type(m) for m in mlp.modules() if type(m) in _ACTIVATION_NAMES]
    drops = [m.p for m in mlp.modules() if isinstance(m, nn.Dropout)]
    return {
        "in_features": linears[0].in_features,
        "hidden_sizes": [lin.out_features for lin in linears[:-1]],
        "out_features": linears[-1].out_features,
        # hidden layers with identity have no activation module; a perceptron has no hidden one
        "activation": _ACTIVATION_NAMES[acts[0]] if acts else "identity",
        "dropout": drops[0] if drops else 0.0,
    }


class StackedMLP(nn.Module):
    """K same-architecture MLPs as one module: one ``(K, N)`` parameter ``flat``.

    Hidden layer l of member k: ``a = g_k(a W_l[k] + b_l[k])``, then inverted dropout
    ``a ← a · m / (1 − p_k)`` with ``m ~ Bernoulli(1 − p_k)`` in training mode. Member k draws
    its masks from a generator of its own, which starts where its stand-alone run's global
    generator is after building the model: its masks are that run's. Saving and restoring them
    touches no other generator.

    Args:
        *args, **kwargs: ``MLP``'s architecture (in_features, hidden_sizes, out_features,
            activation), shared by all members; ``MLP`` checks every value. Members stacked
            ``from_members`` may differ in activation too.
        dropout: one rate for all members, or one per member, each in [0, 1).
        seeds: member k starts from the weights an ``MLP`` gets under ``seeds[k]``; K = len.
    """

    def __init__(
        self, *args, dropout: float | Sequence[float] = 0.0, seeds: Sequence[int] = (0,), **kwargs
    ) -> None:
        super().__init__()
        seeds = list(seeds)
        check(len(seeds) >= 1, "population.seeds", seeds, "at least one seed")
        rates = [dropout] * len(seeds) if isinstance(dropout, int | float) else list(dropout)
        check(
            len(rates) == len(seeds), "model.dropout", dropout, f"{len(seeds)} rates (one per seed)"
        )
        built = [
            _seeded_mlp(s, *args, dropout=p, **kwargs) for s, p in zip(seeds, rates, strict=True)
        ]
        self._stack([m for m, _ in built], [state for _, state in built])

    @classmethod
    def from_members(
        cls, members: Sequence[MLP], rng_states: Sequence[torch.Tensor] | None = None
    ) -> StackedMLP:
        """Stack torch-layer MLPs of one architecture (their dropout rates and activations may
        differ), member k drawing its dropout masks from ``rng_states[k]`` (default: seeded k)."""
        check(len(members) >= 1, "members", members, "at least one MLP")
        if rng_states is None:
            rng_states = [torch.Generator().manual_seed(k).get_state() for k in range(len(members))]
        check(len(rng_states) == len(members), "rng_states", len(rng_states), "one per member")
        stacked = cls.__new__(cls)  # no K stand-in MLPs to build and throw away
        nn.Module.__init__(stacked)
        stacked._stack(members, rng_states)
        return stacked

    def _stack(self, members: Sequence[MLP], states: Sequence[torch.Tensor]) -> None:
        archs = [_architecture(m) for m in members]
        own = ("dropout", "activation")
        shared = [{k: v for k, v in a.items() if k not in own} for a in archs]
        check(all(s == shared[0] for s in shared), "members", shared, "one architecture")
        self.arch = shared[0]
        widths = [self.arch["in_features"], *self.arch["hidden_sizes"], self.arch["out_features"]]
        self.shapes = list(zip(widths, widths[1:], strict=False))  # (in, out) of each layer
        rows = [
            torch.cat([t for lin in _linears(m) for t in (lin.weight.T.flatten(), lin.bias)])
            for m in members
        ]
        self.flat = nn.Parameter(torch.stack(rows).detach().clone())  # (K, N)
        # The floats give member(k) its exact rate back (float32 would turn 0.3 into
        # 0.30000001); the (K,) buffer follows the device.
        self.rates = [float(a["dropout"]) for a in archs]
        self.register_buffer("dropout", torch.tensor(self.rates, dtype=torch.float32))
        self.out_features = self.arch["out_features"]
        self.activations = [a["activation"] for a in archs]
        self.kinds = sorted(set(self.activations))
        kind = torch.tensor([self.kinds.index(a) for a in self.activations])
        self.register_buffer("kind", kind.view(-1, 1, 1), persistent=False)  # (K, 1, 1)
        self.rng_states = [state.clone() for state in states]  # where each member's masks start
        self.generators: list[torch.Generator] | None = None  # made on the first draw

    @property
    def k(self) -> int:
        return self.flat.shape[0]

    @property
    def sizes(self) -> list[int]:
        """The column blocks of a row: W_0, b_0, W_1, b_1, ..."""
        return [n for d_in, d_out in self.shapes for n in (d_in * d_out, d_out)]

    def layers(self, flat: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(W_l (K, in, out), b_l (K, 1, out)), ...]``: views of ``flat`` (default: the
        weights; the best weights have the same layout)."""
        blocks = (self.flat if flat is None else flat).split(self.sizes, dim=1)
        return [
            (w.view(-1, d_in, d_out), b.view(-1, 1, d_out))
            for (d_in, d_out), w, b in zip(self.shapes, blocks[::2], blocks[1::2], strict=True)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, in) → (K, B, out); a (B, in) input is shared by all members."""
        h = x.expand(self.k, *x.shape) if x.ndim == 2 else x
        *hidden, last = self.layers()
        for w, b in hidden:
            h = self._activate(torch.baddbmm(b, h, w))  # (K, B, in) @ (K, in, out) + (K, 1, out)
            if self.training and any(p > 0 for p in self.rates):
                h = h * self._masks(h)
        return torch.baddbmm(last[1], h, last[0])

    def _activate(self, z: torch.Tensor) -> torch.Tensor:
        """Each member's activation of (K, B, width): with several, each is computed for all
        and each member's picked, so its values and gradients are its own alone."""
        a = ACTIVATIONS[self.kinds[0]](z)
        for i, kind in enumerate(self.kinds[1:], start=1):
            a = torch.where(self.kind == i, ACTIVATIONS[kind](z), a)
        return a

    def _masks(self, h: torch.Tensor) -> torch.Tensor:
        """(K, B, width): member k's mask m / (1 − p_k), drawn from its own generator as
        ``nn.Dropout`` draws it (``bernoulli_(1 − p)``, then ÷ (1 − p)); ones where p_k = 0
        (an MLP without dropout draws nothing)."""
        if self.generators is None or self.generators[0].device != h.device:
            self.generators = [_generator(state, h.device) for state in self.rng_states]
        masks = torch.ones_like(h)
        for mask, p, generator in zip(masks, self.rates, self.generators, strict=True):
            if p > 0:
                mask.bernoulli_(1 - p, generator=generator).div_(1 - p)
        return masks

    def dropout_states(self) -> list[torch.Tensor]:
        """Each member's dropout generator state now."""
        if self.generators is None:
            return [state.clone() for state in self.rng_states]
        return [g.get_state() for g in self.generators]

    def set_dropout_states(self, states: Sequence[torch.Tensor]) -> None:
        check(len(states) == self.k, "dropout states", len(states), f"{self.k}, one per member")
        # The generators are made at the next draw, on its device: a checkpoint is loaded before
        # Lightning moves the module, and a CUDA generator's state fits no CPU generator.
        self.rng_states, self.generators = [s.clone() for s in states], None

    def l1_penalty(self) -> torch.Tensor:
        """(K,) ``Σ|w|`` over each member's weight matrices, not biases (``MLPModule``)."""
        return sum(w.abs().sum(dim=(1, 2)) for w, _ in self.layers())

    def l2_penalty(self) -> torch.Tensor:
        """(K,) ``½ Σ w²`` over all of each member's parameters, biases included: the loss
        term whose gradient is the optimizer's coupled ``weight_decay`` λ (mlplab's L2)."""
        return self.flat.square().sum(dim=1) / 2

    def member(self, k: int) -> MLP:
        """Member k as a plain ``MLP`` with its own modules (dropout, activation), on the
        weights' device and dtype; its weights copied, not shared."""
        check(-self.k <= k < self.k, "member", k, f"an index in [0, {self.k})")
        arch = self.arch | {"activation": self.activations[k], "dropout": self.rates[k]}
        mlp, _ = _seeded_mlp(0, **arch)  # its init is overwritten
        return self.copy_member(k, mlp.to(device=self.flat.device, dtype=self.flat.dtype))

    @torch.no_grad()
    def copy_member(self, k: int, mlp: MLP, flat: torch.Tensor | None = None) -> MLP:
        """Copy member k's weights (row k of ``flat``: default the current weights) into
        ``mlp``, a torch-layer MLP of this architecture."""
        check(-self.k <= k < self.k, "member", k, f"an index in [0, {self.k})")
        flat = self.flat if flat is None else flat
        for lin, (w, b) in zip(_linears(mlp), self.layers(flat[k : k + 1]), strict=True):
            lin.weight.copy_(w[0].T)
            lin.bias.copy_(b[0, 0])
        return mlp


def _generator(state: torch.Tensor, device: torch.device) -> torch.Generator:
    """A generator on ``device`` that goes on from ``state`` (a resumed population's masks go on
    as never stopped); a CPU generator's state on another kind of device seeds it from that
    state's own seed."""
    generator = torch.Generator(device=device)
    try:
        return generator.set_state(state)
    except RuntimeError:  # a CPU generator's state (5056 bytes) on a CUDA generator
        return generator.manual_seed(int(torch.Generator().set_state(state).initial_seed()))


def member_losses(
    out: torch.Tensor,
    y: torch.Tensor,
    task: str,
    class_weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """(K,) each member's mean loss on its batch, as ``MLPModule.loss`` computes it, from
    outputs (K, B, out) and targets (K, B):

    - binary: ``J = −1/B Σ w·y·log σ(z) + (1−y)·log(1−σ(z))``, w = ``class_weights[0]``
      (pos_weight) on positives, 1 without weights;
    - multiclass: cross-entropy ``Σ w_y ℓ / Σ w_y`` (the mean over rows without weights);
    - regression: ``1/B Σ (y − ŷ)²``.
    """
    check(task in TASKS, "task", task, f"expected one of {list(TASKS)}")
    w = None if class_weights is None else torch.as_tensor(class_weights).to(out)
    if task == "binary":
        rows = F.binary_cross_entropy_with_logits(
            out.squeeze(-1), y, pos_weight=w, reduction="none"
        )
        return rows.mean(dim=1)
    if task == "multiclass":
        rows = F.cross_entropy(out.transpose(1, 2), y, weight=w, reduction="none")  # (K, B)
        return rows.mean(dim=1) if w is None else rows.sum(dim=1) / w[y].sum(dim=1)
    return F.mse_loss(out.squeeze(-1), y, reduction="none").mean(dim=1)


def member_batches(
    n_rows: int, batch_size: int, seeds: Sequence[int], epoch: int
) -> list[torch.Tensor]:
    """Row indices of one training epoch per member: a list of (K, B) LongTensors, row k of
    batch i the rows of the i-th batch ``BatchIterator(seed=seeds[k])`` yields in ``epoch``."""
    check(batch_size >= 1, "data.batch_size", batch_size, "an integer >= 1")
    perms = []
    for seed in seeds:  # BatchIterator's own shuffle: one definition of it
        it = BatchIterator(torch.empty(n_rows, 0), torch.empty(n_rows), batch_size, True, seed)
        it.set_epoch(epoch)
        perms.append(it.rows_of_epoch())
    return list(torch.stack(perms).split(batch_size, dim=1))  # (K, N) → [(K, B), ...]


def gather_rows(data: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``data[k, index[k]]`` for every member k: (K, N, ...) data, (K, B) row indices →
    (K, B, ...), in one index_select (from the one shared split when ``data`` is an ``expand``
    of it)."""
    k, n = data.shape[:2]
    if data.stride(0) == 0:
        picked = data[0].index_select(0, index.reshape(-1))
    else:
        offsets = torch.arange(0, k * n, n, device=index.device)[:, None]  # (K, 1)
        flat = data.reshape(k * n, *data.shape[2:])
        picked = flat.index_select(0, (index + offsets).reshape(-1))
    return picked.view(*index.shape, *data.shape[2:])
