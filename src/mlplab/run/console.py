"""What a run prints: one line saying what runs where (the resolved config as a tree goes to
``config_tree.log``), the final metrics labelled by where they come from, where the run and its
figures are — and silence for Lightning's chatter.

Cheap to import (rich and omegaconf only): entry points use it before Lightning is loaded.
"""

from __future__ import annotations

import logging
import shlex
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

# Top-level config nodes in the order a reader wants them; the rest follow.
TREE_ORDER = ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger")
CONFIG_TREE_FILE = "config_tree.log"


# ---- known noise ----------------------------------------------------------------------------
# Lightning's cloud-logger tip ("💡 Tip: ... litlogger ..."), its accelerator lines ("GPU
# available: False, used: False": ``describe_run`` says where the run runs), why fit stopped
# (said by the run itself) and which checkpoint the test loads (the metrics table says).
CHATTER = (
    "litlogger",
    " available: ",
    "`Trainer.fit` stopped: ",
    "Restoring states from the checkpoint path",
    "Loaded model weights from the checkpoint",
    "not found. Creating it.",  # logger=mlflow's first run of an experiment
)


def _not_chatter(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in CHATTER)


def silence_known_noise() -> None:
    """Silence exactly those messages; every other warning still shows."""
    # torch deprecated `isinstance(x, LeafSpec)`; Lightning still does it on every fit.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    # They go through whichever of these loggers was imported last; addFilter ignores a filter
    # already present, so calling this twice is harmless.
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.loggers.mlflow",
    ):
        logging.getLogger(name).addFilter(_not_chatter)
    # MLflow's first use of a store: "Creating initial MLflow database tables..." (INFO).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def one_console_handler() -> None:
    """When logging is configured (Hydra's job logging prints to the console and to
    ``train.log``), drop the console handler Lightning adds to its ``lightning`` logger at
    import, or each of its messages prints twice."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)


# ---- the config -----------------------------------------------------------------------------
def config_tree(cfg: DictConfig) -> Tree:
    """The resolved config as a tree: one branch per top-level node, its YAML inside."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    tree = Tree("config", guide_style="dim")
    keys = [k for k in TREE_ORDER if k in plain] + [k for k in plain if k not in TREE_ORDER]
    scalars = {k: plain[k] for k in keys if not isinstance(plain[k], dict)}
    for key in keys:
        if isinstance(plain[key], dict):
            text = OmegaConf.to_yaml(plain[key]) if plain[key] else "{}"
            tree.add(key).add(Syntax(text.rstrip(), "yaml", background_color="default"))
    if scalars:
        tree.add(Syntax(OmegaConf.to_yaml(scalars).rstrip(), "yaml", background_color="default"))
    return tree


def print_config(cfg: DictConfig, run_dir: str | Path, show: bool) -> None:
    """Save the config tree as ``config_tree.log`` in ``run_dir``; print it too if ``show``."""
    tree = config_tree(cfg)
    if show:
        Console().print(tree)
    with open(Path(run_dir) / CONFIG_TREE_FILE, "w") as f:
        Console(file=f, color_system=None, width=100).print(tree)


def describe_run(datamodule, model, trainer, threads: int, experiment: str | None = None) -> str:
    """``run: experiment … · data … · model … · optimizer … · device`` in one line."""
    parts = [f"experiment={experiment}"] if experiment else []
    frames = getattr(datamodule, "frames", {})
    hp = getattr(datamodule, "hparams", {})
    if frames:
        rows = "/".join(str(len(frames[s])) for s in ("train", "val", "test") if s in frames)
        width = getattr(datamodule, "in_features", "?")
        task = getattr(datamodule, "task", "")
        parts.append(f"data {hp.get('source', '?')}: {rows} rows × {width} features, {task}")
    params = sum(p.numel() for p in model.parameters())
    arch = ""
    mhp = getattr(model, "hparams", {})
    if "hidden_sizes" in mhp:
        arch = f" {list(mhp.get('hidden_sizes') or [])} {mhp.get('activation', '')}"
    parts.append(f"model {type(model).__name__}{arch}, {params:,} parameters")
    opt = mhp.get("optimizer") if isinstance(mhp.get("optimizer"), dict) else None
    if opt:
        parts.append(f"{str(opt.get('_target_', '')).rsplit('.', 1)[-1]} lr={opt.get('lr')}")
    device = trainer.strategy.root_device.type
    parts.append(f"{device} × {trainer.world_size}, {threads} thread{'s' * (threads != 1)}")
    return "run: " + " · ".join(parts)


# ---- the results ----------------------------------------------------------------------------
def print_metrics(
    metrics: dict[str, float], title: str = "final metrics", sources: dict | None = None
) -> None:
    """A table of ``metrics``; ``sources`` (prefix → where from) adds a column saying which
    come from the last epoch and which from the best checkpoint."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    if sources:
        table.add_column("from")
    for key in sorted(metrics):
        row = [key, f"{metrics[key]:.4f}"]
        if sources:
            row.append(sources.get(key.split("/")[0], ""))
        table.add_row(*row)
    Console().print(table)


def print_where(run_dir: str | Path) -> None:
    """The run's last lines: where it is, its figures, and the command that evaluates its best
    checkpoint (its last one without a best)."""
    run_dir = Path(run_dir)
    print(f"run dir: {run_dir}")
    figures = sorted(p.name for p in run_dir.glob("*.png"))
    if figures:
        print(f"figures: {', '.join(figures)}")
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = run_dir / "checkpoints" / name
        if ckpt.is_file():
            print(f"evaluate: mlplab-eval ckpt_path={shlex.quote(str(ckpt))}")
            break
