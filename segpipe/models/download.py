"""Weights downloads happen only when asked; a failed one is a clear error."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable

from torch import nn

from segpipe.errors import SegpipeError


def download_guard(build: Callable[[], nn.Module], what: str) -> nn.Module:
    """Build a model whose weights torchvision downloads; a network failure becomes a one-line error."""
    try:
        return build()
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        if "download" in str(exc).lower() or isinstance(exc, urllib.error.URLError | ConnectionError):
            raise SegpipeError(
                f"could not download {what} ({exc}); check the network, or set model.weights: null "
                "(from scratch) or to a local checkpoint file") from None
        raise
