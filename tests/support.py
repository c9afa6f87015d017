"""Helpers for tests that drive the engine directly."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from service import engine, wire


def compile_and_bind(net: dict[str, Any], samples: dict[str, Any]) -> tuple[engine.Plan, engine.Batch]:
    """A network and samples in the wire's JSON form, compiled and bound as the service does."""
    plan = engine.compile_network(wire.Network.model_validate_json(json.dumps(net)))
    batch = engine.bind_samples(plan, wire.Samples.model_validate_json(json.dumps(samples)), True)
    return plan, batch


def assert_parameters_close(plan: engine.Plan, theta: np.ndarray, expected: dict[str, Any]) -> None:
    """theta against {"w": [matrix per weight], "b": {unit id: vector}} to 1e-9."""
    for k, w in enumerate(plan.weights):
        np.testing.assert_allclose(theta[w.params].reshape(w.shape), expected["w"][k], rtol=1e-9, atol=1e-12)
    for u in plan.units:
        if u.role != "input":
            np.testing.assert_allclose(theta[plan.bias_params(u)], expected["b"][u.id], rtol=1e-9, atol=1e-12)
