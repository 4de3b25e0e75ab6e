"""Delivery: an operation is executed now, after anything still queued, or kept in the outbox; the outbox is
replayed in order once the store is back."""

from __future__ import annotations

from typing import Any

from segpipe.params import Params, TrackingParams
from segpipe.tracking.calls import execute
from segpipe.tracking.connection import credentials_error, refusal, refused_credentials, tracking_uri, unreachable
from segpipe.tracking.outbox import Outbox

FILE_KEYS = ("paths", "onnx", "weights", "example")  # what an operation names on disk, copied when it is queued


def flush_locked(params: TrackingParams, outbox: Outbox) -> int:
    """Replay the queue in order until it is empty or the server drops out; return how many were delivered. A call
    the server refuses for good is set aside (reported) and the rest go on; refused credentials stop with an
    error and keep everything queued."""
    ops, delivered = outbox.pending(), 0
    for index, op in enumerate(ops):
        try:
            execute(params, op)
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if unreachable(exc):
                return delivered
            if refused_credentials(exc):
                raise credentials_error(params, outbox.path) from None
            outbox.reject(ops, index, refusal(params, op, exc))
            continue
        outbox.delivered(ops, index)
        delivered += 1
    return delivered


def flush(params: TrackingParams) -> int:
    """Replay the outbox (``segpipe sync-tracking``); return how many operations were delivered."""
    outbox = Outbox()
    if not outbox.exists():
        return 0
    with outbox.locked():
        return flush_locked(params, outbox)


def pending_count() -> int:
    """How many operations wait in the outbox."""
    outbox = Outbox()
    if not outbox.exists():
        return 0
    with outbox.locked():
        return len(outbox.pending())


def submit(params: Params, op: dict[str, Any]) -> None:
    """Deliver ``op`` now (after anything still queued), or queue it if the server cannot be reached; a call the
    server refuses for good is reported and set aside, never lost silently."""
    tracking, outbox = params.tracking, Outbox()
    if not tracking.enabled:
        return
    with outbox.locked():
        if outbox.exists():
            flush_locked(tracking, outbox)
        if outbox.exists():  # still unreachable: queue behind the rest, to keep the order
            outbox.append(op, FILE_KEYS)
            return
        try:
            execute(tracking, op)
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if refused_credentials(exc) and not unreachable(exc):
                outbox.append(op, FILE_KEYS)
                raise credentials_error(tracking, outbox.path) from None
            if not unreachable(exc):
                outbox.set_aside(op, refusal(tracking, op, exc))
                return
            print(f"tracking: {tracking_uri(tracking)} unreachable ({type(exc).__name__}); keeping MLflow calls in "
                  f"{outbox.path} until it is back (`segpipe sync-tracking`)")
            outbox.append(op, FILE_KEYS)

