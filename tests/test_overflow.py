"""Overflow, everywhere: every activation and loss on huge inputs gives finite answers or a 422."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.strategies import ACTIVATIONS
from tests.support import asgi

# ---------------------------------------------------------------- overflow, everywhere


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["half_squared_error", "squared_error", "cross_entropy"])
def test_overflow_gives_finite_answers_or_a_422(activation: str, loss: str) -> None:
    out_activation = (
        activation if loss != "cross_entropy" else ("softmax" if activation == "softmax" else "sigmoid")
    )
    net = {
        "units": [
            {"id": "x", "role": "input"},
            {"id": "h", "size": 2, "activation": activation},
            {"id": "o", "role": "output", "size": 2, "activation": out_activation},
        ],
        "weights": [
            {"source": "x", "target": "h", "value": [[1e200, -1e200]]},
            {"source": "h", "target": "o", "value": [[1e200, 1.0], [-1.0, 1e200]]},
        ],
        "loss": loss,
    }
    samples = {
        "inputs": {"x": [[1e100], [-1e100], [0.0]]},
        "targets": {"o": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]},
    }
    for path, extra in [
        ("/v1/forward", {}),
        ("/v1/gradients", {"per_sample": True}),
        ("/v1/sgd", {"learning_rate": 1e10}),
    ]:
        (response,) = asgi(
            Settings(), ("POST", path, {"json": {"network": net, "samples": samples, **extra}})
        )
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            assert response.json()["type"].endswith("non-finite-result")
        else:
            assert "NaN" not in response.text
            assert "Infinity" not in response.text
            assert "null" not in response.text.replace('"loss":null', "")
