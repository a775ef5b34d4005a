"""What ``mlplab-sweep population=K`` tells Optuna about a population's members: each
member's metric after each validation (``Reporter``, as the pruning callback reports for a
trial trained alone) and each trial's end (``Teller``, as ``study.optimize`` tells it)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

from mlplab.sweep.objective import Objective
from mlplab.sweep.report import print_trial


class Teller:
    """Tells Optuna a trial's result once and prints its line (what ``optimize`` does)."""

    def __init__(self, study: optuna.Study) -> None:
        self.study, self.told = study, {}

    def __call__(self, trial, value=None, state=TrialState.COMPLETE) -> None:
        self.told[trial.number] = self.study.tell(trial, value, state=state)
        print_trial(self.study, self.told[trial.number])

    def failed(self, objective: Objective, trial: optuna.Trial, err: BaseException) -> None:
        objective.record_failure(trial, err)
        self(trial, state=TrialState.FAIL)

    def like(self, trial: optuna.Trial, earlier: FrozenTrial) -> None:
        """A repeat: ``earlier``'s state and value (``duplicate_of`` is set already)."""
        if earlier.state == TrialState.FAIL:
            trial.set_user_attr("fail_reason", earlier.user_attrs.get("fail_reason"))
        value = earlier.value if earlier.state == TrialState.COMPLETE else None
        self(trial, value, state=earlier.state)


class Reporter:
    """``on_epoch``: each member's metric goes to its trial, as the pruning callback reports
    after each validation; the members whose trials the pruner prunes stop."""

    def __init__(self, metric: str, trials: list[optuna.Trial]) -> None:
        self.metric, self.trials = metric, trials
        self.values: list[dict[int, float]] = [{} for _ in trials]  # member → {epoch: value}
        self.pruned: set[int] = set()
        self.epochs = 0

    def __call__(self, epoch: int, rows: list[dict]) -> list[int]:
        self.epochs += 1
        stop = []
        for row in rows:
            k, value = row["member"], row.get(self.metric)
            # No per-epoch value (a test/ metric), or the member diverged in this epoch (a run
            # alone raises before its pruning callback reports): nothing to report.
            if value is None or not math.isfinite(row["val/loss"]):
                continue
            trial = self.trials[k]
            trial.report(float(value), epoch)
            self.values[k][epoch] = float(value)
            if trial.should_prune():
                self.pruned.add(k)
                stop.append(k)
        return stop
