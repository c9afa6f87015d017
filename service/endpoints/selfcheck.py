"""The engine's start-up self-check: the chain x -> j -> k -> o against its closed form."""

from __future__ import annotations

import math

from service import engine, wire
from service.convert import binding


def chain_network(w_xj: float = 0.5, w_jk: float = -0.3, w_ko: float = 0.8) -> wire.Network:
    """The chain x -> j -> k -> o: sigmoid hidden units, a linear output, no biases."""
    return wire.Network.model_validate(
        {
            "units": [
                {"id": "x", "role": "input"},
                {"id": "j"},
                {"id": "k"},
                {"id": "o", "role": "output"},
            ],
            "weights": [
                {"source": "x", "target": "j", "value": w_xj},
                {"source": "j", "target": "k", "value": w_jk},
                {"source": "k", "target": "o", "value": w_ko},
            ],
        }
    )


def passes() -> bool:
    """True when the engine's gradient of the chain equals the closed form."""
    x, y, w1, w2, w3 = 1.5, 0.25, 0.5, -0.3, 0.8
    plan = binding.compile_network(chain_network(w1, w2, w3))
    batch = binding.bind_samples(
        plan, wire.Samples.model_validate({"inputs": {"x": [x]}, "targets": {"o": [y]}}), True
    )
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    delta = engine.backward(plan, plan.theta, values, batch.y)
    grad = engine.gradient(plan, values, delta, 1.0)

    expected = chain_gradients(x, y, w1, w2, w3)
    return all(math.isclose(g, e, rel_tol=1e-12) for g, e in zip(grad[:3], expected, strict=True))


def chain_gradients(x: float, y: float, w_xj: float, w_jk: float, w_ko: float) -> list[float]:
    """dE/dw for the chain's three weights, in closed form (one sample, E = 1/2 (yhat - y)^2)."""

    def sig(s: float) -> float:
        return 1.0 / (1.0 + math.exp(-s))

    zj = sig(w_xj * x)
    zk = sig(w_jk * zj)
    err = w_ko * zk - y
    return [
        err * w_ko * zk * (1 - zk) * w_jk * zj * (1 - zj) * x,
        err * w_ko * zk * (1 - zk) * zj,
        err * zk,
    ]
