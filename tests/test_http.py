"""End to end: a real uvicorn server on a loopback port, spoken to with raw HTTP."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given, settings

from service import wire
from tests import seed
from tests.reference import Reference
from tests.strategies import encode, networks

JSON = {"content-type": "application/json"}


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    result: dict[str, Any] = response.json()
    return result


def decoded(value: Any) -> np.ndarray:
    """Any array of a response as NumPy."""
    if isinstance(value, dict):
        raw = base64.b64decode(value["data"])
        return np.frombuffer(raw, dtype="<f8").reshape(value["shape"])
    return np.asarray(value, dtype=float)


# ---------------------------------------------------------------- the seed's cases over HTTP


@pytest.mark.parametrize("make", [seed.chain, seed.two_inputs, seed.two_outputs])
def test_seed_cases_over_http(http: httpx.Client, make: Any) -> None:
    case = make()
    body = post(http, "/v1/gradients", {"network": case.network, "samples": case.samples})
    wire.GradientsResponse.model_validate(body)
    assert body["loss"] == pytest.approx(case.loss, rel=1e-12)
    for got, w, expected in zip(
        body["gradients"]["weights"], case.network["weights"], case.weight_gradients, strict=True
    ):
        assert (got["source"], got["target"]) == (w["source"], w["target"])
        assert got["value"] == pytest.approx(expected, rel=1e-12)  # a number, as the seed writes it
    for uid, expected in case.deltas.items():
        assert body["units"][uid]["delta"] == [[pytest.approx(expected, rel=1e-12)]]
        assert body["gradients"]["biases"][uid] == pytest.approx(expected, rel=1e-12)


def test_forward_gives_every_unit_and_the_loss(http: httpx.Client) -> None:
    case = seed.chain()
    body = post(http, "/v1/forward", {"network": case.network, "samples": case.samples})
    wire.ForwardResponse.model_validate(body)
    assert set(body["units"]) == {"x", "j", "k", "o"}
    assert body["units"]["x"] == {"z": [[1.5]]}
    assert body["outputs"]["o"] == body["units"]["o"]["z"]
    assert body["loss"] == pytest.approx(case.loss, rel=1e-12)
    no_targets = post(
        http, "/v1/forward", {"network": case.network, "samples": {"inputs": case.samples["inputs"]}}
    )
    assert no_targets["loss"] is None


@settings(max_examples=25)
@given(networks())
def test_http_answers_equal_the_independent_autodiff(
    server_url: str, case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    net, samples = case
    with httpx.Client(base_url=server_url, timeout=60) as http:
        body = post(
            http,
            "/v1/gradients",
            {"network": net, "samples": samples, "reduction": "sum", "per_sample": True},
        )
    wire.GradientsResponse.model_validate(body)
    ref = Reference(net, samples)
    s, _, losses = ref.values()
    grads = ref.gradients()
    tight = {"rtol": 1e-9, "atol": 1e-12}
    assert body["loss"] == pytest.approx(float(losses.sum()), rel=1e-9, abs=1e-12)
    for k, w in enumerate(body["gradients"]["weights"]):
        np.testing.assert_allclose(decoded(w["value"]).reshape(grads["w"][k].shape), grads["w"][k], **tight)
    for uid, value in body["gradients"]["biases"].items():
        np.testing.assert_allclose(np.atleast_1d(decoded(value)), grads["b"][uid], **tight)
        np.testing.assert_allclose(decoded(body["units"][uid]["delta"]), grads["ds"][uid], **tight)
        np.testing.assert_allclose(decoded(body["units"][uid]["s"]), s[uid], **tight)
    per = body["per_sample"]
    for k, w in enumerate(per["weights"]):
        total = decoded(w["value"]).sum(axis=0)
        np.testing.assert_allclose(total.reshape(grads["w"][k].shape), grads["w"][k], **tight)


# ---------------------------------------------------------------- array forms


def test_base64_in_and_out(http: httpx.Client) -> None:
    rng = np.random.default_rng(1)
    w1, w2, x = rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=(5, 3))
    y = rng.normal(size=(5, 2))
    units = [
        {"id": "x", "role": "input", "size": 3},
        {"id": "h", "size": 4, "activation": "tanh"},
        {"id": "o", "role": "output", "size": 2},
    ]

    def request(form: Any, encoding: str) -> dict[str, Any]:
        return {
            "network": {
                "units": units,
                "weights": [
                    {"source": "x", "target": "h", "value": form(w1)},
                    {"source": "h", "target": "o", "value": form(w2)},
                ],
            },
            "samples": {"inputs": {"x": form(x)}, "targets": {"o": form(y)}},
            "array_encoding": encoding,
        }

    as_lists = post(http, "/v1/gradients", request(lambda a: a.tolist(), "list"))
    as_base64 = post(http, "/v1/gradients", request(encode, "base64"))
    float32 = post(http, "/v1/gradients", request(lambda a: encode(a, "float32"), "list"))
    for k in range(2):
        got = as_base64["gradients"]["weights"][k]["value"]
        assert got["dtype"] == "float64"
        np.testing.assert_array_equal(decoded(got), decoded(as_lists["gradients"]["weights"][k]["value"]))
        np.testing.assert_allclose(
            decoded(float32["gradients"]["weights"][k]["value"]), decoded(got), rtol=1e-4, atol=1e-6
        )
    np.testing.assert_array_equal(decoded(as_base64["units"]["h"]["z"]), decoded(as_lists["units"]["h"]["z"]))
    assert isinstance(as_base64["loss"], float)


def test_per_sample_values_lead_with_the_batch(http: httpx.Client) -> None:
    case = seed.two_inputs()
    samples = {
        "inputs": {"x1": [0.7, 0.1, -2.0], "x2": [[-1.2], [0.3], [0.5]]},
        "targets": {"o": [1.0, 0.0, 2.0]},
    }
    mean = post(http, "/v1/gradients", {"network": case.network, "samples": samples, "per_sample": True})
    total = post(
        http,
        "/v1/gradients",
        {"network": case.network, "samples": samples, "reduction": "sum", "include_units": False},
    )
    assert "units" not in total
    first = mean["per_sample"]["weights"][0]["value"]
    assert len(first) == 3
    assert first[0] == pytest.approx(case.weight_gradients[0], rel=1e-12)
    assert sum(first) == pytest.approx(total["gradients"]["weights"][0]["value"], rel=1e-12)
    assert mean["gradients"]["weights"][0]["value"] == pytest.approx(sum(first) / 3, rel=1e-12)
    assert mean["loss"] == pytest.approx(total["loss"] / 3, rel=1e-12)


# ---------------------------------------------------------------- SGD


def test_sgd_trains_and_its_network_can_be_posted_again(http: httpx.Client) -> None:
    case = seed.chain()
    body = post(
        http,
        "/v1/sgd",
        {"network": case.network, "samples": case.samples, "learning_rate": 0.5, "epochs": 20},
    )
    wire.SgdResponse.model_validate(body)
    assert body["steps"] == 20
    assert len(body["history"]) == 20
    assert body["loss_after"] == body["history"][-1]["loss"] < body["loss_before"] == pytest.approx(case.loss)
    again = post(http, "/v1/forward", {"network": body["network"], "samples": case.samples})
    assert again["loss"] == pytest.approx(body["loss_after"], rel=1e-12)
    # the same form as posted: numbers stay numbers; the units keep their fields
    assert isinstance(body["network"]["weights"][0]["value"], float)
    assert body["network"]["units"][0] == {"id": "x", "role": "input"}


def test_one_sgd_step_is_w_minus_eta_g(http: httpx.Client) -> None:
    case = seed.two_outputs()
    eta = 0.3
    body = post(http, "/v1/sgd", {"network": case.network, "samples": case.samples, "learning_rate": eta})
    for before, after, g in zip(
        case.network["weights"], body["network"]["weights"], case.weight_gradients, strict=True
    ):
        assert after["value"] == pytest.approx(before["value"] - eta * g, rel=1e-12)


def test_sgd_keeps_each_array_in_the_form_it_came_in(http: httpx.Client) -> None:
    net = {
        "units": [{"id": "x", "role": "input", "size": 2}, {"id": "o", "role": "output", "bias": [0.0]}],
        "weights": [{"source": "x", "target": "o", "value": encode(np.array([[0.5], [-0.5]]))}],
    }
    samples = {"inputs": {"x": [[1.0, 2.0], [0.5, -1.0]]}, "targets": {"o": [1.0, 0.0]}}
    body = post(http, "/v1/sgd", {"network": net, "samples": samples, "learning_rate": 0.1})
    assert body["network"]["weights"][0]["value"]["shape"] == [2, 1]
    assert isinstance(body["network"]["units"][1]["bias"], list)
    encoded = post(
        http,
        "/v1/sgd",
        {"network": net, "samples": samples, "learning_rate": 0.1, "array_encoding": "base64"},
    )
    assert encoded["network"]["units"][1]["bias"]["shape"] == [1]
    np.testing.assert_array_equal(
        decoded(encoded["network"]["weights"][0]["value"]), decoded(body["network"]["weights"][0]["value"])
    )


def test_shuffled_sgd_is_repeatable_with_a_seed(http: httpx.Client) -> None:
    case = seed.two_inputs()
    samples = {
        "inputs": {"x1": [0.1, 0.2, 0.3, 0.4, 0.5], "x2": [1, 2, 3, 4, 5]},
        "targets": {"o": [0, 1, 0, 1, 0]},
    }
    request = {
        "network": case.network,
        "samples": samples,
        "learning_rate": 0.1,
        "epochs": 3,
        "batch_size": 2,
        "shuffle": True,
        "momentum": 0.9,
    }
    a = post(http, "/v1/sgd", {**request, "seed": 1})
    b = post(http, "/v1/sgd", {**request, "seed": 1})
    c = post(http, "/v1/sgd", {**request, "seed": 2})
    assert a == b
    assert a["network"] != c["network"]
    assert a["steps"] == 9


# ---------------------------------------------------------------- errors


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    wire.Problem.model_validate(body)
    assert body["status"] == status
    return body


def chain_request(**changes: Any) -> dict[str, Any]:
    case = seed.chain()
    return {"network": case.network, "samples": case.samples, **changes}


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (json.dumps(chain_request()).replace("1.5", "NaN").encode(), 422, "finite number"),
        (json.dumps(chain_request()).replace("1.5", "1e999").encode(), 422, "finite number"),
        (json.dumps(chain_request()).replace("1.5", '"1.5"').encode(), 422, "valid number"),
        (json.dumps(chain_request()).replace("1.5", "true").encode(), 422, "valid number"),
        (json.dumps(chain_request(extra=1)).encode(), 422, "extra"),
        (json.dumps(chain_request(reduction="median")).encode(), 422, "reduction"),
        (json.dumps({"network": {"units": []}, "samples": {"inputs": {}}}).encode(), 422, "network.units"),
    ],
)
def test_bad_bodies_get_problem_json(http: httpx.Client, content: bytes, status: int, says: str) -> None:
    body = problem(http.post("/v1/gradients", content=content, headers=JSON), status)
    assert says in body["detail"]
    assert http.get("/healthz").status_code == 200


def test_a_cycle_is_a_422_naming_its_units(http: httpx.Client) -> None:
    request = chain_request()
    request["network"]["weights"].append({"source": "o", "target": "j", "value": 1.0})
    body = problem(http.post("/v1/gradients", json=request), 422)
    assert body["detail"] == "the network has a cycle: j -> k -> o -> j"
    assert body["type"].endswith("invalid-network")


@pytest.mark.parametrize(
    ("samples", "says"),
    [
        ({"inputs": {}, "targets": {"o": [0.25]}}, "inputs has no entry for input unit 'x'"),
        ({"inputs": {"x": [1.5]}}, "targets has no entry for output unit 'o'"),
        ({"inputs": {"x": [1.5], "j": [1.0]}, "targets": {"o": [0.25]}}, "'j' is a hidden unit"),
        (
            {"inputs": {"x": [1.5, 2.0]}, "targets": {"o": [0.25]}},
            "targets['o'] has batch 1 but inputs['x'] has batch 2",
        ),
        ({"inputs": {"x": [[1.5, 2.0]]}, "targets": {"o": [0.25]}}, "expected [batch, 1]"),
        ({"inputs": {"x": [[1.5], [2.0, 3.0]]}, "targets": {"o": [0.25, 1]}}, "ragged"),
        ({"inputs": {"x": []}, "targets": {"o": []}}, "expected [batch, 1]"),
    ],
)
def test_samples_that_do_not_fit(http: httpx.Client, samples: dict[str, Any], says: str) -> None:
    body = problem(http.post("/v1/gradients", json=chain_request(samples=samples)), 422)
    assert says in body["detail"]


def test_an_input_unit_takes_no_activation(http: httpx.Client) -> None:
    request = chain_request()
    request["network"]["units"][0]["activation"] = "relu"
    body = problem(http.post("/v1/forward", json=request), 422)
    assert "input unit 'x' takes no activation" in body["detail"]


def test_overflow_is_a_422_naming_the_unit(http: httpx.Client) -> None:
    request = chain_request()
    request["network"]["weights"][2]["value"] = 1e308
    request["samples"]["inputs"]["x"] = [1e10]
    request["network"]["units"][2]["activation"] = "identity"
    request["network"]["units"][1]["activation"] = "identity"
    body = problem(http.post("/v1/gradients", json=request), 422)
    assert body["type"].endswith("non-finite-result")
    assert "'o'" in body["detail"]


def test_nesterov_without_momentum_is_refused(http: httpx.Client) -> None:
    body = problem(http.post("/v1/sgd", json=chain_request(learning_rate=0.1, nesterov=True)), 422)
    assert "nesterov needs momentum > 0" in body["detail"]


def test_unknown_paths_and_methods_are_problems(http: httpx.Client) -> None:
    problem(http.get("/v1/nothing"), 404)
    problem(http.get("/v1/gradients"), 405)


# ---------------------------------------------------------------- health, info, docs


def test_health_readiness_and_info(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}
    info = wire.InfoResponse.model_validate(http.get("/v1/info").json())
    assert info.activations == list(wire.ACTIVATIONS)
    assert info.losses == list(wire.LOSSES)
    assert info.limits["max_body_bytes"] == 32 * 1024 * 1024


def test_openapi_documents_every_body(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, model in [
        ("/v1/forward", "ForwardRequest"),
        ("/v1/gradients", "GradientsRequest"),
        ("/v1/sgd", "SgdRequest"),
    ]:
        op = doc["paths"][path]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
        assert model in schemas
        assert set(op["responses"]) >= {"200", "400", "413", "422"}
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs <= set(schemas), refs - set(schemas)
    assert (
        "the full-batch loss after each epoch"
        in schemas["SgdResponse"]["properties"]["history"]["description"]
    )
    assert http.get("/docs").status_code == 200
