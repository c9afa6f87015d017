"""Weights posted as columns {source, target, value}: the same numbers as weight objects, and
every answer about the weights given back as columns."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import client
from service import wire
from service.convert.encoding import to_numpy
from service.endpoints import compute, gradcheck
from service.problems import InvalidGraphError
from service.settings import Limits
from tests import seed
from tests.strategies import encode, networks

LIMITS = Limits()
CLOSE = {"rtol": 1e-12, "atol": 1e-15}


def numbers(weights: list[dict[str, Any]]) -> np.ndarray:
    """Single units' weight objects' values, whatever their form, as [n]."""
    return np.array([to_numpy(wire.Weight.model_validate(w).value, []).item() for w in weights])


def as_columns(net: dict[str, Any], encoded: bool = False) -> dict[str, Any]:
    """The network with its weights (all between single units) as columns."""
    values = numbers(net["weights"])
    return {
        **net,
        "weights": {
            "source": [w["source"] for w in net["weights"]],
            "target": [w["target"] for w in net["weights"]],
            "value": encode(values) if encoded else values.tolist(),
        },
    }


def answer(endpoint: Any, model: type[wire.WireModel], request: dict[str, Any]) -> dict[str, Any]:
    """What the service would send, parsed back from its bytes (so forms compare as JSON)."""
    from service.convert.encoding import dumps

    body = endpoint(model.model_validate_json(json.dumps(request)), LIMITS)
    parsed: dict[str, Any] = orjson.loads(dumps(body))
    return parsed


def weight_values(weights: Any) -> np.ndarray:
    """A gradients answer's weights, objects or columns, as [n] (or [batch, n] per sample)."""
    if isinstance(weights, dict):
        return np.asarray(weights["value"], dtype=float)
    if not weights:
        return np.empty((0,))
    return np.stack([np.asarray(w["value"], dtype=float) for w in weights], axis=-1)


@given(networks(singles=True), st.booleans())
def test_columns_give_the_numbers_objects_give(
    case: tuple[dict[str, Any], dict[str, Any]], enc: bool
) -> None:
    net, samples = case
    columns = as_columns(net, encoded=enc)
    request = {"samples": samples, "per_sample": True, "reduction": "sum"}
    a = answer(compute.gradients, wire.GradientsRequest, {"network": net, **request})
    b = answer(compute.gradients, wire.GradientsRequest, {"network": columns, **request})
    assert b["gradients"]["weights"]["source"] == columns["weights"]["source"]
    assert b["gradients"]["weights"]["target"] == columns["weights"]["target"]
    for part in ("gradients", "per_sample"):
        got, expected = weight_values(b[part]["weights"]), weight_values(a[part]["weights"])
        assert got.size == expected.size == len(net["weights"]) * (1 if part == "gradients" else got.shape[0])
        np.testing.assert_allclose(
            got.reshape(expected.shape) if expected.size else got.ravel(), expected, **CLOSE
        )
        assert b[part]["biases"] == a[part]["biases"]
    assert b["units"] == a["units"]
    assert b["loss"] == a["loss"]


@given(networks(singles=True))
def test_sgd_answers_columns_that_post_again(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    net, samples = case
    request = {"samples": samples, "learning_rate": 0.1, "epochs": 2, "momentum": 0.5}
    a = answer(compute.sgd, wire.SgdRequest, {"network": net, **request})
    b = answer(compute.sgd, wire.SgdRequest, {"network": as_columns(net), **request})
    trained = b["network"]["weights"]
    assert trained["source"] == [w["source"] for w in net["weights"]]
    np.testing.assert_allclose(trained["value"], numbers(a["network"]["weights"]), **CLOSE)
    assert b["history"] == a["history"]
    again = answer(compute.sgd, wire.SgdRequest, {"network": b["network"], **request})
    assert again["loss_before"] == b["loss_after"]


def test_the_seed_chain_as_columns_gives_the_closed_forms() -> None:
    case = seed.chain()
    got = answer(
        compute.gradients,
        wire.GradientsRequest,
        {"network": as_columns(case.network), "samples": case.samples},
    )
    np.testing.assert_allclose(got["gradients"]["weights"]["value"], case.weight_gradients, rtol=1e-12)


def test_check_takes_and_answers_columns() -> None:
    case = seed.chain()
    columns = as_columns(case.network)
    mine = {"source": ["k", "x"], "target": ["o", "j"], "value": [case.weight_gradients[2], 0.0]}
    got = answer(
        gradcheck.check,
        wire.CheckRequest,
        {"network": columns, "samples": case.samples, "gradients": {"weights": mine}},
    )
    # entries come in the network's order, and only for what was claimed
    assert got["weights"]["source"] == ["x", "k"]
    assert got["weights"]["target"] == ["j", "o"]
    assert got["weights"]["ok"] == [False, True]
    assert got["ok"] is False
    np.testing.assert_allclose(
        got["weights"]["numeric"], [case.weight_gradients[0], case.weight_gradients[2]], rtol=1e-6
    )
    everything = answer(gradcheck.check, wire.CheckRequest, {"network": columns, "samples": case.samples})
    assert everything["ok"] is True
    assert everything["weights"]["ok"] == [True, True, True]


def test_the_client_sends_columns_and_reads_them_back(server_url: str) -> None:
    rng = np.random.default_rng(3)
    width, fan_in = 40, 6
    pairs = {(f"x{a}", f"h{b}") for b in range(width) for a in rng.choice(width, fan_in, replace=False)}
    pairs |= {(f"h{b}", "o") for b in range(width)}
    weights = {f"{a}->{b}": float(rng.normal()) for a, b in sorted(pairs)}
    inputs = [f"x{a}" for a in range(width)]
    as_objects = client.single_units(weights, inputs=inputs, outputs=["o"])
    as_columns_ = client.single_units(weights, inputs=inputs, outputs=["o"], columns=True)
    assert isinstance(as_columns_.weights, client.WeightColumns)
    samples = {"inputs": {u: rng.normal(size=8) for u in inputs}, "targets": {"o": rng.normal(size=8)}}
    with client.Client(server_url) as gs:
        a = gs.gradients(as_objects, samples, include_units=False)
        b = gs.gradients(as_columns_, samples, include_units=False)
        # NumPy values of 256+ weights travel base64, and the answer's come back decoded
        big = {
            **as_columns_.model_dump(),
            "weights": {**as_columns_.weights.model_dump(), "value": np.array(as_columns_.weights.value)},
        }
        c = gs.gradients(big, samples, include_units=False, per_sample=True)
        trained = gs.sgd(as_columns_, samples, learning_rate=0.1)
    assert isinstance(b.gradients.weights, client.GradientColumns)
    assert isinstance(c.gradients.weights, client.GradientColumns)
    assert isinstance(a.gradients.weights, list)
    expected = [w.value for w in a.gradients.weights]
    np.testing.assert_allclose(client.to_numpy(b.gradients.weights.value), expected, rtol=1e-12)
    np.testing.assert_allclose(client.to_numpy(c.gradients.weights.value), expected, rtol=1e-12)
    assert c.per_sample is not None
    assert isinstance(c.per_sample.weights, client.GradientColumns)
    per = client.to_numpy(c.per_sample.weights.value)  # decoded from base64: [batch, n]
    assert per.shape == (8, len(weights))
    np.testing.assert_allclose(per.mean(axis=0), expected, rtol=1e-9, atol=1e-15)
    assert isinstance(trained.network.weights, wire.WeightColumns)
    assert trained.network.weights.source == as_columns_.weights.source


def cols(source: str, target: str, value: list[float], **extra: Any) -> dict[str, Any]:
    return {"source": source.split(), "target": target.split(), "value": value, **extra}


@pytest.mark.parametrize(
    ("weights", "says"),
    [
        (cols("x j", "j", [0.5]), "source has 2 ids and target 1"),
        (cols("x j q", "j k o", [1.0] * 3), "unknown unit(s) 'q'"),
        (cols("x x", "j j", [1.0] * 2), "weight x->j is given twice"),
        (cols("x j", "j x", [1.0] * 2), "points into input unit 'x'"),
        (cols("x j", "j k", [1.0] * 3), "weights.value has shape [3], expected [2]"),
        (cols("x j k o", "j k o j", [1.0] * 4), "cycle: j -> k -> o -> j"),
        (cols("x", "j", [1.0], colour="red"), "Extra inputs"),
        (cols("x", "j", 1.0), "network.weights.value: Input should be a valid array"),  # type: ignore[arg-type]
    ],
)
def test_bad_columns_are_named(server_url: str, weights: dict[str, Any], says: str) -> None:
    import httpx

    case = seed.chain()
    body = {"network": {**case.network, "weights": weights}, "samples": case.samples}
    response = httpx.post(server_url + "/v1/gradients", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert says in response.json()["detail"], response.json()["detail"]


def test_columns_join_single_units_only() -> None:
    net = {
        "units": [{"id": "x", "role": "input", "size": 2}, {"id": "o", "role": "output"}],
        "weights": {"source": ["x"], "target": ["o"], "value": [1.0]},
    }
    request = {"network": net, "samples": {"inputs": {"x": [[1.0, 2.0]]}, "targets": {"o": [0.0]}}}
    with pytest.raises(InvalidGraphError, match="join single units, and 'x' has size 2") as raised:
        answer(compute.gradients, wire.GradientsRequest, request)
    assert raised.value.errors[0]["loc"] == ["network", "weights", "source", 0]


def test_explain_and_render_take_columns() -> None:
    from service.endpoints import explain, render

    case = seed.chain()
    columns = {"network": as_columns(case.network), "samples": case.samples}
    objects = {"network": case.network, "samples": case.samples}
    a = answer(explain.explain, wire.ExplainRequest, objects)
    b = answer(explain.explain, wire.ExplainRequest, columns)
    assert b == a  # explain answers its weights as objects, one explanation each
    drawn = [render.render(wire.RenderRequest.model_validate(r), LIMITS, "dot") for r in (objects, columns)]
    assert drawn[0] == drawn[1]
