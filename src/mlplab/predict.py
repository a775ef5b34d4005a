"""Predict with a checkpoint: ``mlplab-predict ckpt_path=PATH input=new.csv [output=pred.csv]``.

Writes the input rows plus a ``prediction`` column (a value in the target's units for
regression; the class label for classification, with one ``prob_<class>`` column per class).
CSV and Parquet in and out; without ``output=`` the CSV goes to stdout, alone, so it pipes
(``mlplab-predict ... | head``). Categories never seen in training go to the "unknown"
bucket, with a note on stderr counting them. The output appears only once complete (written
to a temp file, then renamed).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from mlplab.config import CONF_DIR
from mlplab.errors import check, clean_exit
from mlplab.run.preflight import import_from_here, normalize_argv, preflight

if TYPE_CHECKING:  # imported where used: a mistake in the command line answers before torch
    import pandas as pd
    import torch


def predict_frame(model, features: torch.Tensor, batch_size: int, preprocessor) -> torch.Tensor:
    """Model predictions (probabilities or real-unit values) for (N, D) features."""
    import torch

    from mlplab.models.outputs import predictions

    with torch.inference_mode():
        parts = [
            predictions(model, model(features[i : i + batch_size]), preprocessor)
            for i in range(0, len(features), batch_size)
        ]
    return torch.cat(parts) if parts else torch.empty(0)


def with_predictions(df: pd.DataFrame, out: torch.Tensor, task: str, classes: list) -> pd.DataFrame:
    import numpy as np
    import torch

    result = df.copy()
    if task == "regression":
        result["prediction"] = out.numpy()
        return result
    probs = torch.stack([1 - out, out], dim=1) if task == "binary" else out  # (N, classes)
    result["prediction"] = np.asarray(classes, dtype=object)[probs.argmax(dim=1).numpy()]
    for i, label in enumerate(classes):
        result[f"prob_{label}"] = probs[:, i].numpy()
    return result


def predict(cfg: DictConfig) -> pd.DataFrame:
    """The input rows with their predictions, also written to ``cfg.output`` if it is set.
    Categories never seen in training get one note on stderr."""
    from mlplab.data.io import FILE_TYPES, read_table, write_table

    if cfg.get("output") is not None:
        suffix = str(cfg.output).lower().rsplit(".", 1)[-1]
        check(f".{suffix}" in FILE_TYPES, "output", cfg.output, f"file type one of {FILE_TYPES}")
    from mlplab.evaluate import note_unseen
    from mlplab.run.checkpoint import load_checkpoint

    model, datamodule = load_checkpoint(cfg.ckpt_path)
    pre = datamodule.preprocessor
    df = read_table(cfg.input, key="input")
    out = predict_frame(model, pre.features(df), cfg.batch_size, pre)
    note_unseen(pre, df)
    result = with_predictions(df, out, pre.task, pre.classes)
    if cfg.get("output") is not None:
        write_table(result, cfg.output)
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def _run(cfg: DictConfig) -> None:
    with clean_exit():
        result = predict(cfg)
    if cfg.get("output") is not None:
        print(f"wrote {len(result)} predictions to {cfg.output}")
        return
    text = result.to_csv(index=False)  # whole before the first byte: no half-written table
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no 2nd error at exit


def main(argv: list[str] | None = None) -> None:
    """``mlplab-predict``: check the command line, then let Hydra run it."""
    import_from_here()  # a model class of one's own, from the folder it is run in
    argv = normalize_argv(sys.argv[1:] if argv is None else argv)
    with clean_exit():
        preflight(argv, "predict")
    sys.argv = [sys.argv[0], *argv]
    _run()


if __name__ == "__main__":
    main()
