"""Hyperparameter sweeps: the search (:mod:`segpipe.sweep.search`) and the report (:mod:`segpipe.sweep.report`);
the Prefect flow that runs the trials is ``flows/sweep.py``."""
