"""A training's side of a sweep trial: report the validation objective of each epoch to the trial, ask the study's
pruner whether to go on, and tell the study how the trial ended. A test objective (an experiment that compares arms)
exists only after the evaluate stage: training then reports nothing, and the sweep tells the study the run's value
(:func:`segpipe.sweep.results.settle_trial`)."""

from __future__ import annotations

import math
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.params import TrialParams
from segpipe.sweep.study import open_trial


class TrialReporter:
    """The Optuna trial ``train.trial`` names, opened once per training."""

    def __init__(self, trial: TrialParams) -> None:
        if trial.number is None:
            raise SegpipeError("train.trial: a study needs its trial number too (both are set by the sweep)")
        self.trial = open_trial(trial.study, trial.number)
        self.objective: str = self.trial.study.user_attrs["objective"]
        self.label = f"trial {trial.number} of study '{trial.study}'"
        self.on_test = self.objective.startswith("test_")

    def should_stop(self, epoch: int, row: dict[str, Any]) -> bool:
        """Report epoch ``epoch``'s objective (from the history ``row``); True when the pruner stops the trial."""
        if self.on_test:
            return False
        value = row.get(self.objective)
        if value is None or not math.isfinite(value):
            raise SegpipeError(f"{self.label} optimises {self.objective}, which epoch {epoch} did not give a finite "
                               f"value of (it has {sorted(k for k in row if k.startswith('val_'))})")
        self.trial.report(float(value), epoch)
        return self.trial.should_prune()

    def finish(self, summary: dict[str, Any]) -> None:
        """Tell the study the trial's end: pruned, or complete with the objective at the epoch training kept; the
        kept epoch's validation metrics go with it (what the sweep ranks on, wherever the trial ran)."""
        import optuna

        self.trial.set_user_attr("metrics", {k: v for k, v in summary.items() if isinstance(v, int | float)})
        self.trial.set_user_attr("steps", summary.get("steps"))  # auto resolves per machine: what this one ran on
        if self.on_test:
            return
        if summary.get("pruned"):
            self.trial.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        else:
            self.trial.study.tell(self.trial, summary[self.objective], skip_if_finished=True)
