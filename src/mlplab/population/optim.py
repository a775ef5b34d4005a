"""Optimizers for a population of K MLPs stored as stacked tensors, one learning rate per member.

Every parameter is one leaf tensor whose first dimension is the member index, e.g. weights
(K, in, out) and biases (K, 1, out). ``torch.optim`` takes one float per hyperparameter for a
whole tensor, so these optimizers keep each numeric hyperparameter as K floats (one per member)
and update all members with a few vectorized tensor ops. Member k follows torch's single-tensor
code (``torch.optim.sgd._single_tensor_sgd`` etc.) op for op, scalar algebra in float64 and
fused multiply-adds (``addcmul``) where torch uses them, so on CPU it reproduces ``torch.optim``
run on member k alone bit for bit (other kernels, e.g. CUDA, may differ by rounding).

An ``active`` mask (K,) freezes members: a member whose entry is False keeps its weights and
its optimizer state (step count included) bit for bit, for per-member early stopping and for
members that diverged. The step runs once over the concatenation of a group's parameters
(their state tensors are views of it), not once per tensor. The rules of SGD, Adam, ... are
in ``mlplab.population.rules``; build one from member configs with
``mlplab.population.optim_config.build_stacked_optimizer``, or directly::

    opt = StackedAdam([w, b], lr=[1e-3, 1e-2, 1e-1], beta2=[0.999, 0.99, 0.9])  # K = 3
    loss.backward(); opt.step(); opt.zero_grad()
    opt.set_active(torch.tensor([True, False, True]))  # member 1 stops here
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mlplab.errors import check

Tensor = torch.Tensor


class StackedOptimizer(torch.optim.Optimizer):
    """Base class: per-member hyperparameters, an ``active`` mask and a masked ``step``.

    Each param group holds every hyperparameter in ``DEFAULTS`` as a list of K floats, shared
    bools in ``FLAGS``, and ``active`` as K bools, so ``state_dict`` stores plain numbers and
    ``load_state_dict`` restores them. State per parameter: the buffers (shaped like it) and
    ``step``, a (K,) float64 CPU tensor counting each member's active steps.

    torch's LR schedulers expect one float per group and do not work here: apply a per-member
    schedule with ``set_lr`` (e.g. ``opt.set_lr(lr0 * gamma**epoch)`` with ``lr0`` of shape (K,)).
    """

    DEFAULTS: dict[str, float] = {}  # torch's defaults of the per-member numbers
    FLAGS: dict[str, bool] = {}  # options shared by all members (they change the formula)
    BUFFERS: tuple[str, ...] = ()  # state tensors shaped like the parameter

    def __init__(self, params, **options: Sequence[float] | bool) -> None:
        """Args: params: stacked tensors (K, ...); options: each name in ``DEFAULTS`` as K numbers
        (missing: torch's default for every member), each name in ``FLAGS`` as one bool."""
        allowed = f"one of {[*self.DEFAULTS, *self.FLAGS]}"
        for name, value in options.items():
            check(name in self.DEFAULTS or name in self.FLAGS, name, value, allowed)
        columns = {n: v for n, v in options.items() if n in self.DEFAULTS}
        check(bool(columns), "options", options, "at least one list of K numbers, e.g. lr=[...]")
        k = len(next(iter(columns.values())))
        for name, values in columns.items():
            check(len(values) == k, name, list(values), f"{k} values, one per member")
        defaults = {
            n: [float(x) for x in columns.get(n, [d] * k)] for n, d in self.DEFAULTS.items()
        }
        defaults |= {n: bool(options.get(n, d)) for n, d in self.FLAGS.items()}
        super().__init__(params, defaults | {"active": [True] * k})
        self._flat: dict = {}  # _flat_state's cache: group → its (K, N) buffers
        self._tensors: dict = {}  # _numbers' cache: group → its hyperparameters as tensors
        self._statics: dict = {}  # _static's cache: (group, layout) → its coefficients
        for shape in [tuple(p.shape) for g in self.param_groups for p in g["params"]]:
            check(shape[:1] == (k,), "param.shape", shape, f"({k}, ...), member index first")

    @property
    def members(self) -> int:
        """K, the number of members."""
        return len(self.param_groups[0]["active"])

    @property
    def lr(self) -> Tensor:
        """The learning rates (K,) float64 of the first param group."""
        return torch.tensor(self.param_groups[0]["lr"], dtype=torch.float64)

    def set_lr(self, lr: Tensor | Sequence[float]) -> None:
        """Set the learning rate of every member (K numbers, each finite and >= 0) in all groups."""
        values = torch.as_tensor(lr, dtype=torch.float64).reshape(-1).tolist()
        check(len(values) == self.members, "lr", values, f"{self.members} values, one per member")
        check(
            all(math.isfinite(v) and v >= 0 for v in values), "lr", values, "a finite number >= 0"
        )
        for group in self.param_groups:
            group["lr"] = values

    @property
    def active(self) -> Tensor:
        """The members that ``step`` updates, a (K,) bool tensor."""
        return torch.tensor(self.param_groups[0]["active"], dtype=torch.bool)

    def set_active(self, mask: Tensor | Sequence[bool]) -> None:
        """Freeze the members where ``mask`` (K,) is False: ``step`` leaves their weights and
        state untouched (gradients of frozen members may be anything, even NaN)."""
        values = torch.as_tensor(mask, dtype=torch.bool).reshape(-1).tolist()
        check(len(values) == self.members, "active", values, f"{self.members} bools")
        for group in self.param_groups:
            group["active"] = values

    def step(self, closure=None):
        """One update of every active member; ``closure`` re-evaluates the loss (torch's API)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                active, hp = self._numbers(group)
                if active.any():
                    params = [p for p in group["params"] if p.grad is not None]
                    if _fusable(params):
                        self._step_fused(params, group, hp, active)
                        continue
                    for p in params:
                        self._step_param(p, group, hp, active)
        return loss

    def _numbers(self, group: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """The group's ``active`` mask (K,) and hyperparameters as (K,) float64 tensors, made
        again only when their values change (``set_lr``, ``set_active``, a scheduler)."""
        key = (tuple(group["active"]), *(tuple(group[n]) for n in self.DEFAULTS))
        cached = self._tensors.get(id(group))
        if cached is None or cached[0] != key:
            active = torch.tensor(group["active"], dtype=torch.bool)
            hp = {n: torch.tensor(group[n], dtype=torch.float64) for n in self.DEFAULTS}
            cached = self._tensors[id(group)] = (key, active, hp)
        return cached[1], cached[2]

    def _step_fused(self, params: list[Tensor], group: dict, hp: dict, active: Tensor) -> None:
        """``_step_param`` for all of a group's parameters at once: one set of ops on their
        (K, N) concatenation instead of one per tensor (a small MLP's step is all overhead).
        The state stays per parameter under torch's names: views of the group's flat buffers."""
        k = params[0].shape[0]
        packed = flat_view(params)  # StackedMLP's parameters: views of one (K, N) tensor
        flat_p = packed if packed is not None else torch.cat([p.reshape(k, -1) for p in params], 1)
        flat_g = torch.cat([p.grad.reshape(k, -1) for p in params], 1)
        fused = self._flat_state(params, flat_p, hp, group)
        if fused is None:
            for p in params:
                self._step_param(p, group, hp, active)
            return
        buffers, count = fused
        step = count + 1
        new_p, new_state = self._update(flat_p, flat_g, buffers, hp, step, group)
        if not bool(active.all()):
            keep = active.to(flat_p.device)[:, None]
            new_p = torch.where(keep, new_p, flat_p)
            new_state = {n: torch.where(keep, v, buffers[n]) for n, v in new_state.items()}
        for name, value in new_state.items():
            buffers[name].copy_(value)  # in place: the per-parameter views see it
        if packed is not None:
            packed.copy_(new_p)  # the parameters are its views
        else:
            blocks = new_p.split([p[0].numel() for p in params], 1)
            for p, chunk in zip(params, blocks, strict=True):
                p.copy_(chunk.unflatten(1, p.shape[1:]))
        count.copy_(torch.where(active, step, count))  # shared by the group's parameters

    def _flat_state(self, params: list[Tensor], flat_p: Tensor, hp: dict, group: dict):
        """The group's state as (K, N) buffers whose column blocks are the parameters' own
        state tensors (views), and the members' step counts; built once, and again whenever
        those are not views of it (``load_state_dict``, a step that left a parameter out).
        None where the parameters' step counts differ (then they step one by one)."""
        views = [self.state[p] for p in params]
        cached = self._flat.get(id(group))
        if cached is not None and cached[0] == [id(p) for p in params]:
            flat, parts = cached[1], cached[2]
            if all(v.get(n) is part[n] for v, part in zip(views, parts, strict=True) for n in flat):
                return flat, views[0]["step"]
        k = flat_p.shape[0]
        if all(not v for v in views):  # a fresh optimizer
            flat = self._init_buffers(flat_p, hp, group)
            step = torch.zeros(k, dtype=torch.float64)
        elif all(v for v in views) and all(torch.equal(v["step"], views[0]["step"]) for v in views):
            names = [n for n in views[0] if n != "step"]
            flat = {n: torch.cat([v[n].reshape(k, -1) for v in views], 1) for n in names}
            step = views[0]["step"]
        else:
            return None
        blocks = {n: b.split([p[0].numel() for p in params], 1) for n, b in flat.items()}
        parts = []
        for i, (p, state) in enumerate(zip(params, views, strict=True)):
            part = {n: blocks[n][i].unflatten(1, p.shape[1:]) for n in flat}
            state.update(part, step=step)
            parts.append(part)
        self._flat[id(group)] = ([id(p) for p in params], flat, parts)
        return flat, step

    def _step_param(self, p: Tensor, group: dict, hp: dict[str, Tensor], active: Tensor) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(p.shape[0], dtype=torch.float64)
            state.update(self._init_buffers(p, hp, group))
        # every member's coefficients use its would-be step, so frozen ones stay finite too
        step = state["step"] + 1  # (K,) float64
        new_p, new_state = self._update(p, p.grad, state, hp, step, group)
        if bool(active.all()):
            p.copy_(new_p)
            state.update(new_state)
        else:
            keep = _per_member(p, active)[0].bool()  # (K, 1, ..., 1)
            p.copy_(torch.where(keep, new_p, p))
            state.update({n: torch.where(keep, v, state[n]) for n, v in new_state.items()})
        state["step"] = torch.where(active, step, state["step"])

    def _static(self, p: Tensor, hp: dict[str, Tensor], group: dict, make) -> list[Tensor]:
        """``_per_member(p, *make())`` for coefficients that depend only on the hyperparameters
        (not on the step): made once per ``hp`` (``_numbers`` makes a new one when a value
        changes) and layout, not at every step (~10 small ops, a quarter of a toy step)."""
        key = (id(group), p.device, p.dtype, p.dim())
        cached = self._statics.get(key)
        if cached is None or cached[0] is not hp:
            cached = self._statics[key] = (hp, _per_member(p, *make()))
        return cached[1]

    def _init_buffers(self, p: Tensor, hp: dict[str, Tensor], group: dict) -> dict[str, Tensor]:
        return {name: torch.zeros_like(p) for name in self.BUFFERS}

    def _update(self, p, grad, state, hp, step, group) -> tuple[Tensor, dict[str, Tensor]]:
        """The new parameter and buffers of all members, out of place (the caller masks them).
        ``hp``: name → (K,) float64 CPU; ``step``: (K,) float64, this step's count (from 1)."""
        raise NotImplementedError


def flat_view(params: list[Tensor]) -> Tensor | None:
    """The (K, N) tensor whose column blocks are ``params`` in order (each a view of it, member
    k's block in row k, as ``StackedMLP`` keeps them), or None where they aren't."""
    first = params[0]
    k, n = first.shape[0], sum(p[0].numel() for p in params)
    storage, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    for p in params:
        if (
            p.untyped_storage().data_ptr() != storage
            or p.storage_offset() != offset
            or p.stride(0) != n
            or not p[0].is_contiguous()
        ):
            return None
        offset += p[0].numel()
    return first.detach().as_strided((k, n), (n, 1), first.storage_offset())


def _fusable(params: list[Tensor]) -> bool:
    """Several parameters of one dtype and device (one concatenation holds them)."""
    return len(params) > 1 and len({(p.dtype, p.device) for p in params}) == 1


def _per_member(p: Tensor, *values: Tensor) -> list[Tensor]:
    """(K,) CPU numbers → (K, 1, ..., 1) tensors in ``p``'s dtype and device (one transfer).
    The scalar algebra happens before, in float64, as torch does it in Python floats."""
    shape = (len(values), p.shape[0]) + (1,) * (p.dim() - 1)
    return list(torch.stack([v.double() for v in values]).to(p.device, p.dtype).view(shape))
