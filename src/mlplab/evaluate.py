"""Evaluate a checkpoint: ``mlplab-eval ckpt_path=PATH [split=test|val] [input=FILE] [data=NAME]``.

By default it rebuilds the checkpoint's own dataset and split, so the numbers equal the
training run's test phase. ``input=FILE`` (CSV/Parquet with the target column) scores every
row of that file instead; ``data=NAME`` (+ overrides) evaluates on another data config. The
checkpoint's fitted preprocessing is used in every case.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from mlplab.config import CONF_DIR
from mlplab.errors import check, clean_exit
from mlplab.run.console import print_metrics, silence_known_noise
from mlplab.run.preflight import normalize_argv, preflight

EVAL_SPLITS = ("val", "test")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Metrics of ``cfg.ckpt_path`` on the chosen split or file."""
    # Imported here: a config mistake answers before Lightning's ~6 s import.
    import lightning as L

    from mlplab.data.batches import BatchIterator
    from mlplab.data.io import read_table
    from mlplab.run.build import instantiate_checked
    from mlplab.run.checkpoint import has_step, load_checkpoint

    silence_known_noise()
    check(cfg.split in EVAL_SPLITS, "split", cfg.split, f"expected one of {list(EVAL_SPLITS)}")
    model, datamodule = load_checkpoint(cfg.ckpt_path)
    step = "validation_step" if cfg.split == "val" else "test_step"
    check(
        has_step(model, step),
        "split",
        cfg.split,
        f"a split the model can score: {type(model).__name__} has no {step}",
    )
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
        # The training run's eval batch size by default: the same float sums, the same numbers.
        size = cfg.get("batch_size") or datamodule.hparams.eval_batch_size
        batches = BatchIterator(pre.features(df), pre.targets(df), batch_size=size)
        results = run(model, dataloaders=batches, verbose=False)
    else:
        if cfg.get("data") is not None:  # another data config, the checkpoint's preprocessing
            if cfg.get("seed") is None:  # split like the training run did, so test rows
                with open_dict(cfg):  # stay test rows (a different seed mixes in train rows)
                    cfg.seed = datamodule.hparams.seed
            state = datamodule.state_dict()
            datamodule = instantiate_checked(cfg.data, _convert_="all")
            datamodule.load_state_dict(state)
        results = run(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in results[0].items()}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def _run(cfg: DictConfig) -> None:
    with clean_exit():
        metrics = evaluate(cfg)
        if cfg.get("output"):
            _write_json(cfg.output, metrics)
    print(f"checkpoint: {cfg.ckpt_path}")
    print_metrics(metrics, title=f"{cfg.split} metrics")


def _write_json(path: str, metrics: dict) -> None:
    """Write the metrics as JSON atomically (a temp file next to it, then a rename)."""
    out = Path(path)
    check(out.parent.is_dir(), "output", path, f"its folder {str(out.parent)!r} does not exist")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> None:
    """``mlplab-eval``: check the command line, then let Hydra run it."""
    argv = normalize_argv(sys.argv[1:] if argv is None else argv)
    with clean_exit():
        preflight(argv, "eval")
    sys.argv = [sys.argv[0], *argv]
    _run()


if __name__ == "__main__":
    main()
