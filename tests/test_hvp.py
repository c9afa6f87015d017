"""/v1/hvp, input gradients and the new losses over a real server: through the SDK (sync and
async), raw HTTP in every array encoding, the CLI, and every mistake a 422 naming it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest

import client
from tests import seed
from tests.strategies import encode


def _chain_request(**changes: Any) -> dict[str, Any]:
    case = seed.chain()
    return {"network": case.network, "samples": case.samples, **changes}


def _responses_net() -> dict[str, Any]:
    """A DAG with a layer, a softmax, a response, a mean and a skip connection: x(2) -> h(3,
    tanh, mean) -> o(2, softmax) and x -> o, cross-entropy."""
    rng = np.random.default_rng(11)
    return {
        "network": {
            "units": [
                {"id": "x", "role": "input", "size": 2},
                {
                    "id": "h",
                    "size": 3,
                    "activation": "tanh",
                    "aggregation": "mean",
                    "response": [1.5, 0.5, -1.0],
                },
                {"id": "o", "role": "output", "size": 2, "activation": "softmax", "bias": [0.1, -0.1]},
            ],
            "weights": [
                {"source": "x", "target": "h", "value": rng.normal(size=(2, 3)).tolist()},
                {"source": "h", "target": "o", "value": rng.normal(size=(3, 2)).tolist()},
                {"source": "x", "target": "o", "value": rng.normal(size=(2, 2)).tolist()},
            ],
            "loss": "cross_entropy",
        },
        "samples": {
            "inputs": {"x": rng.normal(size=(4, 2)).tolist()},
            "targets": {"o": [[1, 0], [0, 1], [0.3, 0.7], [1, 0]]},
        },
    }


def _flat(part: dict[str, Any]) -> np.ndarray:
    """weights, then biases, then responses, flattened (weights as values or as objects)."""
    weights = [w["value"] if isinstance(w, dict) else w for w in part["weights"]]
    pieces = [np.ravel(w) for w in weights] + [np.ravel(b) for b in part["biases"].values()]
    pieces += [np.ravel(r) for r in (part.get("responses") or {}).values()]
    return np.concatenate(pieces)


def _unflat(like: dict[str, Any], flat: np.ndarray) -> dict[str, Any]:
    """A vector of the parameters' shapes (those of `like`, a gradients part) from flat numbers."""
    at = 0

    def take(value: Any) -> Any:
        nonlocal at
        shape = np.shape(value)
        n = int(np.prod(shape))
        piece = flat[at : at + n].reshape(shape)
        at += n
        return piece.tolist()

    weights = [take(w["value"] if isinstance(w, dict) else w) for w in like["weights"]]
    out: dict[str, Any] = {"weights": weights, "biases": {k: take(v) for k, v in like["biases"].items()}}
    if like.get("responses"):
        out["responses"] = {k: take(v) for k, v in like["responses"].items()}
    return out


def _gradient(http: httpx.Client, request: dict[str, Any], flat: np.ndarray | None = None) -> np.ndarray:
    """/v1/gradients' gradient, flattened, at the network's parameters moved to `flat`."""
    if flat is not None:
        request = json.loads(json.dumps(request))
        params = _unflat(_gradient_part(http, request), flat)
        net = request["network"]
        for w, value in zip(net["weights"], params["weights"], strict=True):
            w["value"] = value
        for u in net["units"]:
            if u.get("role") != "input":
                u["bias"] = params["biases"][u["id"]]
                if "responses" in params:
                    u["response"] = params["responses"][u["id"]]
    return _flat(_gradient_part(http, request))


def _gradient_part(http: httpx.Client, request: dict[str, Any]) -> dict[str, Any]:
    r = http.post("/v1/gradients", json={**request, "include_units": False})
    assert r.status_code == 200, r.text
    part: dict[str, Any] = r.json()["gradients"]
    return part


def _theta(http: httpx.Client, request: dict[str, Any]) -> np.ndarray:
    """The network's parameters, flattened as _flat does (read back from sgd with a zero step's
    worth: the network as posted, every bias and response filled in)."""
    net = request["network"]
    part = _gradient_part(http, request)
    weights = [w["value"] for w in net["weights"]]
    biases = {
        u["id"]: u.get("bias", np.zeros(u.get("size", 1)).tolist())
        for u in net["units"]
        if u.get("role") != "input"
    }
    theta: dict[str, Any] = {"weights": weights, "biases": {k: biases[k] for k in part["biases"]}}
    if part.get("responses"):
        responses = {
            u["id"]: u.get("response", np.ones(u.get("size", 1)).tolist())
            for u in net["units"]
            if u.get("role") != "input"
        }
        theta["responses"] = {k: responses[k] for k in part["responses"]}
    return _flat(theta)


@pytest.mark.parametrize("which", ["chain", "responses"])
def test_hvp_is_the_central_difference_of_the_v1_gradients(http: httpx.Client, which: str) -> None:
    request = _chain_request() if which == "chain" else _responses_net()
    like = _gradient_part(http, request)
    v = np.random.default_rng(3).normal(size=_flat(like).size)
    r = http.post("/v1/hvp", json={**request, "vector": _unflat(like, v)})
    assert r.status_code == 200, r.text
    body = r.json()
    theta, eps = _theta(http, request), 1e-5
    numeric = (_gradient(http, request, theta + eps * v) - _gradient(http, request, theta - eps * v)) / (
        2 * eps
    )
    np.testing.assert_allclose(_flat(body["hvp"]), numeric, rtol=1e-6, atol=1e-9)
    assert body["vhv"] == pytest.approx(float(v @ _flat(body["hvp"])), rel=1e-12)
    plain = http.post("/v1/gradients", json={**request, "include_units": False}).json()
    assert body["gradients"] == plain["gradients"]
    assert body["loss"] == plain["loss"]


def test_hvp_through_the_sdk_sync_and_async(server_url: str) -> None:
    request = _responses_net()
    vector = {
        "weights": [np.ones((2, 3)), np.zeros((3, 2)), np.zeros((2, 2))],
        "responses": {"h": [0.0, 1.0, 0.0]},
    }
    with client.Client(server_url) as gs:
        sync = gs.hvp(request["network"], request["samples"], vector, reduction="sum")
        grads = gs.gradients(request["network"], request["samples"], reduction="sum", include_units=False)

    async def go() -> client.HvpResponse:
        async with client.AsyncClient(server_url) as gs:
            return await gs.hvp(request["network"], request["samples"], vector, reduction="sum")

    assert isinstance(sync, client.HvpResponse)
    assert asyncio.run(go()) == sync
    assert sync.gradients == grads.gradients
    assert sync.hvp.responses is not None
    assert set(sync.hvp.responses) == {"h", "o"}
    assert np.shape(sync.hvp.weights[0]) == (2, 3)


def test_a_vector_of_a_large_mlp_travels_as_binary_and_each_encoding_answers_alike(server_url: str) -> None:
    net = client.mlp([20, 30, 3], seed=1)
    rng = np.random.default_rng(2)
    samples = {"inputs": {"input": rng.normal(size=(6, 20))}, "targets": {"output": rng.normal(size=(6, 3))}}
    vector = {
        "weights": [rng.normal(size=(20, 30)), rng.normal(size=(30, 3))],
        "biases": {"hidden1": rng.normal(size=30)},
    }
    with client.Client(server_url) as gs:  # arrays of 256 numbers or more go as raw bytes
        answers = {
            enc: gs.hvp(net, samples, vector, array_encoding=enc) for enc in ("list", "base64", "binary")
        }
    flat = {
        enc: np.concatenate([client.to_numpy(w).ravel() for w in a.hvp.weights]) for enc, a in answers.items()
    }
    assert np.array_equal(flat["list"], flat["base64"])
    assert np.array_equal(flat["list"], flat["binary"])
    assert answers["list"].vhv == answers["binary"].vhv


def test_input_gradients_in_every_encoding(server_url: str, http: httpx.Client) -> None:
    request = _responses_net()
    request["samples"]["inputs"]["x"] = encode(np.asarray(request["samples"]["inputs"]["x"]))
    body = {**request, "wrt_inputs": True, "per_sample": True, "include_units": False}
    as_list = http.post("/v1/gradients", json=body).json()
    as_b64 = http.post("/v1/gradients", json={**body, "array_encoding": "base64"}).json()
    with client.Client(server_url) as gs:
        binary = gs.gradients(
            request["network"], request["samples"], per_sample=True, wrt_inputs=True, array_encoding="binary"
        )
    x_grad = np.asarray(as_list["gradients"]["inputs"]["x"])
    per = np.asarray(as_list["per_sample"]["inputs"]["x"])
    assert x_grad.shape == per.shape == (4, 2)
    np.testing.assert_array_equal(x_grad, per / 4)  # the mean's 1/batch, exactly (a power of two)
    assert binary.gradients.inputs is not None
    assert binary.per_sample is not None
    assert binary.per_sample.inputs is not None
    for got in (
        client.to_numpy(as_b64["gradients"]["inputs"]["x"]),
        client.to_numpy(binary.gradients.inputs["x"]),
    ):
        np.testing.assert_array_equal(got, x_grad)
    np.testing.assert_array_equal(client.to_numpy(binary.per_sample.inputs["x"]), per)
    without = http.post("/v1/gradients", json={**body, "wrt_inputs": False}).json()
    assert "inputs" not in without["gradients"]
    assert "inputs" not in without["per_sample"]


def test_the_seeds_chain_input_gradient_is_its_closed_form(http: httpx.Client) -> None:
    """dE/dx = delta_j w_{x->j} on the chain (case 1)."""
    case = seed.chain()
    body = http.post("/v1/gradients", json=_chain_request(wrt_inputs=True)).json()
    (dx,) = body["gradients"]["inputs"]["x"][0]
    assert dx == pytest.approx(
        body["units"]["j"]["delta"][0][0] * case.network["weights"][0]["value"], rel=1e-15
    )


BAD_VECTORS = [
    ({"weights": [1.0, 0.0]}, ["vector", "weights"], "2 entries"),
    ({"weights": [1.0, 0.0, [1.0, 2.0]]}, ["vector", "weights", 2], "shape [2]"),
    ({"weights": [1.0, 0.0, 0.0], "biases": {"q": 1.0}}, ["vector", "biases", "q"], "not a unit"),
    ({"weights": [1.0, 0.0, 0.0], "biases": {"x": 1.0}}, ["vector", "biases", "x"], "input unit"),
    ({"weights": [1.0, 0.0, 0.0], "biases": {"j": [1.0, 2.0]}}, ["vector", "biases", "j"], "expected [1]"),
    ({"weights": [1.0, 0.0, 0.0], "responses": {"j": 1.0}}, ["vector", "responses", "j"], "no response"),
    ({"weights": encode(np.ones(2))}, ["vector", "weights"], "expected [3]"),
    ({"biases": {"j": 1.0}}, ["vector", "weights"], "Field required"),
]


@pytest.mark.parametrize(("vector", "loc", "words"), BAD_VECTORS)
def test_a_vector_that_does_not_fit_is_a_422_naming_where(
    http: httpx.Client, vector: dict[str, Any], loc: list[Any], words: str
) -> None:
    r = http.post("/v1/hvp", json=_chain_request(vector=vector))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"][0]["loc"][: len(loc)] == loc
    assert words in problem["detail"] + problem["errors"][0]["msg"]


def test_a_missing_bias_counts_as_zero(http: httpx.Client) -> None:
    given = http.post(
        "/v1/hvp", json=_chain_request(vector={"weights": [1.0, 0.5, 0.0], "biases": {}})
    ).json()
    zeros = {"weights": [1.0, 0.5, 0.0], "biases": {"j": 0.0, "k": 0.0, "o": 0.0}}
    assert given == http.post("/v1/hvp", json=_chain_request(vector=zeros)).json()


def test_a_layer_vector_as_one_array_is_refused(http: httpx.Client) -> None:
    request = _responses_net()
    r = http.post("/v1/hvp", json={**request, "vector": {"weights": encode(np.ones(16))}})
    assert r.status_code == 422
    assert "one Array per weight" in r.json()["detail"]


def _bce_net(activation: str = "sigmoid", target: float = 0.25, **changes: Any) -> dict[str, Any]:
    request = _chain_request()
    request["network"]["units"][-1]["activation"] = activation
    request["network"] = {**request["network"], "loss": "binary_cross_entropy", **changes}
    request["samples"]["targets"]["o"] = [target]
    return request


@pytest.mark.parametrize(
    ("request_body", "where", "words"),
    [
        (_bce_net("identity"), ["network", "units", 3, "activation"], "sigmoid (binary) or neat_sigmoid"),
        (_bce_net(target=1.5), ["samples"], "[0, 1]"),
        (
            {**_chain_request(), "network": {**seed.chain().network, "huber_delta": 0.5}},
            ["network", "huber_delta"],
            "huber",
        ),
        (
            {**_chain_request(), "network": {**seed.chain().network, "loss": "huber", "huber_delta": 0}},
            ["network", "huber_delta"],
            "greater than 0",
        ),
    ],
)
def test_the_new_losses_refuse_what_does_not_fit(
    http: httpx.Client, request_body: dict[str, Any], where: list[Any], words: str
) -> None:
    r = http.post("/v1/gradients", json=request_body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert words in problem["detail"] + json.dumps(problem.get("errors"))
    if where != ["samples"]:
        assert problem["errors"][0]["loc"][: len(where)] == where


def test_bce_clamps_its_logs_at_minus_100_with_zero_derivatives_there(http: httpx.Client) -> None:
    """s = 400 makes z exactly 1: log(1 - z) is clamped at -100, so E = 0.7 * 100 and
    dE/dz is -y/z = -0.3 alone (its clamped term's derivative is 0), as the contract says."""
    request = {
        "network": {
            "units": [{"id": "x", "role": "input"}, {"id": "o", "role": "output", "activation": "sigmoid"}],
            "weights": [{"source": "x", "target": "o", "value": 400.0}],
            "loss": "binary_cross_entropy",
        },
        "samples": {"inputs": {"x": [1.0]}, "targets": {"o": [0.3]}},
    }
    body = http.post("/v1/gradients", json=request).json()
    assert body["loss"] == pytest.approx(70.0, rel=1e-15)
    assert body["units"]["o"]["z"] == [[1.0]]
    assert body["units"]["o"]["delta"] == [[0.0]]  # -0.3 times sigma'(400) = 0
    hv = http.post("/v1/hvp", json={**request, "vector": {"weights": [1.0]}}).json()
    assert hv["hvp"]["weights"] == [0.0]
    assert hv["vhv"] == 0.0


def test_huber_uses_its_delta(http: httpx.Client) -> None:
    """E = delta (|z - y| - delta / 2) past delta: the chain's yhat - y = 0.109..., under 1 but
    over 0.05."""
    request = _chain_request()
    request["network"] = {**request["network"], "loss": "huber", "huber_delta": 0.05}
    body = http.post("/v1/gradients", json=request).json()
    gap = 0.3593896775324741 - 0.25
    assert body["loss"] == pytest.approx(0.05 * (gap - 0.025), rel=1e-13)
    assert body["units"]["o"]["delta"] == [[0.05]]
    request["network"]["huber_delta"] = 1.0
    assert http.post("/v1/gradients", json=request).json()["loss"] == pytest.approx(gap**2 / 2, rel=1e-13)


def test_the_cli_has_hvp_from_the_wire_table(server_url: str) -> None:
    request = _chain_request(vector={"weights": [1.0, 0.0, 0.0]})
    proc = subprocess.run(
        [sys.executable, "-m", "client", "--url", server_url, "hvp", "--reduction", "sum"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["vhv"] == pytest.approx(0.0015390537600864992, rel=1e-12)
    helped = subprocess.run(
        [sys.executable, "-m", "client", "hvp", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "--vector" in helped.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "client", "gradients", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "--wrt-inputs" in helped.stdout


def test_info_and_openapi_name_the_new_losses_and_hvp(http: httpx.Client) -> None:
    info = http.get("/v1/info").json()
    assert {"binary_cross_entropy", "huber"} <= set(info["losses"])
    paths = http.get("/openapi.json").json()["paths"]
    assert "/v1/hvp" in paths
    schema = json.dumps(http.get("/openapi.json").json()["components"])
    assert "wrt_inputs" in schema
    assert "huber_delta" in schema


def test_explain_names_the_new_losses_term_as_what_it_is(http: httpx.Client) -> None:
    """dE/dyhat for BCE and huber is no multiple of (yhat - y): explain's first factor says so."""
    for request in (_bce_net(), {**_chain_request(), "network": {**seed.chain().network, "loss": "huber"}}):
        body = http.post("/v1/explain", json=request).json()
        path = body["weights"][2]["paths"][0]
        assert path["factors"][0]["name"] == "dE/dyhat_o"
        assert r"\frac{\partial E}{\partial \hat{y}_{o}}" in body["weights"][2]["latex"]
        assert path["value"] == pytest.approx(body["weights"][2]["gradient"], rel=1e-12)


def test_weights_as_columns_take_one_array_as_the_vectors_weights(http: httpx.Client) -> None:
    request = _chain_request()
    request["network"]["weights"] = {
        "source": ["x", "j", "k"],
        "target": ["j", "k", "o"],
        "value": [0.5, -0.3, 0.8],
    }
    one = http.post("/v1/hvp", json={**request, "vector": {"weights": encode(np.array([1.0, 0.5, -2.0]))}})
    each = http.post("/v1/hvp", json={**request, "vector": {"weights": [1.0, 0.5, -2.0]}})
    assert one.status_code == 200, one.text
    assert one.json() == each.json()
    assert set(one.json()["gradients"]["weights"]) == {"source", "target", "value"}  # as /v1/gradients
