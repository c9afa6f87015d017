"""P4: one 32 MiB request: the server's peak memory (itself and its workers) against the body."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np

from bench.common import rss_kib
from client.arrays import encode
from service.launcher import start_server


def body_of(form: str, target: int = 32 * 2**20 - 65536) -> bytes:
    """A gradients request just under `target` bytes, its arrays as nested lists or base64."""
    rng = np.random.default_rng(0)
    width = 400
    per_row = width * (19 if form == "lists" else 10.7)
    rows = int(target / per_row)
    arrays: Any = (lambda a: a.tolist()) if form == "lists" else encode
    body = b""
    while True:
        x = rng.normal(size=(rows, width))
        body = json.dumps(
            {
                "network": {
                    "units": [{"id": "x", "role": "input", "size": width}, {"id": "o", "role": "output"}],
                    "weights": [{"source": "x", "target": "o", "value": arrays(rng.normal(size=(width, 1)))}],
                },
                "samples": {"inputs": {"x": arrays(x)}, "targets": {"o": arrays(np.zeros((rows, 1)))}},
                "include_units": False,
            }
        ).encode()
        if len(body) <= 32 * 2**20:
            return body
        rows = int(rows * 0.97)


def run() -> dict[str, list[float]]:
    """Peak extra memory over the idle server, as a multiple of the body's size."""
    results = {}
    for form in ("base64", "lists"):
        body = body_of(form)
        server = start_server()
        try:
            idle = rss_kib(server.pid)
            response = httpx.post(
                server.url + "/v1/gradients",
                content=body,
                headers={"content-type": "application/json"},
                timeout=120,
            )
            response.raise_for_status()
            peak = rss_kib(server.pid, "VmHWM")
        finally:
            server.stop()
        results[f"{len(body) / 2**20:.1f} MiB body, {form}"] = [(peak - idle) * 1024 / len(body)]
    return results
