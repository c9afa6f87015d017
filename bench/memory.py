"""P4: one 32 MiB request: the server's peak memory (itself and its workers) against the body."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np

from bench.common import rss_kib
from client.arrays import encode, request_body
from service.launcher import start_server

BYTES_PER_NUMBER = {"lists": 19, "base64": 10.7, "binary": 8}


def body_of(form: str, target: int = 32 * 2**20 - 65536) -> tuple[bytes, dict[str, str]]:
    """A gradients request just under 32 MiB (about `target` bytes), its arrays as nested
    lists, base64 or binary (framed by the client), and its headers."""
    rng = np.random.default_rng(0)
    width = 400
    rows = int(target / (width * BYTES_PER_NUMBER[form]))
    arrays: Any = {"lists": lambda a: a.tolist(), "base64": encode, "binary": lambda a: a}[form]
    while True:
        x = rng.normal(size=(rows, width))
        body = {
            "network": {
                "units": [{"id": "x", "role": "input", "size": width}, {"id": "o", "role": "output"}],
                "weights": [{"source": "x", "target": "o", "value": arrays(rng.normal(size=(width, 1)))}],
            },
            "samples": {"inputs": {"x": arrays(x)}, "targets": {"o": arrays(np.zeros((rows, 1)))}},
            "include_units": False,
        }
        if form == "binary":
            framed = request_body(body)
            content, headers = framed.content, framed.headers
        else:
            content, headers = json.dumps(body).encode(), {"content-type": "application/json"}
        if len(content) <= 32 * 2**20:
            return content, headers
        rows = int(rows * 0.97)


def run() -> dict[str, list[float]]:
    """Peak extra memory over the idle server, as a multiple of the body's size."""
    results = {}
    for form in ("binary", "base64", "lists"):
        body, headers = body_of(form)
        # a binary body of 32 MiB holds 4.2 million numbers, past the default activation limit
        server = start_server({"GRADSERVE_MAX_ACTIVATION_ELEMENTS": str(8_000_000)})
        try:
            idle = rss_kib(server.pid)
            response = httpx.post(
                server.url + "/v1/gradients",
                content=body,
                headers=headers,
                timeout=120,
            )
            response.raise_for_status()
            peak = rss_kib(server.pid, "VmHWM")
        finally:
            server.stop()
        results[f"{len(body) / 2**20:.1f} MiB body, {form}"] = [(peak - idle) * 1024 / len(body)]
    return results
