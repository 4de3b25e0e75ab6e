"""Prefect flows: the seven stages as a flow, hyperparameter sweeps, and their deployments."""
