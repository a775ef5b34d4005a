"""``mlplab-sweep``: Bayesian hyperparameter search with Optuna (``cli`` has the usage).

- ``search``: the search file (``conf/hparams_search/NAME.yaml``): checks, suggestions, sampler,
  pruner;
- ``objective``: one trial = compose the train config + ``train()`` in this process;
- ``population``: the trials in this process, one at a time or ``population=K`` as one
  population; ``retry``: a killed population's trials go on from its checkpoint;
- ``launch``: storage, local worker processes, a SLURM job array (submitit);
- ``report``: ``trials.csv``, ``best.yaml``, plots, the summary;
- ``cli``: the arguments, the study, ``main``;
- ``multirun``: ``summary.csv`` after ``mlplab-train -m`` (a Hydra callback, no Optuna).

Nothing is imported here: the Hydra callback of every training run imports ``multirun``
without paying for Optuna.
"""
