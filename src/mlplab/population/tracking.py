"""A population's tracking outputs: one learning-curves figure of every member and one wandb
run for the whole population (not one per member).

``PopulationTracker(cfgs, out_dir)`` reads what the members' config asks for, as a stand-alone
run does:

- ``callbacks.learning_curves`` (on by default, ``=null`` or ``callbacks=none`` turns it off):
  ``out_dir/learning_curves.png`` with a line per member (``mlplab.figures.population``), drawn
  after training; with it off matplotlib is not even imported;
- a ``WandbLogger`` among the loggers (``logger=wandb``, ``logger=default``): one wandb run
  named after ``out_dir``, in the group ``logger.wandb.group`` (a sweep sets its study) or else
  ``out_dir``'s parent's name; config = the members' shared config and what varies. Each
  epoch logs ``<metric>/member_<k>`` for every member that trained in it (x axis ``epoch``), so
  the ``train`` and ``val`` sections hold each metric's members side by side and a line plot
  of ``val/loss/member_.*`` overlays them; the end adds ``curves/<loss>`` (one chart, one
  line per member), the ``summary`` table (a row per member), the mean and std of every
  metric as the run's summary, and the figure. The run is finished at the end, with exit code
  1 when training raises (``closes_trackers``), so the next run in this process is its own.

With neither, the tracker does nothing (``metrics.csv`` already holds every member's numbers).
``tracker.chunk(members)`` is the view ``train_in_chunks`` gives each chunk's
``train_population``: member numbers of the whole population, one run and figure for all.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mlplab.config import portable_data

Hook = Callable[[int, list[dict]], Iterable[int]] | None
_OPEN: list[PopulationTracker] = []  # trackers with an unfinished wandb run


def closes_trackers(train: Callable) -> Callable:
    """Decorator: when ``train`` raises, every population's wandb run still open is finished
    with exit code 1 (``finish_trackers``' rule), then the error goes on."""

    @functools.wraps(train)
    def wrapper(*args, **kwargs):
        try:
            return train(*args, **kwargs)
        except BaseException:
            for tracker in list(_OPEN):
                tracker.finish(failed=True)
            raise

    return wrapper


def _figure_file(cfg: DictConfig) -> str | None:
    node = (cfg.get("callbacks") or {}).get("learning_curves")
    return None if node is None else str(node.get("filename") or "learning_curves.png")


def _wandb_node(cfg: DictConfig) -> dict | None:
    for node in (cfg.get("logger") or {}).values():
        if node is not None and str(node.get("_target_", "")).endswith("WandbLogger"):
            return OmegaConf.to_container(node, resolve=True)
    return None


def _cell(value):
    """A cell wandb's Table takes: a number, a string or None (NaN → None, a list → JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return value.item() if hasattr(value, "item") else value


def _name(k: int, flat: dict, varying: list[str]) -> str:
    """``member 3: lr=0.01, seed=45``: the member and its own values (short key names)."""
    values: dict = {}
    for key in varying:
        values.setdefault(key.split(".")[-1], flat.get(key))
    own = [f"{n}={v:.3g}" if isinstance(v, float) else f"{n}={v}" for n, v in values.items()]
    return f"member {k}: {', '.join(own)}" if own else f"member {k}"


class PopulationTracker:
    """The figure and the wandb run of the population of ``cfgs`` written into ``out_dir``.

    Attributes: ``history`` (after ``done``, or as chunks report: one row per epoch and
    member, members numbered in the whole population), ``run`` (the wandb run, or None),
    ``figure`` (the PNG written, or None)."""

    def __init__(
        self, cfgs: list[DictConfig], out_dir: str | Path, flats: list[dict] | None = None
    ) -> None:
        self.cfgs, self.out_dir, self._flats = cfgs, Path(out_dir), flats
        self.figure_file = _figure_file(cfgs[0])
        self.wandb = _wandb_node(cfgs[0])
        self.history: list[dict] = []
        self.run = None
        self.figure: Path | None = None

    # ---- during training ------------------------------------------------------------------
    def on_epoch(self, hook: Hook, members: list[int] | None = None) -> Hook:
        """``PopulationModule``'s ``on_epoch``: log the epoch's rows, then call ``hook``.
        ``members``: the population's number of each local member (a chunk's)."""
        if self.wandb is None:
            return hook

        def logged(epoch: int, rows: list[dict]):
            self.log(epoch, rows, members)
            return hook(epoch, rows) if hook is not None else []

        return logged

    def log(self, epoch: int, rows: list[dict], members: list[int] | None = None) -> None:
        """One wandb step: ``<metric>/member_<k>`` of every row, at x = ``epoch``."""
        run = self._open()
        values: dict = {"epoch": epoch}
        for row in rows:
            k = members[row["member"]] if members is not None else row["member"]
            for key, value in row.items():
                if key not in ("epoch", "member"):
                    values[f"{key}/member_{k:03d}"] = value
        run.log(values)

    def _open(self):
        if self.run is not None:
            return self.run
        import wandb

        from mlplab.run.build import _wandb_id

        node, cfgs = self.wandb, self.cfgs
        flats, varying = self.varying
        shared = portable_data(cfgs[0])
        for key in varying:  # the shared config: what every member has
            *parents, leaf = key.split(".")
            branch = shared
            for parent in parents:
                branch = branch.get(parent) or {}
            branch.pop(leaf, None)
        population = {"size": len(cfgs), "varying": varying}
        population["members"] = {k: [_cell(f.get(k)) for f in flats] for k in varying}
        self.run = wandb.init(
            project=node.get("project"),
            entity=node.get("entity"),
            name=self.out_dir.name,
            group=node.get("group") or self.out_dir.resolve().parent.name,
            id=_wandb_id(str(self.out_dir)),  # one id per population dir, as per run dir
            resume="allow",  # a resumed population logs on in its run (as Lightning's logger)
            dir=str(node.get("save_dir") or self.out_dir),
            job_type=node.get("job_type"),
            tags=node.get("tags") or None,
            notes=node.get("notes"),
            mode="offline" if node.get("offline") else "online",
            config={"config": shared, "population": population},
            settings=node.get("settings") or None,
            reinit="create_new",  # never another run's: this one is finished here
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        _OPEN.append(self)
        return self.run

    @functools.cached_property
    def varying(self) -> tuple[list[dict], list[str]]:
        """The members' configs flattened (``{"optimizer.lr": ...}``; the caller's ``flats``
        when it has them), the keys they differ in."""
        from mlplab.population.run import _differing, _flat

        flats = self._flats or [_flat(portable_data(c)) for c in self.cfgs]
        return flats, _differing(flats)

    # ---- after training -------------------------------------------------------------------
    def chunk(self, members: list[int]) -> _Chunk:
        """The tracker of one chunk: its local member j is the population's ``members[j]``."""
        return _Chunk(self, members)

    def done(self, history: list[dict], summary: pd.DataFrame) -> None:
        """Draw the figure, log the summary, finish the run (the population has trained)."""
        self.history = history
        if self.figure_file is not None:
            from mlplab.figures.population import plot_population_curves

            flats, varying = self.varying
            what = f" (differ in {', '.join(varying)})" if varying else ""
            rows = list(summary.itertuples(index=False))
            self.figure = plot_population_curves(
                pd.DataFrame(history),
                self.out_dir / self.figure_file,
                ended={int(row.member): (row.status, _cell(row.stopped_epoch)) for row in rows},
                names={int(r.member): _name(int(r.member), flats[r.member], varying) for r in rows},
                title=f"Learning curves: {len(summary)} members{what}",
            )
        if self.wandb is None:
            return
        self._log_end(pd.DataFrame(history), summary)
        self.finish()

    def _log_end(self, history: pd.DataFrame, summary: pd.DataFrame) -> None:
        import wandb

        from mlplab.population.members import mean_and_std

        run = self._open()
        members = [int(m) for m in summary["member"]]
        end: dict = {}
        for key in ("train/loss", "val/loss"):
            if key not in history:
                continue
            finite = history[history[key].map(math.isfinite)]  # a diverged member's NaN: its end
            lines = [finite[finite.member == m] for m in members]
            end[f"curves/{key}"] = wandb.plot.line_series(
                xs=[line.epoch.tolist() for line in lines],
                ys=[line[key].astype(float).tolist() for line in lines],
                keys=[f"member_{m:03d}" for m in members],
                title=key,
                xname="epoch",
            )
        rows = [[_cell(v) for v in row] for row in summary.itertuples(index=False)]
        end["summary"] = wandb.Table(
            columns=list(summary.columns), data=rows, allow_mixed_types=True
        )
        if self.figure is not None:
            end["learning_curves"] = wandb.Image(str(self.figure))
        run.log(end)
        run.summary.update({k: v for k, v in mean_and_std(summary).items() if math.isfinite(v)})

    def finish(self, failed: bool = False) -> None:
        """Finish the wandb run (exit code 1 when ``failed``); nothing when none is open."""
        if self.run is not None and self in _OPEN:
            _OPEN.remove(self)
            self.run.finish(exit_code=1 if failed else 0)


class _Chunk:
    """What ``train_population`` sees of the whole population's tracker for one chunk."""

    def __init__(self, parent: PopulationTracker, members: list[int]) -> None:
        self.parent, self.members = parent, members

    def on_epoch(self, hook: Hook) -> Hook:
        return self.parent.on_epoch(hook, self.members)

    def done(self, history: list[dict], summary: pd.DataFrame) -> None:
        """Keep the chunk's rows (renumbered); the whole population's ``done`` draws and logs."""
        rows = [row | {"member": self.members[row["member"]]} for row in history]
        self.parent.history.extend(rows)
