"""Prefect flows: the pipeline stages as a flow, hyperparameter sweeps, and their deployments.

Importing this package (``python -m flows.pipeline`` does, before Prefect is imported) switches telemetry off and
gives Prefect's temporary local API the time a busy 2-core machine needs to start; a user's own settings win.
"""

import os

from segpipe.stage import telemetry_off

PREFECT_DEFAULTS = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}

telemetry_off()
for _key, _value in PREFECT_DEFAULTS.items():
    os.environ.setdefault(_key, _value)
