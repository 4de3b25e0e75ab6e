"""The connection to the MLflow store: its URI, one client per store, the fluent API for one block, and how to
tell an outage (calls wait in the outbox) from a refusal (set aside) or refused credentials (an error)."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.params import TrackingParams
from segpipe.stage import telemetry_off

HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def tracking_uri(params: TrackingParams) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's SQLite file (made absolute)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.default_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


@functools.cache
def _client_for(uri: str):
    import mlflow

    return mlflow.MlflowClient(uri)


def mlflow_client(params: TrackingParams):
    """The mlflow module and a client for the store, one per store (opening SQLite takes seconds)."""
    telemetry_off()
    for key, value in HTTP_SETTINGS.items():
        os.environ.setdefault(key, value)
    import mlflow

    return mlflow, _client_for(tracking_uri(params))


@contextmanager
def fluent_store(params: TrackingParams) -> Iterator[Any]:
    """mlflow's fluent API pointed at the store for one block. ``mlflow.set_tracking_uri`` also writes
    MLFLOW_TRACKING_URI into the environment, which would send every later run of this process (a served flow,
    a sweep's trials) to this project's store, so the variable is restored afterwards."""
    mlflow, _ = mlflow_client(params)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(params))
    try:
        yield mlflow
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a library logger's warnings for the duration of a block."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def unreachable(exc: Exception) -> bool:
    """Errors that mean 'the server is not there right now' (connection refused, timeouts, 5xx)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, MlflowException) and any(
        word in str(exc) for word in ("Connection", "connection", "Max retries", "timed out", "503", "502", "500"))


def refused_credentials(exc: Exception) -> bool:
    """The server is there but does not accept who we are (MLflow's basic auth: 401, or 403 for a user
    without the permission)."""
    text = str(exc)
    return any(word in text for word in ("401", "403", "Unauthorized", "UNAUTHENTICATED", "PERMISSION_DENIED"))


def credentials_error(params: TrackingParams, waiting: Path) -> SegpipeError:
    return SegpipeError(f"{tracking_uri(params)} refused the credentials: set MLFLOW_TRACKING_USERNAME and "
                        f"MLFLOW_TRACKING_PASSWORD to a user of the server; the calls wait in {waiting}")


def refusal(params: TrackingParams, op: dict[str, Any], exc: Exception) -> str:
    detail = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{tracking_uri(params)} refused a '{op.get('op')}' call ({type(exc).__name__}: {detail})"

