"""Request bodies the service's tests share."""

from __future__ import annotations

from typing import Any

import numpy as np

import client
from client.arrays import encode
from tests import seed


def chain_request(**changes: Any) -> dict[str, Any]:
    case = seed.chain()
    return {"network": case.network, "samples": case.samples, **changes}


def heavy_request(epochs: int, batch: int = 256) -> dict[str, Any]:
    """An SGD request whose time grows with `epochs` (a 64-128-128-1 MLP on `batch` samples)."""
    rng = np.random.default_rng(0)
    net = client.mlp([64, 128, 128, 1], seed=0).model_dump(exclude_unset=True)
    samples = {
        "inputs": {"input": encode(rng.normal(size=(batch, 64)))},
        "targets": {"output": encode(rng.normal(size=(batch, 1)))},
    }
    return {"network": net, "samples": samples, "learning_rate": 0.01, "epochs": epochs}
