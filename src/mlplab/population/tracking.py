"""A population's figures and tracker runs: what its config's callbacks and loggers ask for.

- ``LearningCurves`` → ``learning_curves.png``: train and val loss per epoch, a line per member
  (``mlplab.figures.population``); a member that ended early ends in a marker.
- ``DecisionBoundary`` (binary data on 2 numeric features) → ``decision_boundary.png``: the
  members' mean P(class 1) over the plane, each member through its own preprocessing; only for
  replicas (``seeds=``, ``cv=``): the mean of members with other hyperparameters (a sweep's
  trials) is the boundary of none of them.
- wandb gets a run per member, all in one group (``WandbRuns``), which wandb's group view
  aggregates (mean and spread of a metric per epoch).
- MLflow's population run is a parent run: each member logs its epochs to a nested run of its
  own (``MemberRuns``), and the parent gets the config and the mean and std at the end.
- Any other logger (TensorBoard) gets one run for the population: each epoch logs
  ``<metric>/member_<k>`` of the members that trained in it, so a metric's members sit side by
  side; the shared config and what varies are its hyperparameters.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import get_class
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from mlplab.models.arguments import is_real
from mlplab.population.members import are_replicas
from mlplab.population.stats import DIVERGED, mean_and_std
from mlplab.run import build
from mlplab.run.trackers import CSVLogger, finish_trackers


class PopulationTracker:
    """The figures and tracker runs of the population written into ``out_dir``."""

    def __init__(
        self, cfg: DictConfig, out_dir: Path, settings, configs, columns, dirs: list[Path]
    ) -> None:
        """``dirs``: the members' run dirs (their names are the members' run names)."""
        self.out_dir, self.settings, self.columns = Path(out_dir), settings, columns
        self.replicas = are_replicas(configs.keys)  # what follows a seed follows it too
        # before training: a bad one fails first
        self.loggers, wandb = _loggers(cfg, self.out_dir)
        names = [d.name for d in dirs]
        self.member_runs = [
            MemberRuns(logger, names) for logger in self.loggers if isinstance(logger, MLFlowLogger)
        ]
        population = {"size": len(configs), "varying": columns}
        for logger in self.loggers:
            logger.log_hyperparams({"config": configs.base, "population": population})
        self.wandb = None
        if wandb is not None:
            self.wandb = WandbRuns(cfg, wandb, self.out_dir, dirs, configs, population)
        self.figures: dict[str, Path] = {}

    # ---- during training ------------------------------------------------------------------
    def on_epoch(self, hook, members: list[int]):
        """``PopulationModule``'s ``on_epoch``: log the epoch's rows (local member j is the
        population's ``members[j]``), then call ``hook`` with the population's numbers."""
        if not self.loggers and self.wandb is None and hook is None:
            return None

        def logged(epoch: int, rows: list[dict]):
            rows = [row | {"member": members[row["member"]]} for row in rows]
            values = {"epoch": epoch}
            for row in rows:
                for key, value in row.items():
                    if key not in ("epoch", "member"):
                        values[f"{key}/member_{row['member']:03d}"] = value
            for logger in self.loggers:
                if not isinstance(logger, MLFlowLogger):  # its members log to their own runs
                    logger.log_metrics(values, step=epoch)
            for runs in self.member_runs:
                runs.log_epoch(epoch, rows)
            if self.wandb is not None:
                self.wandb.log_epoch(epoch, rows)
            stop = list(hook(epoch, rows)) if hook is not None else []
            local = {m: j for j, m in enumerate(members)}
            if not set(stop) <= set(local):
                raise ValueError(f"on_epoch stops members {stop}: training now are {members}")
            return [local[m] for m in stop]

        return logged

    def boundary(self, net, datamodules) -> None:
        """``decision_boundary.png``: the members' mean P(class 1) (the first chunk's), on a
        grid of half a single run's resolution per axis: K members cost K× a run's grid."""
        name = self.settings.boundary
        if name is None or not self.replicas:
            return
        from mlplab.figures.callbacks import DecisionBoundary
        from mlplab.figures.plots import plot_decision_boundary

        if not DecisionBoundary.applies(datamodules[0]):
            return

        pres = [dm.preprocessor for dm in datamodules]

        @torch.no_grad()
        def mean_proba(points: np.ndarray) -> np.ndarray:
            frame = pd.DataFrame(points, columns=pres[0].numeric)
            if all(pre is pres[0] for pre in pres):  # one split for all: one preprocessing
                x = pres[0].features(frame).to(net.flat.device)  # (M, 2): every member's input
            else:
                x = torch.stack([pre.features(frame) for pre in pres]).to(net.flat.device)
            training = net.training
            net.eval()
            proba = torch.sigmoid(net(x).squeeze(-1)).mean(0)
            net.train(training)
            return proba.cpu().numpy()

        pre, train = pres[0], datamodules[0].frames["train"]
        self.figures["decision_boundary"] = plot_decision_boundary(
            mean_proba,
            train[pre.numeric].to_numpy(dtype=np.float64),
            datamodules[0].tensors["train"][1].numpy(),
            self.out_dir / name,
            feature_names=pre.numeric,
            title=f"Decision boundary: mean of {net.k} members",
            class_names=[str(c) for c in pre.classes],
            resolution=100,
        )

    # ---- after training -------------------------------------------------------------------
    def done(self, history: list[dict], summary: pd.DataFrame) -> None:
        """Draw the learning curves, log the end, finish the runs."""
        history = pd.DataFrame(history)
        if self.settings.curves is not None:
            from mlplab.figures.population import plot_population_curves

            rows = summary.to_dict("records")
            what = f" (differ in {', '.join(self.columns)})" if self.columns else ""
            self.figures["learning_curves"] = plot_population_curves(
                history,
                self.out_dir / self.settings.curves,
                ended={int(r["member"]): (r["status"], _cell(r["stopped_epoch"])) for r in rows},
                names={int(r["member"]): _name(r, self.columns) for r in rows},
                title=f"Learning curves: {len(summary)} members{what}",
            )
        for logger in self.loggers:
            if isinstance(logger, MLFlowLogger):
                stats = {k: v for k, v in mean_and_std(summary).items() if math.isfinite(v)}
                logger.log_metrics(stats)
        for runs in self.member_runs:
            runs.end(summary, self.columns, history)
        if self.wandb is not None:
            self.wandb.end(summary)
        self.finish()

    def finish(self, failed: bool = False) -> None:
        """End the tracker runs (FAILED, wandb's with exit code 1, when ``failed``)."""
        for runs in self.member_runs:
            runs.close("FAILED" if failed else "FINISHED")
        if self.wandb is not None:
            self.wandb.close(failed)
        finish_trackers(failed, self.loggers)
        self.loggers, self.member_runs, self.wandb = [], [], None


class MemberRuns:
    """MLflow's runs of a population's members, nested in the logger's run (the parent): MLflow
    nests a run that has the tag ``mlflow.parentRunId``. Each member's run is made at its first
    epoch and gets that member's epochs under the plain metric names, then its final metrics and
    the values its members differ in."""

    def __init__(self, logger: MLFlowLogger, names: list[str]) -> None:
        self.logger, self.client, self.names = logger, logger.experiment, names
        self.runs: dict[int, str] = {}  # member → run id
        self.open: set[int] = set()

    def run_id(self, member: int) -> str:
        if member not in self.runs:
            tags = {"mlflow.parentRunId": self.logger.run_id}
            name = self.names[member]
            run = self.client.create_run(self.logger.experiment_id, tags=tags, run_name=name)
            self.runs[member] = run.info.run_id
            self.open.add(member)
        return self.runs[member]

    def log(self, member: int, values: dict, step: int = 0, params: dict | None = None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items()]
        params = [Param(k, str(v)) for k, v in (params or {}).items()]
        self.client.log_batch(self.run_id(member), metrics=metrics, params=params)

    def log_epoch(self, epoch: int, rows: list[dict]) -> None:
        for row in rows:
            values = {k: v for k, v in row.items() if k not in ("epoch", "member")}
            self.log(row["member"], values, step=epoch)

    def end(self, summary: pd.DataFrame, columns: list[str], history: pd.DataFrame) -> None:
        """Each member's final metrics that its epochs didn't log (``test/...``), the values
        it differs in as params; FAILED for a diverged member, else FINISHED."""
        for row in summary.to_dict("records"):
            member = int(row["member"])
            final = {k: v for k, v in row.items() if "/" in k and k not in history}
            final = {k: v for k, v in final.items() if k != "run_dir" and is_real(v)}
            epochs = history.epoch[history.member == member] if "epoch" in history else []
            step = int(epochs.max()) if len(epochs) else 0
            self.log(member, final, step=step, params={k: row.get(k) for k in columns})
            status = "FAILED" if row.get("status") == DIVERGED else "FINISHED"
            self.client.set_terminated(self.run_id(member), status)
            self.open.discard(member)

    def close(self, status: str) -> None:
        """End the runs still open (a population that failed or was stopped)."""
        for member in sorted(self.open):
            self.client.set_terminated(self.runs[member], status)
        self.open.clear()


class WandbRuns:
    """wandb's runs of a population's members: a run per member, in one group
    (``logger.wandb.group``, which a sweep sets to its study, or else the population dir's name)
    with one job type (``cv``, ``seeds``, or ``population`` for a sweep's), so that wandb's group
    view aggregates the members as it does runs of one experiment. Member k's run is a
    ``WandbLogger`` of the configured node, named after its dir, with that dir's id
    (``build.wandb_id``: a resumed population logs on in each member's run) and wandb files, and
    its own config; it is made at its first epoch (nothing is written into a member's dir before
    training) and stays open beside the others (``reinit="create_new"``) until the end, when it
    gets its final metrics as its summary and finishes (exit code 1: it diverged)."""

    def __init__(
        self, cfg: DictConfig, node, out_dir: Path, dirs: list[Path], configs, population: dict
    ) -> None:
        self.node = OmegaConf.to_container(node, resolve=True)
        self.dirs, self.configs, self.population = dirs, configs, population
        self.group = self.node.get("group") or out_dir.resolve().name
        kinds = [key for key in ("cv", "seeds") if cfg.get(key) is not None]
        self.job_type = kinds[0] if kinds else "population"
        self.open: dict[int, WandbLogger] = {}
        build.quiet_wandb(bool(self.node.get("offline")))
        build.instantiate_checked(self.node)  # no run yet: a bad argument fails before training

    def run(self, member: int) -> WandbLogger:
        if member not in self.open:
            run_dir = self.dirs[member]
            node = self.node | {
                "name": run_dir.name,
                "save_dir": str(run_dir),
                "id": build.wandb_id(run_dir),  # makes the dir, where wandb writes its files
                "group": self.group,
                "job_type": self.job_type,
                "reinit": "create_new",  # beside the other members' runs, not instead of them
            }
            self.open[member] = build.instantiate_checked(node)
            population = self.population | {"member": member}
            hparams = {"config": self.configs[member], "population": population}
            self.open[member].log_hyperparams(hparams)
        return self.open[member]

    def log_epoch(self, epoch: int, rows: list[dict]) -> None:
        for row in rows:
            values = {k: v for k, v in row.items() if k != "member"}
            self.run(row["member"]).log_metrics(values, step=epoch)

    def end(self, summary: pd.DataFrame) -> None:
        """Each member's final metrics (val of its last weights, test of its best), status and
        epochs as its run's summary; exit code 1 for a diverged member, else 0."""
        for row in summary.to_dict("records"):
            member = int(row["member"])
            final = {k: v for k, v in row.items() if "/" in k and k != "run_dir" and is_real(v)}
            ends = {k: _cell(row.get(k)) for k in ("status", "best_epoch", "stopped_epoch")}
            experiment = self.run(member).experiment
            experiment.summary.update(final | {k: v for k, v in ends.items() if v is not None})
            experiment.finish(exit_code=1 if row.get("status") == DIVERGED else 0)
            del self.open[member]

    def close(self, failed: bool) -> None:
        """Finish the runs still open (a population that failed or was stopped)."""
        for member in sorted(self.open):
            self.open[member].experiment.finish(exit_code=1 if failed else 0)
        self.open.clear()


def _loggers(cfg: DictConfig, out_dir: Path) -> tuple[list, DictConfig | None]:
    """The configured loggers but the CSV and wandb ones, each making one run for the
    population; the first wandb logger's node (its runs are ``WandbRuns``)."""
    loggers, wandb = [], None
    for node in (cfg.get("logger") or {}).values():
        if node is None:
            continue
        cls = get_class(str(node.get("_target_")))
        if issubclass(cls, WandbLogger):
            wandb = node if wandb is None else wandb
        if issubclass(cls, CSVLogger | LightningCSVLogger | WandbLogger):
            continue
        node = OmegaConf.to_container(node, resolve=True)
        if issubclass(cls, MLFlowLogger):
            node["run_name"] = out_dir.name
        loggers.append(build.instantiate_checked(node))
    return loggers, wandb


def _cell(value):
    """A cell wandb's Table takes: a number, a string or None (NaN → None, a list → JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return value.item() if hasattr(value, "item") else value


def _name(row: dict, columns: list[str]) -> str:
    """``member 3: lr=0.01, seed=45``: the member and its own values (short key names)."""
    values: dict = {}
    for key in columns:
        values.setdefault(key.split(".")[-1], row.get(key))
    own = [f"{n}={v:.3g}" if isinstance(v, float) else f"{n}={v}" for n, v in values.items()]
    return f"member {row['member']}: {', '.join(own)}" if own else f"member {row['member']}"
