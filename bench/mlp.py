"""P2: a dense 784-256-256-10 sigmoid MLP, batch 256: the engine and gradserve end to end,
against a hand-written NumPy forward-backward (and torch's CPU autograd when installed)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import Samples, timed
from client import Client, to_numpy
from service import engine, wire
from service.endpoints import requests


@dataclass(frozen=True)
class Mlp:
    sizes: tuple[int, ...]
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    x: np.ndarray
    y: np.ndarray

    def network(self, arrays: Any = lambda a: a.tolist()) -> dict[str, Any]:
        """The wire form: one entry per layer, sigmoid hidden layers, a linear output."""
        ids = [f"l{k}" for k in range(len(self.sizes))]
        units: list[dict[str, Any]] = [{"id": ids[0], "role": "input", "size": self.sizes[0]}]
        for k, size in enumerate(self.sizes[1:], start=1):
            role = "output" if k == len(self.sizes) - 1 else "hidden"
            units.append({"id": ids[k], "role": role, "size": size, "bias": arrays(self.biases[k - 1])})
        weights = [
            {"source": ids[k], "target": ids[k + 1], "value": arrays(w)} for k, w in enumerate(self.weights)
        ]
        return {"units": units, "weights": weights}

    def samples(self, arrays: Any = lambda a: a.tolist()) -> dict[str, Any]:
        return {"inputs": {"l0": arrays(self.x)}, "targets": {f"l{len(self.sizes) - 1}": arrays(self.y)}}


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


def torch_pass(mlp: Mlp) -> Any:
    """The same forward and backward with torch's CPU autograd, in float64; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    ws = [torch.tensor(w, requires_grad=True) for w in mlp.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in mlp.biases]
    x, y = torch.tensor(mlp.x), torch.tensor(mlp.y)

    def run() -> None:
        z = x
        for k, (w, b) in enumerate(zip(ws, bs, strict=True)):
            s = z @ w + b
            z = s if k == len(ws) - 1 else torch.sigmoid(s)
        loss = 0.5 * ((z - y) ** 2).sum() / len(x)
        for p in (*ws, *bs):
            p.grad = None
        loss.backward()

    return run


def run(
    repeat: int = 30, sizes: tuple[int, ...] = (784, 256, 256, 10), batch: int = 256, url: str | None = None
) -> dict[str, Samples]:
    mlp = make_mlp(sizes, batch)
    net = wire.Network.model_validate(mlp.network())
    plan = requests.compile_network(net)
    bound = requests.bind_samples(plan, wire.Samples.model_validate(mlp.samples()), True)
    got, expected = engine_pass(plan, bound), hand_written(mlp)
    for k, w in enumerate(plan.weights):  # the same numbers, or the timing means nothing
        np.testing.assert_allclose(
            got[w.params].reshape(w.shape), expected[2 * (len(plan.weights) - 1 - k)], rtol=1e-9, atol=1e-12
        )
    runs = {
        "hand-written NumPy": lambda: hand_written(mlp),
        "engine": lambda: engine_pass(plan, bound),
        "engine, compile included": lambda: engine_pass(requests.compile_network(net), bound),
    }
    torch_run = torch_pass(mlp)
    if torch_run is not None:
        runs["torch CPU autograd"] = torch_run
    results = timed(runs, repeat)
    if url is not None:
        with Client(url) as gs:
            as_numpy = (mlp.network(lambda a: a), mlp.samples(lambda a: a))  # base64 both ways

            def numpy_in_numpy_out() -> list[np.ndarray]:
                """What a NumPy user does: arrays in, the answer's arrays read as NumPy."""
                got = gs.gradients(*as_numpy, include_units=False, array_encoding="base64").gradients
                return [to_numpy(w.value) for w in got.weights] + [to_numpy(b) for b in got.biases.values()]

            as_lists = (mlp.network(), mlp.samples())
            end_to_end = timed(
                {
                    "end to end, base64 arrays": numpy_in_numpy_out,
                    "end to end, JSON lists": lambda: gs.gradients(
                        *as_lists, include_units=False, array_encoding="list"
                    ),
                },
                max(3, repeat // 3),
            )
            results.update(end_to_end)
    return results
