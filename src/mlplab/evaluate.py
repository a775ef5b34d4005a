"""Evaluate a checkpoint: ``mlplab-eval ckpt_path=PATH [split=test|val] [input=FILE] [data=NAME]``.

By default it rebuilds the checkpoint's own dataset and split, so the numbers equal the
training run's test phase. ``input=FILE`` (CSV/Parquet with the target column) scores every
row of that file instead; ``data=NAME`` (+ overrides) evaluates on another data config. The
checkpoint's fitted preprocessing is used in every case.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

import mlplab.config  # noqa: F401 — resolvers used by data configs
from mlplab.checkpoint import load_checkpoint
from mlplab.data.batches import BatchIterator
from mlplab.data.io import read_table
from mlplab.errors import check, clean_exit
from mlplab.noise import silence_known_noise
from mlplab.report import print_metrics
from mlplab.train import CONF_DIR

SPLITS = ("val", "test")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Metrics of ``cfg.ckpt_path`` on the chosen split or file."""
    silence_known_noise()
    check(cfg.split in SPLITS, "split", cfg.split, f"expected one of {list(SPLITS)}")
    model, datamodule = load_checkpoint(cfg.ckpt_path)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    run = trainer.validate if cfg.split == "val" else trainer.test
    if cfg.get("input"):
        pre = datamodule.preprocessor
        df = read_table(cfg.input, key="input")
        batches = BatchIterator(pre.features(df), pre.targets(df), batch_size=cfg.batch_size)
        results = run(model, dataloaders=batches, verbose=False)
    else:
        if cfg.get("data") is not None:  # another data config, the checkpoint's preprocessing
            state = datamodule.state_dict()
            datamodule = instantiate(cfg.data)
            datamodule.load_state_dict(state)
        results = run(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in results[0].items()}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    with clean_exit():
        metrics = evaluate(cfg)
    print(f"checkpoint: {cfg.ckpt_path}")
    print_metrics(metrics, title=f"{cfg.split} metrics")
    if cfg.get("output"):
        Path(cfg.output).write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
