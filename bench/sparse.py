"""P3: a sparse random DAG of about 1,000 single units and 8,000 weights (fan-in 8, about 60
levels), batch 256: the engine and gradserve end to end, against a per-unit NumPy loop (one
operation vectorised over the batch per unit)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import Samples, timed
from client import Client, to_numpy
from service import engine, wire
from service.convert import binding
from service.wire import ArrayEncoding


@dataclass(frozen=True)
class Dag:
    sources: list[np.ndarray]  # per non-input unit, the indices of the units feeding it
    weights: list[np.ndarray]  # per non-input unit, its incoming weights
    n_inputs: int
    n_outputs: int
    x: np.ndarray
    y: np.ndarray

    @property
    def n_units(self) -> int:
        return self.n_inputs + len(self.sources)

    def network(self, columns: bool = False) -> dict[str, Any]:
        units: list[dict[str, Any]] = [{"id": f"u{k}", "role": "input"} for k in range(self.n_inputs)]
        first_output = self.n_units - self.n_outputs
        for k in range(self.n_inputs, self.n_units):
            role = "output" if k >= first_output else "hidden"
            units.append({"id": f"u{k}", "role": role, "activation": "tanh"})
        pairs = [
            (f"u{int(s)}", f"u{self.n_inputs + j}", float(w))
            for j, (srcs, ws) in enumerate(zip(self.sources, self.weights, strict=True))
            for s, w in zip(srcs, ws, strict=True)
        ]
        if columns:  # the compact form: three columns, the values one array
            source, target, value = zip(*pairs, strict=True)
            return {
                "units": units,
                "weights": {"source": list(source), "target": list(target), "value": np.array(value)},
            }
        return {"units": units, "weights": [{"source": a, "target": b, "value": w} for a, b, w in pairs]}

    def samples(self) -> dict[str, Any]:
        first_output = self.n_units - self.n_outputs
        return {
            "inputs": {f"u{k}": self.x[:, k] for k in range(self.n_inputs)},
            "targets": {f"u{first_output + k}": self.y[:, k] for k in range(self.n_outputs)},
        }


def make_dag(levels: int = 62, width: int = 16, fan_in: int = 8, batch: int = 256, seed: int = 0) -> Dag:
    """`levels` levels of `width` units; each unit draws one source from the level before
    (so the graph is that deep) and the rest from anywhere earlier."""
    rng = np.random.default_rng(seed)
    sources, weights = [], []
    for level in range(1, levels):
        for _ in range(width):
            before = rng.integers((level - 1) * width, level * width)
            rest = rng.choice(level * width, size=fan_in - 1, replace=False)
            rest = rest[rest != before][: fan_in - 1]
            srcs = np.concatenate([[before], rest])
            sources.append(srcs)
            weights.append(rng.normal(scale=1 / np.sqrt(fan_in), size=len(srcs)))
    return Dag(
        sources, weights, width, width, rng.normal(size=(batch, width)), rng.normal(size=(batch, width))
    )


def per_unit_loop(dag: Dag) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The reference: forward and backward a unit at a time, each vectorised over the batch."""
    z = np.empty((dag.x.shape[0], dag.n_units))
    z[:, : dag.n_inputs] = dag.x
    for j, (srcs, w) in enumerate(zip(dag.sources, dag.weights, strict=True)):
        z[:, dag.n_inputs + j] = np.tanh(z[:, srcs] @ w)
    g = np.zeros_like(z)
    g[:, dag.n_units - dag.n_outputs :] = (z[:, dag.n_units - dag.n_outputs :] - dag.y) / len(dag.x)
    grads: list[np.ndarray] = [np.empty(0)] * len(dag.sources)
    biases: list[np.ndarray] = [np.empty(0)] * len(dag.sources)
    for j in range(len(dag.sources) - 1, -1, -1):
        u = dag.n_inputs + j
        delta = g[:, u] * (1.0 - z[:, u] ** 2)
        srcs = dag.sources[j]
        grads[j] = delta @ z[:, srcs]
        biases[j] = delta.sum()
        g[:, srcs] += np.outer(delta, dag.weights[j])
    return grads, biases


def run(repeat: int = 20, levels: int = 62, batch: int = 256, url: str | None = None) -> dict[str, Samples]:
    dag = make_dag(levels=levels, batch=batch)
    net = wire.Network.model_validate(dag.network())
    samples = {k: {u: v.tolist() for u, v in part.items()} for k, part in dag.samples().items()}
    plan = binding.compile_network(net)
    bound = binding.bind_samples(plan, wire.Samples.model_validate(samples), True)

    def engine_pass(p: engine.Plan) -> np.ndarray:
        assert bound.y is not None
        values = engine.forward(p, p.theta, bound.x)
        return engine.gradient(p, values, engine.backward(p, p.theta, values, bound.y), 1.0 / bound.size)

    got = engine_pass(plan)
    expected, _ = per_unit_loop(dag)
    first = 0
    for srcs, grad in zip(dag.sources, expected, strict=True):  # the same numbers first
        np.testing.assert_allclose(got[first : first + len(srcs)], grad, rtol=1e-9, atol=1e-12)
        first += len(srcs)
    results = timed(
        {
            "per-unit NumPy loop": lambda: per_unit_loop(dag),
            "engine": lambda: engine_pass(plan),
            "engine, compile included": lambda: engine_pass(engine.compile_network(binding.network(net))),
            # (a structure compiled before: its plan reused, service.engine.reuse)
            "engine, compile included, structure seen before": lambda: engine_pass(
                binding.compile_network(net)
            ),
        },
        repeat,
    )
    if url is not None:
        with Client(url) as gs, Client(url, binary=False) as gs64:
            columns = dag.network(columns=True)

            def numpy_out(client: Client, encoding: ArrayEncoding) -> Callable[[], list[np.ndarray]]:
                """Columns and arrays in, the answer's arrays read as NumPy."""

                def call() -> list[np.ndarray]:
                    got = client.gradients(
                        columns, dag.samples(), include_units=False, array_encoding=encoding
                    )
                    weights = got.gradients.weights
                    assert isinstance(weights, wire.GradientColumns)
                    return [to_numpy(weights.value), *map(to_numpy, got.gradients.biases.values())]

                return call

            calls = {
                "end to end, weight objects": lambda: gs.gradients(net, dag.samples(), include_units=False),
                "end to end, weight columns": lambda: gs.gradients(
                    columns, dag.samples(), include_units=False
                ),
                "end to end, weight columns, base64": numpy_out(gs64, "base64"),
                "end to end, weight columns, binary": numpy_out(gs, "binary"),
            }
            results.update(timed(calls, max(3, repeat // 3)))
    return results
