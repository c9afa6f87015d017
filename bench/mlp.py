"""P2: a dense 784-256-256-10 sigmoid MLP, batch 256, engine against hand-written NumPy."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import engine, wire


@dataclass(frozen=True)
class Mlp:
    sizes: tuple[int, ...]
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    x: np.ndarray
    y: np.ndarray

    def network(self) -> dict[str, Any]:
        """The wire form: one entry per layer, sigmoid hidden layers, a linear output."""
        ids = [f"l{k}" for k in range(len(self.sizes))]
        units: list[dict[str, Any]] = [{"id": ids[0], "role": "input", "size": self.sizes[0]}]
        for k, size in enumerate(self.sizes[1:], start=1):
            role = "output" if k == len(self.sizes) - 1 else "hidden"
            units.append({"id": ids[k], "role": role, "size": size, "bias": self.biases[k - 1].tolist()})
        weights = [
            {"source": ids[k], "target": ids[k + 1], "value": w.tolist()} for k, w in enumerate(self.weights)
        ]
        return {"units": units, "weights": weights}

    def samples(self) -> dict[str, Any]:
        return {"inputs": {"l0": self.x.tolist()}, "targets": {f"l{len(self.sizes) - 1}": self.y.tolist()}}


def make_mlp(sizes: tuple[int, ...] = (784, 256, 256, 10), batch: int = 256, seed: int = 0) -> Mlp:
    rng = np.random.default_rng(seed)
    weights = [rng.normal(scale=1 / np.sqrt(a), size=(a, b)) for a, b in itertools.pairwise(sizes)]
    biases = [rng.normal(scale=0.1, size=b) for b in sizes[1:]]
    return Mlp(
        sizes, weights, biases, rng.normal(size=(batch, sizes[0])), rng.normal(size=(batch, sizes[-1]))
    )


def hand_written(mlp: Mlp) -> list[np.ndarray]:
    """What a user would write by hand: forward, then backward, layer by layer (mean reduction)."""
    zs = [mlp.x]
    for k, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        s = zs[-1] @ w + b
        zs.append(s if k == len(mlp.weights) - 1 else 1.0 / (1.0 + np.exp(-s)))
    delta = (zs[-1] - mlp.y) / len(mlp.x)
    grads = []
    for k in range(len(mlp.weights) - 1, -1, -1):
        grads.append(zs[k].T @ delta)
        grads.append(delta.sum(axis=0))
        if k:
            delta = (delta @ mlp.weights[k].T) * zs[k] * (1.0 - zs[k])
    return grads


def engine_pass(plan: engine.Plan, batch: engine.Batch) -> np.ndarray:
    """The engine's forward and backward, and every gradient."""
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    delta = engine.backward(plan, plan.theta, values, batch.y)
    return engine.gradient(plan, values, delta, 1.0 / batch.size)


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(
    repeat: int = 30, sizes: tuple[int, ...] = (784, 256, 256, 10), batch: int = 256
) -> dict[str, list[float]]:
    mlp = make_mlp(sizes, batch)
    net = wire.Network.model_validate(mlp.network())
    plan = engine.compile_network(net)
    bound = engine.bind_samples(plan, wire.Samples.model_validate(mlp.samples()), True)
    got, expected = engine_pass(plan, bound), hand_written(mlp)
    for k, w in enumerate(plan.weights):  # same numbers, or the timing means nothing
        np.testing.assert_allclose(
            got[w.params].reshape(w.shape), expected[2 * (len(plan.weights) - 1 - k)], rtol=1e-9, atol=1e-12
        )
    return {
        "hand-written NumPy": timed(lambda: hand_written(mlp), repeat),
        "engine": timed(lambda: engine_pass(plan, bound), repeat),
        "engine compile": timed(lambda: engine.compile_network(net), max(3, repeat // 5)),
    }
