"""``mlplab-sweep``: Bayesian hyperparameter search with Optuna. ``cli``: the arguments, the study
and the usage; ``search``: the search file; ``objective``: one trial; ``population``: the trials
of this process (one at a time, or ``population=K`` as one population), ``retry`` a killed
population's; ``launch``: storage and workers; ``report``: what a sweep leaves behind;
``multirun``: ``summary.csv`` after ``mlplab-train -m`` (a Hydra callback, no Optuna).

Nothing is imported here: the Hydra callback of every training run imports ``multirun``
without paying for Optuna.
"""
