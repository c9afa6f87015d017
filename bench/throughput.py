"""P1: the chain x -> j -> k -> o, one sample: requests per second of /v1/gradients against a bare
FastAPI endpoint that only validates the same body, both served by uvicorn the same way and
loaded by the same generator."""

from __future__ import annotations

import json
import sys

from bench.common import Samples, throughput
from service.launcher import start_server

CHAIN = {
    "network": {
        "units": [{"id": "x", "role": "input"}, {"id": "j"}, {"id": "k"}, {"id": "o", "role": "output"}],
        "weights": [
            {"source": "x", "target": "j", "value": 0.5},
            {"source": "j", "target": "k", "value": -0.3},
            {"source": "k", "target": "o", "value": 0.8},
        ],
    },
    "samples": {"inputs": {"x": [1.5]}, "targets": {"o": [0.25]}},
}


def run(seconds: float = 4.0, rounds: int = 3) -> dict[str, Samples]:
    body = json.dumps(CHAIN).encode()
    results: dict[str, Samples] = {}
    servers = {
        "bare endpoint (validation only)": ({}, [sys.executable, "-m", "bench.bare"]),
        "gradserve": ({"GRADSERVE_LOG_LEVEL": "warning"}, None),
    }
    for name, (env, command) in servers.items():
        server = start_server(env, command)
        try:
            throughput(server.url + "/v1/gradients", body, 1.0)  # warm up
            # seconds per request, so that the report's ratios read as costs
            results[name] = [
                1.0 / throughput(server.url + "/v1/gradients", body, seconds) for _ in range(rounds)
            ]
        finally:
            server.stop()
    return results
