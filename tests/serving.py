"""HTTP helpers for the ``segpipe serve`` tests: post an image, read the Prometheus counters."""

from __future__ import annotations

import httpx


def post(url: str, data: bytes, fmt: str | None = None, multipart: bool = False, name: str = "image.png",
         timeout: float = 120) -> httpx.Response:
    """POST ``data`` to ``url``/predict as the raw body or as a multipart file, with ``?format=fmt``."""
    params = {"format": fmt} if fmt else None
    if multipart:
        return httpx.post(f"{url}/predict", params=params, files={"image": (name, data)}, timeout=timeout)
    return httpx.post(f"{url}/predict", params=params, content=data, timeout=timeout)


def metric_values(url: str) -> dict[str, float]:
    """Every sample of ``url``/metrics by its printed name and labels, e.g.
    ``segpipe_requests_total{code="200",method="POST",route="/predict"}``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in samples}


def requests_counted(url: str, code: int, route: str = "/predict", method: str = "POST") -> float:
    return metric_values(url).get(f'segpipe_requests_total{{code="{code}",method="{method}",route="{route}"}}', 0.0)
