"""Train a population: one composed config plus a table of member values, all members at once.

    train_population(cfg, [{"seed": 42}, {"seed": 43}], out_dir)

``seeds=N``, ``cv=K`` and ``mlplab-sweep population=K`` all come here. Member k starts from the
weights ``mlplab-train`` would build for its config, trains on its own split and shuffle with
its own hyperparameters under the population's Trainer (built as a stand-alone run's), and ends
as ``out_dir/member_<k>/`` with the files a stand-alone run writes (``config.yaml``,
``run_info.json``, ``metrics.json``, ``checkpoints/best.ckpt``). ``out_dir`` gets
``summary.csv`` (a row per member), ``metrics.csv`` (a row per epoch and member), the
population's checkpoint (``resume=True``), its figures and tracker runs. A population that
doesn't fit in memory trains in chunks (``out_dir/chunk_<i>``); a model that isn't
``MLPModule`` can't be stacked: its members train one after another into the same layout.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from mlplab.config import ABSENT, RUN_IDENTITY, derived, flatten, get_key, portable_data, set_key
from mlplab.data.sources import shared_sources
from mlplab.errors import ConfigError, DivergedError, check, user_error
from mlplab.models.arguments import check_module
from mlplab.models.mlp import MLP
from mlplab.models.module import MLPModule
from mlplab.models.optimization import check_optimization
from mlplab.population.checkpoint import PopulationCheckpoint, find_checkpoint, fingerprint
from mlplab.population.members import POPULATION_KEYS, check_members
from mlplab.population.memory import chunk_size, footprint, memory_bound
from mlplab.population.module import DIVERGED, PopulationBatches, PopulationModule, StackedSplit
from mlplab.population.settings import Settings, population_settings
from mlplab.population.stacked import StackedMLP
from mlplab.population.tracking import PopulationTracker
from mlplab.run import build, interrupt
from mlplab.run.checkpoint import write_model_checkpoint
from mlplab.run.fit import StopAtEpochEnd, fit
from mlplab.run.provenance import run_environment, write_run_info
from mlplab.run.rundir import POPULATION_CHECKPOINT
from mlplab.run.threads import apply_threads

Hook = Callable[[int, list[dict]], Iterable[int]] | None


class MemberConfigs:
    """Member k's config as plain data: ``cfg`` resolved once (run dir and name stay
    references), member k's values set, and what follows them by interpolation resolved again
    with them (``data.seed: ${seed}``). ``seeds``/``cv`` are null: it re-runs as that member."""

    def __init__(self, cfg: DictConfig, members: list[dict]) -> None:
        self.cfg, self.members = cfg, [dict(m) for m in members]
        self.keys = sorted({key for member in members for key in member})
        raw = OmegaConf.to_container(cfg, resolve=False)
        self.base = portable_data(cfg, keep=self.keys)
        identity = set(derived(raw, RUN_IDENTITY))
        # what follows them (and ``seed``, kept a reference in every saved config)
        self.followers = [k for k in derived(raw, [*self.keys, "seed"]) if k not in identity]
        # the member keys something follows: set on the config to resolve the followers
        self.sources = {k for k in self.keys if get_key(raw, k) is not ABSENT and derived(raw, [k])}

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, k: int) -> dict:
        data = copy.deepcopy(self.base)
        for key in POPULATION_KEYS:
            data[key] = None
        values = self.members[k]
        for key, value in values.items():
            set_key(data, key, value)
        if self.followers:
            with override(self.cfg, {k: v for k, v in values.items() if k in self.sources}):
                for key in self.followers:
                    value = OmegaConf.select(self.cfg, key)
                    if OmegaConf.is_config(value):
                        value = OmegaConf.to_container(value, resolve=True)
                    set_key(data, key, value)
        return data


@contextmanager
def override(cfg: DictConfig, values: dict) -> Iterator[None]:
    """Inside: ``cfg`` holds ``values`` (dotted key → value), checked by its schema; its own
    values again after (an added key gone)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    done = []
    try:
        with read_write(cfg), open_dict(cfg):
            for key, value in values.items():
                before = get_key(raw, key)
                try:
                    OmegaConf.update(cfg, key, value, force_add=True)
                except OmegaConfBaseException as err:
                    why = (str(err).strip() or type(err).__name__).splitlines()[0]
                    raise ConfigError(f"{key}={value!r} is invalid: {why}") from None
                done.append((key, before))
        yield
    finally:
        with read_write(cfg), open_dict(cfg):
            for key, before in reversed(done):
                if before is ABSENT:
                    parent, _, leaf = key.rpartition(".")
                    node = OmegaConf.select(cfg, parent) if parent else cfg
                    node.pop(leaf, None)
                else:
                    OmegaConf.update(cfg, key, before)


def train_population(
    cfg: DictConfig,
    members: list[dict],
    out_dir: str | Path,
    member_dirs: list[Path] | None = None,
    on_epoch: Hook = None,
    resume: bool = False,
    before_fit: Callable[[], None] | None = None,
    max_members: int | None = None,
) -> pd.DataFrame:
    """Train ``cfg``'s members as one population; returns the summary (a row per member).

    Args:
        cfg: the composed config (no ``hydra`` node), its run dir the population's.
        members: one dict of dotted key → value per member (``population.members``).
        member_dirs: each member's run dir (default ``out_dir/member_<k>``; its name is the
            member's run name).
        on_epoch: ``PopulationModule``'s hook (report each epoch's rows, prune members).
        resume: continue from ``out_dir``'s checkpoints where there are any (checked before
            anything is written).
        before_fit: called once the first members are built and checked (a bad member value
            writes nothing).
        max_members: at most this many members at once (memory bounds it too).
    """
    out_dir = Path(out_dir)
    varying = check_members(cfg, members)
    configs = MemberConfigs(cfg, members)
    dirs = [Path(d) for d in member_dirs] if member_dirs else None
    dirs = dirs or [out_dir / f"member_{k:03d}" for k in range(len(members))]
    check(len(dirs) == len(members), "member_dirs", len(dirs), f"one per member ({len(members)})")
    columns = [*varying, *(k for k in configs.followers if k not in varying)]
    if build.model_class(cfg) is not MLPModule:
        return _one_after_another(cfg, configs, dirs, out_dir, columns, before_fit)
    settings = population_settings(cfg)
    with shared_sources():  # one table for every member's split
        first = build.build_datamodule(configs[0])
        first.setup("fit")
        parts = _chunks(configs, first, max_members)
        homes = (
            [out_dir] if len(parts) == 1 else [out_dir / f"chunk_{i}" for i in range(len(parts))]
        )
        starts = [
            find_checkpoint(home, [configs[k] for k in part]) if resume else None
            for part, home in zip(parts, homes, strict=True)
        ]
        tracker = PopulationTracker(cfg, out_dir, settings, configs, columns, dirs)
        rows, history, environment = [], [], run_environment()
        try:
            for i, (part, home, start) in enumerate(zip(parts, homes, starts, strict=True)):
                chunk = _Chunk(cfg, [configs[k] for k in part], [dirs[k] for k in part], settings)
                done = chunk.train(
                    first if i == 0 else None,
                    home,
                    start,
                    tracker.on_epoch(on_epoch, part),
                    before_fit if i == 0 else None,
                    tracker.boundary if i == 0 else None,
                )
                for j, row in enumerate(chunk.write(done, columns, environment)):
                    rows.append(row | {"member": part[j]})
                history += [r | {"member": part[r["member"]]} for r in done.history]
                if len(parts) > 1:  # what is done so far, in case a later chunk is killed
                    _write_tables(out_dir, rows, history)
                if interrupt.requested():  # Ctrl-C: the later chunks wait for resume=auto
                    break
            _write_tables(out_dir, rows, history)
            summary = pd.DataFrame(rows)
            tracker.done(history, summary)
        except BaseException:
            tracker.finish(failed=True)
            raise
    return summary


def _write_tables(out_dir: Path, rows: list[dict], history: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out_dir / "summary.csv", index=False)
    epochs = pd.DataFrame(history)
    if len(epochs):
        epochs = epochs.sort_values(["epoch", "member"], kind="stable")
    epochs.to_csv(out_dir / "metrics.csv", index=False)


def _chunks(configs: MemberConfigs, first, max_members: int | None) -> list[list[int]]:
    ok = max_members is None or (type(max_members) is int and max_members >= 1)
    check(ok, "max_members", max_members, "null or an integer >= 1 (members per population)")
    n = len(configs)
    shared = "data." not in " ".join(f"{k}." for k in configs.keys + configs.followers)
    base = configs.base["model"].get("activation")
    kinds = len({m.get("model.activation", base) for m in configs.members})
    need = footprint(configs[0], first, shared_split=shared, kinds=kinds)
    size = chunk_size(need, n, memory_bound(configs[0]), f"a population of {n}")
    size = min(size, max_members or size)
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


class _Chunk:
    """Members trained as one ``PopulationModule``: build, fit, test, write their run dirs."""

    def __init__(self, cfg: DictConfig, configs: list[dict], dirs: list[Path], settings: Settings):
        self.cfg, self.configs, self.dirs, self.settings = cfg, configs, dirs, settings

    def build(self, first) -> None:
        """The members' DataModules (one per distinct data config), nets and hyperparameters,
        seeded as ``mlplab.train`` seeds a run: member 0's model by ``build_model``, the others'
        nets from their own seed."""
        self.datamodules, nets, self.hparams, states = [], [], [], []
        built: dict[str, L.LightningDataModule] = {}
        if first is not None:
            built[json.dumps(self.configs[0]["data"], sort_keys=True)] = first
        for i, config in enumerate(self.configs):
            _seed(config["seed"], last=i == len(self.configs) - 1)
            key = json.dumps(config["data"], sort_keys=True)
            if key not in built:
                built[key] = _datamodule(config, key, next(iter(built.values()), None))
                built[key].setup("fit")
            dm = built[key]
            self.datamodules.append(dm)
            if i == 0:
                self.template = build.build_model(config, dm)
                nets.append(self.template.net)
                self.hparams.append(dict(self.template.hparams))
                states.append(torch.get_rng_state())  # its dropout's first draw comes next
                continue
            own = {k: v for k, v in config["model"].items() if not k.startswith("_")}
            hp = dict(self.template.hparams)
            hp |= build.accepted(MLPModule, own | build.model_arguments(config, dm))[0]
            clip = hp["gradient_clip_val"], hp["gradient_clip_algorithm"]
            check_module(hp["l1"], *clip, hp["group_batches"])  # member 0's: MLPModule's
            check_optimization(hp["optimizer"], hp["scheduler"])
            args = (hp["in_features"], hp["hidden_sizes"] or [], hp["out_features"])
            nets.append(MLP(*args, hp["activation"], hp["dropout"], hp["layer"]))
            self.hparams.append(hp)
            states.append(torch.get_rng_state())
        check(
            all(dm.class_weights == self.datamodules[0].class_weights for dm in self.datamodules),
            "data.balance_classes",
            True,
            "the same class weights for every member (members' splits differ in class counts)",
        )
        self.net = StackedMLP.from_members(nets, rng_states=states)

    def train(
        self, first, home: Path, start, on_epoch: Hook, before_fit, after_fit=None
    ) -> PopulationModule:
        """Fit the members, then test their best weights; ``after_fit(net, datamodules)`` sees
        the last weights (the decision boundary is drawn from them, as a run's)."""
        self.build(first)
        cfgs, hps, dms, settings = self.configs, self.hparams, self.datamodules, self.settings
        config = cfgs[0]
        x, y = _stack(dms, "train", 0), _stack(dms, "train", 1)
        batch_size = dms[0].hparams.batch_size
        batch_size = x.shape[1] if batch_size == "full" else int(batch_size)
        stopping = settings.stopping
        if stopping is not None:
            patience = [get_key(c, settings.patience_key, None) for c in cfgs]
            stopping = dataclasses.replace(stopping, patience=patience)
        scheduler = config.get("scheduler") or {}
        module = PopulationModule(
            self.net,
            x,
            y,
            task=dms[0].task,
            optimizer=config["optimizer"]["_target_"],
            members=[{k: v for k, v in c["optimizer"].items() if k != "_target_"} for c in cfgs],
            l1=[float(h["l1"]) for h in hps],
            class_weights=dms[0].class_weights,
            best=settings.best,
            stopping=stopping,
            target_scale=(  # each member's from its own training split
                [float(h.get("target_mean") or 0.0) for h in hps],
                [float(h.get("target_std") or 1.0) for h in hps],
            ),
            on_epoch=on_epoch,
            schedules=[c.get("scheduler") or {} for c in cfgs],
            monitor=scheduler.get("monitor", "val/loss"),
            clip=([h["gradient_clip_val"] for h in hps], hps[0]["gradient_clip_algorithm"]),
        )
        apply_threads(config.get("threads", "auto"), self.net.flat.numel(), batch_size)
        callbacks = [StopAtEpochEnd()]
        if settings.last:
            members = [fingerprint(c) for c in cfgs]
            callbacks.append(PopulationCheckpoint(home / POPULATION_CHECKPOINT, members))
        trainer = build.build_trainer(
            self.cfg, callbacks, [], module, limit_train_batches=None, default_root_dir=str(home)
        )
        if start is not None:
            print(f"population: resuming from {start[0]} (after epoch {start[1]['epoch']})")
        if before_fit is not None:  # every member is built and checked: nothing half-written
            before_fit()
        eval_size = int(dms[0].hparams.eval_batch_size)
        trainer.fit(
            module,
            train_dataloaders=PopulationBatches(
                x.shape[1],
                batch_size,
                [c["data"]["seed"] for c in cfgs],
                settings.limit_train_batches,
            ),
            val_dataloaders=StackedSplit(_stack(dms, "val", 0), _stack(dms, "val", 1), eval_size),
            ckpt_path=None if start is None else str(start[0]),
            weights_only=True,
        )
        if after_fit is not None:
            after_fit(self.net, dms)
        if settings.best is not None:
            module.use_best_weights()
        if config.get("test", True):
            test = StackedSplit(_stack(dms, "test", 0), _stack(dms, "test", 1), eval_size)
            trainer.test(module, dataloaders=test, verbose=False)
        return module

    def write(self, module: PopulationModule, columns: list[str], environment: dict) -> list[dict]:
        """Each member's run dir; its summary row."""
        rows = []

        # A net with member k's modules (its dropout and activation change the state_dict's
        # keys): one per distinct pair, each holding the weights of the member written now.
        def own(k: int) -> tuple:
            return self.hparams[k]["activation"], self.hparams[k]["dropout"]

        nets = {own(0): self.template.net}
        for k, (config, run_dir) in enumerate(zip(self.configs, self.dirs, strict=True)):
            write_run_info(config, run_dir, run_name=run_dir.name, environment=environment)
            flat = flatten(config)
            row = {"member": k, "run_dir": str(run_dir), "status": module.status[k]}
            row |= {key: flat.get(key) for key in columns}
            row |= {"best_epoch": module.best_epoch[k], "stopped_epoch": module.stopped_epoch[k]}
            if module.best_epoch[k] is not None:  # the best weights, also of one that diverged
                if own(k) not in nets:
                    nets[own(k)] = self.net.member(k).cpu()
                self.template.net = self.net.copy_member(k, nets[own(k)], module.best_flat)
                write_model_checkpoint(
                    run_dir / "checkpoints" / "best.ckpt",
                    self.template,
                    self.datamodules[k],
                    module.best_epoch[k],
                    self.hparams[k],
                )
            if module.status[k] == DIVERGED or k not in module.last_val:
                lr = config["optimizer"].get("lr")
                reason = (
                    f"training diverged: a non-finite loss at epoch {module.stopped_epoch[k]}; "
                    f"try a smaller learning rate than optimizer.lr={lr}"
                )
                (run_dir / "error.txt").write_text(f"{reason}\n")
                rows.append(row | {"error": reason})
                continue
            last = next(h for h in reversed(module.history) if h["member"] == k)
            metrics = {key: v for key, v in last.items() if key.startswith("train/")}
            metrics |= module.last_val[k]
            metrics |= {key: values[k] for key, values in module.test_results.items()}
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            rows.append(row | metrics)
        return rows


def _one_after_another(
    cfg: DictConfig, configs: MemberConfigs, dirs: list[Path], out_dir: Path, columns, before_fit
) -> pd.DataFrame:
    """A model that isn't ``MLPModule``: each member is a stand-alone run in its member dir."""
    rows, history = [], []
    for k, run_dir in enumerate(dirs):
        member = OmegaConf.create(configs[k])
        member.paths.output_dir, member.run_name = str(run_dir), run_dir.name
        run_dir.mkdir(parents=True, exist_ok=True)
        if k == 0 and before_fit is not None:
            before_fit()
        row = {"member": k, "run_dir": str(run_dir), "status": "ok"}
        row |= {key: flatten(configs[k]).get(key) for key in columns}
        try:
            metrics = fit(member)
        except Exception as err:  # noqa: BLE001 — a diverged member: the others go on
            if not isinstance(user_error(err), DivergedError):
                raise
            reason = str(user_error(err))
            (run_dir / "error.txt").write_text(f"{reason}\n")
            rows.append(row | {"status": DIVERGED, "error": reason})
            continue
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        rows.append(row | metrics)
        epochs = run_dir / "csv" / "metrics.csv"
        if epochs.is_file():
            table = pd.read_csv(epochs).groupby("epoch", as_index=False).first()
            history += [r | {"member": k} for r in table.to_dict("records")]
        if interrupt.requested():  # Ctrl-C: the later members wait for resume=auto
            break
    _write_tables(out_dir, rows, history)
    return pd.DataFrame(rows)


def _stack(datamodules, split: str, part: int) -> torch.Tensor:
    tensors = [dm.tensors[split][part] for dm in datamodules]
    if all(t is tensors[0] for t in tensors):  # one shared split: a view, no copies
        return tensors[0].expand(len(tensors), *tensors[0].shape)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ConfigError(f"population members' {split} splits differ in size {sorted(shapes)}")
    return torch.stack(tensors)


def _datamodule(config: dict, key: str, like: L.LightningDataModule | None):
    """A member's DataModule. Members share the data target and its keys, checked when the first
    was built through Hydra, and differ in values (seed, fold): ``type(like)(**values)`` leaves
    out Hydra's config round trip per member, the most of building a small member."""
    if like is None or key.count('"_target_"') > 1:  # the first, or nested objects to build
        return build.build_datamodule(config)
    return type(like)(**{k: v for k, v in config["data"].items() if not k.startswith("_")})


def _seed(seed, last: bool) -> None:
    """Seed a member's build as ``mlplab.train`` seeds a run (``seed_everything``). A member's
    build draws only from torch's CPU generator (its net's init), so the others seed just that;
    the last member seeds everything, which leaves the process's random state as a full
    seeding of each would."""
    plain = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32
    if last or not plain:  # seed_everything's own error for a seed out of its bounds
        L.seed_everything(seed, workers=True, verbose=False)
    else:
        torch.default_generator.manual_seed(seed)
