"""Evaluate a checkpoint: ``mlplab-eval ckpt_path=PATH [split=test|val] [input=FILE] [data=NAME]``.

By default it rebuilds the checkpoint's own dataset and split (its data file from where
training read it, from any folder), so the numbers equal the training run's test phase.
``input=FILE`` (CSV/Parquet with the target column) scores every row of that file instead;
``data=NAME`` (+ overrides) evaluates on another data config. The checkpoint's fitted
preprocessing is used in every case; categories it never saw count in a note on stderr.
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
from mlplab.run.preflight import import_from_here, normalize_argv, preflight

EVAL_SPLITS = ("val", "test")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Metrics of ``cfg.ckpt_path`` on the chosen split or file."""
    return evaluation(cfg)[0]


def evaluation(cfg: DictConfig) -> tuple[dict[str, float], str]:
    """``evaluate``'s metrics and what they were computed on, e.g. ``metrics on new.csv (1,234
    rows)``. Categories never seen in training get one note on stderr."""
    # Imported here: a config mistake answers before Lightning's ~6 s import.
    import lightning as L

    from mlplab.data.batches import BatchIterator
    from mlplab.data.io import read_table
    from mlplab.data.sources import check_recorded_files
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
        note_unseen(pre, df)
        results = run(model, dataloaders=batches, verbose=False)
        about = f"metrics on {cfg.input} ({_rows(len(df))})"
    else:
        if cfg.get("data") is not None:  # another data config, the checkpoint's preprocessing
            if cfg.get("seed") is None:  # split like the training run did, so test rows
                with open_dict(cfg):  # stay test rows (a different seed mixes in train rows)
                    cfg.seed = datamodule.hparams.seed
            state = datamodule.state_dict()
            datamodule = instantiate_checked(cfg.data, _convert_="all")
            datamodule.load_state_dict(state)
        else:  # the checkpoint's own data: still where training read it?
            hp = datamodule.hparams
            check_recorded_files(
                hp.get("source"),
                hp.get("options") or {},
                f"ckpt_path={str(cfg.ckpt_path)!r}",
                "move it back, or score the file where it is now with input=<file>",
            )
        results = run(model, datamodule=datamodule, verbose=False)
        frame = getattr(datamodule, "frames", {}).get(cfg.split)
        about = f"{cfg.split} metrics"
        if frame is not None:  # a DataModule of the template's kind
            note_unseen(datamodule.preprocessor, frame)
            about += f" ({_rows(len(frame))})"
    return {k: float(v) for k, v in results[0].items()}, about


def note_unseen(pre, df) -> None:
    """A note on stderr when ``df`` holds categories the training split never had."""
    from mlplab.data.preprocess import unseen_note

    note = unseen_note(pre.unseen_categories(df))
    if note:
        print(note, file=sys.stderr, flush=True)


def _rows(n: int) -> str:
    return f"{n:,} row{'s' * (n != 1)}"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def _run(cfg: DictConfig) -> None:
    with clean_exit():
        metrics, about = evaluation(cfg)
        if cfg.get("output"):
            _write_json(cfg.output, metrics)
    print(f"checkpoint: {cfg.ckpt_path}")
    print(about)
    print_metrics(metrics, title="")


def _write_json(path: str, metrics: dict) -> None:
    """Write the metrics as JSON atomically (a temp file next to it, then a rename)."""
    out = Path(path)
    check(out.parent.is_dir(), "output", path, f"its folder {str(out.parent)!r} does not exist")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> None:
    """``mlplab-eval``: check the command line, then let Hydra run it."""
    import_from_here()  # a model class of one's own, from the folder it is run in
    argv = normalize_argv(sys.argv[1:] if argv is None else argv)
    with clean_exit():
        preflight(argv, "eval")
    sys.argv = [sys.argv[0], *argv]
    _run()


if __name__ == "__main__":
    main()
