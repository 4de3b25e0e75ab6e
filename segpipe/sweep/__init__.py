"""Hyperparameter sweeps: the Optuna study that holds the search state (:mod:`segpipe.sweep.study`), what to try
next (:mod:`segpipe.sweep.search`), a training's reports to its trial (:mod:`segpipe.sweep.reporting`), how trials
ended (:mod:`segpipe.sweep.results`) and the summary (:mod:`segpipe.sweep.report`); the Prefect flow that runs the
trials is ``flows/sweep.py``."""
