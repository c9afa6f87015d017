"""Every bad input we could think of, on every compute endpoint: a problem+json a user can act on.

A live server with small limits answers; after each case it must still answer /healthz.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from service import wire
from tests import seed
from tests.servers import Serve

JSON = {"content-type": "application/json"}

LIMITS = {
    "GRADSERVE_MAX_BODY_BYTES": "65536",
    "GRADSERVE_MAX_UNITS": "50",
    "GRADSERVE_MAX_NEURONS": "200",
    "GRADSERVE_MAX_WEIGHT_ELEMENTS": "2000",
    "GRADSERVE_MAX_BATCH": "64",
    "GRADSERVE_MAX_EPOCHS": "100",
    "GRADSERVE_MAX_STEPS": "500",
    "GRADSERVE_MAX_ACTIVATION_ELEMENTS": "5000",
    "GRADSERVE_MAX_PER_SAMPLE_ELEMENTS": "500",
    "GRADSERVE_MAX_WORK": "100000",
}


@pytest.fixture(scope="module")
def strict_url(serve_module: Serve) -> str:
    return serve_module(LIMITS).url


Request = dict[str, Any]
Change = Callable[[Request], Any]


def base(endpoint: str) -> Request:
    case = seed.chain()
    request: Request = {"network": case.network, "samples": case.samples}
    if endpoint == "sgd":
        request["learning_rate"] = 0.1
    return request


def units(request: Request) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = request["network"]["units"]
    return result


def weights(request: Request) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = request["network"]["weights"]
    return result


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def layer_net(size: int, batch: int = 1, hidden: int = 1) -> Change:
    """Replace the network with x(size) -> h(hidden) -> o and a matching batch."""

    def change(r: Request) -> None:
        r["network"] = {
            "units": [
                {"id": "x", "role": "input", "size": size},
                {"id": "h", "size": hidden},
                {"id": "o", "role": "output"},
            ],
            "weights": [
                {"source": "x", "target": "h", "value": [[0.01] * hidden] * size},
                {"source": "h", "target": "o", "value": [[0.5]] * hidden},
            ],
        }
        r["samples"] = {"inputs": {"x": [[0.1] * size] * batch}, "targets": {"o": [0.0] * batch}}

    return change


def many_units(n: int) -> Change:
    def change(r: Request) -> None:
        r["network"]["units"] += [{"id": f"extra{k}"} for k in range(n)]

    return change


# (name, endpoints, change to the request or raw bytes, status, what the detail must say)
CASES: list[tuple[str, tuple[str, ...], Change | bytes, int, str]] = [
    ("not JSON", ("forward", "gradients", "sgd"), b"{nope", 400, "not valid JSON"),
    ("empty body", ("forward", "gradients", "sgd"), b"", 400, "not valid JSON"),
    ("truncated", ("forward", "gradients", "sgd"), b'{"network": {"units": [', 400, "not valid JSON"),
    ("deep nesting", ("forward", "gradients", "sgd"), b"[" * 5000 + b"]" * 5000, 400, "recursion limit"),
    ("a list, not an object", ("forward", "gradients", "sgd"), b"[]", 422, "the body: Input should be an object"),
    ("null", ("gradients",), b"null", 422, "the body: Input should be an object"),
    ("NaN literal", ("forward", "gradients", "sgd"), b"NaN-literal", 422, "finite number"),
    ("Infinity literal", ("gradients",), b"Infinity-literal", 422, "finite number"),
    ("-Infinity literal", ("gradients",), b"-Infinity-literal", 422, "finite number"),
    ("1e999", ("forward", "gradients", "sgd"), b"1e999-literal", 422, "finite number"),
    ("NaN string", ("gradients",), lambda r: weights(r)[0].update(value="NaN"), 422, "valid number"),
    ("Infinity string", ("gradients",), lambda r: weights(r)[0].update(value="Infinity"), 422, "valid number"),
    ("a string for a number", ("forward", "gradients", "sgd"), lambda r: weights(r)[0].update(value="0.5"), 422, "valid number"),
    ("a boolean for a number", ("forward", "gradients", "sgd"), lambda r: weights(r)[0].update(value=True), 422, "valid number"),
    ("null for a number", ("gradients",), lambda r: weights(r)[0].update(value=None), 422, "valid number"),
    ("a boolean for a size", ("gradients",), lambda r: units(r)[1].update(size=True), 422, "valid integer"),
    ("a float for a size", ("gradients",), lambda r: units(r)[1].update(size=1.5), 422, "valid integer"),
    ("size 0", ("gradients",), lambda r: units(r)[1].update(size=0), 422, "greater than or equal to 1"),
    ("an unknown top-level field", ("forward", "gradients", "sgd"), lambda r: r.update(lr=1), 422, "Extra inputs"),
    ("an unknown unit field", ("gradients",), lambda r: units(r)[1].update(colour="red"), 422, "Extra inputs"),
    ("an unknown weight field", ("gradients",), lambda r: weights(r)[0].update(w=1), 422, "Extra inputs"),
    ("an unknown activation", ("gradients",), lambda r: units(r)[1].update(activation="swish"), 422, "activation"),
    ("an unknown role", ("gradients",), lambda r: units(r)[1].update(role="bias"), 422, "role"),
    ("an unknown loss", ("gradients",), lambda r: r["network"].update(loss="hinge"), 422, "loss"),
    ("an id with a space", ("gradients",), lambda r: units(r)[1].update(id="a b"), 422, "pattern"),
    ("an id of 65 chars", ("gradients",), lambda r: units(r)[1].update(id="a" * 65), 422, "pattern"),
    ("no units", ("gradients",), lambda r: r["network"].update(units=[]), 422, "at least 1 item"),
    ("a cycle", ("forward", "gradients", "sgd"), lambda r: weights(r).append({"source": "o", "target": "j", "value": 1.0}), 422, "cycle: j -> k -> o -> j"),
    ("a self-loop", ("gradients",), lambda r: weights(r).append({"source": "k", "target": "k", "value": 1.0}), 422, "cycle: k -> k"),
    ("an unknown unit in a weight", ("forward", "gradients", "sgd"), lambda r: weights(r).append({"source": "q", "target": "o", "value": 1.0}), 422, "unknown unit(s) 'q'"),
    ("a duplicate id", ("gradients",), lambda r: units(r).append({"id": "j"}), 422, "duplicate unit id 'j'"),
    ("a duplicate pair", ("gradients",), lambda r: weights(r).append(dict(weights(r)[0])), 422, "weight x->j is given twice"),
    ("a weight into an input", ("gradients",), lambda r: weights(r).append({"source": "o", "target": "x", "value": 1.0}), 422, "points into input unit 'x'"),
    ("a weight of the wrong shape", ("forward", "gradients", "sgd"), lambda r: weights(r)[0].update(value=[[1.0, 2.0]]), 422, "weight x->j has shape [1, 2], expected [1, 1]"),
    ("a ragged weight", ("gradients",), lambda r: weights(r)[0].update(value=[[1.0], [1.0, 2.0]]), 422, "ragged"),
    ("a bias of the wrong shape", ("gradients",), lambda r: units(r)[1].update(bias=[0.0, 0.0]), 422, "bias of 'j' has shape [2], expected [1]"),
    ("an activation on an input", ("gradients",), lambda r: units(r)[0].update(activation="relu"), 422, "input unit 'x' takes no activation"),
    ("a bias on an input", ("gradients",), lambda r: units(r)[0].update(bias=1.0), 422, "input unit 'x' takes no bias"),
    ("no input unit", ("gradients",), lambda r: units(r)[0].update(role="hidden"), 422, "no input unit"),
    ("no output unit", ("gradients",), lambda r: units(r)[3].update(role="hidden"), 422, "no output unit"),
    ("cross_entropy with a linear output", ("gradients",), lambda r: r["network"].update(loss="cross_entropy"), 422, "cross_entropy needs output 'o'"),
    ("cross_entropy target out of [0, 1]", ("gradients",), lambda r: (r["network"].update(loss="cross_entropy"), units(r)[3].update(activation="sigmoid"), r["samples"]["targets"].update(o=[2.0])), 422, "target in [0, 1]"),
    ("no inputs for an input unit", ("forward", "gradients", "sgd"), lambda r: r["samples"].update(inputs={}), 422, "inputs has no entry for input unit 'x'"),
    ("no targets", ("gradients", "sgd"), lambda r: r["samples"].pop("targets"), 422, "targets has no entry for output unit 'o'"),
    ("an input for a hidden unit", ("gradients",), lambda r: r["samples"]["inputs"].update(j=[1.0]), 422, "'j' is a hidden unit"),
    ("an input for no unit", ("gradients",), lambda r: r["samples"]["inputs"].update(zz=[1.0]), 422, "'zz' is not a unit"),
    ("batches that differ", ("forward", "gradients", "sgd"), lambda r: r["samples"]["inputs"].update(x=[1.0, 2.0]), 422, "has batch 1 but inputs['x'] has batch 2"),
    ("rows of the wrong width", ("gradients",), lambda r: r["samples"]["inputs"].update(x=[[1.0, 2.0]]), 422, "expected [batch, 1]"),
    ("an empty batch", ("gradients",), lambda r: r["samples"].update(inputs={"x": []}, targets={"o": []}), 422, "expected [batch, 1]"),
    ("a scalar batch", ("gradients",), lambda r: r["samples"]["inputs"].update(x=1.5), 422, "expected [batch, 1]"),
    ("a 3-D batch", ("gradients",), lambda r: r["samples"]["inputs"].update(x=[[[1.5]]]), 422, "expected [batch, 1]"),
    ("ragged samples", ("gradients",), lambda r: r["samples"].update(inputs={"x": [[1.0], [1.0, 2.0]]}), 422, "ragged"),
    ("bad base64", ("gradients",), lambda r: weights(r)[0].update(value={"dtype": "float64", "shape": [1, 1], "data": "!!!"}), 422, "not valid base64"),
    ("base64 of the wrong length", ("gradients",), lambda r: weights(r)[0].update(value={"dtype": "float64", "shape": [1, 1], "data": b64(b"\0" * 4)}), 422, "needs 8"),
    ("base64 holding NaN", ("gradients",), lambda r: weights(r)[0].update(value={"dtype": "float64", "shape": [1, 1], "data": b64(b"\0\0\0\0\0\0\xf8\x7f")}), 422, "finite"),
    ("an unknown dtype", ("gradients",), lambda r: weights(r)[0].update(value={"dtype": "int8", "shape": [1], "data": ""}), 422, "dtype"),
    ("a negative dimension", ("gradients",), lambda r: weights(r)[0].update(value={"dtype": "float64", "shape": [-1], "data": ""}), 422, "greater than or equal to 0"),
    ("an unknown reduction", ("gradients", "sgd"), lambda r: r.update(reduction="median"), 422, "reduction"),
    ("an unknown array_encoding", ("forward",), lambda r: r.update(array_encoding="hex"), 422, "array_encoding"),
    ("per_sample as a string", ("gradients",), lambda r: r.update(per_sample="yes"), 422, "valid boolean"),
    ("learning_rate 0", ("sgd",), lambda r: r.update(learning_rate=0), 422, "greater than 0"),
    ("no learning_rate", ("sgd",), lambda r: r.pop("learning_rate"), 422, "learning_rate: Field required"),
    ("epochs 0", ("sgd",), lambda r: r.update(epochs=0), 422, "greater than or equal to 1"),
    ("batch_size 0", ("sgd",), lambda r: r.update(batch_size=0), 422, "greater than or equal to 1"),
    ("momentum 1", ("sgd",), lambda r: r.update(momentum=1.0), 422, "less than 1"),
    ("negative weight decay", ("sgd",), lambda r: r.update(weight_decay=-0.1), 422, "greater than or equal to 0"),
    ("nesterov without momentum", ("sgd",), lambda r: r.update(nesterov=True), 422, "nesterov needs momentum > 0"),
    ("a negative seed", ("sgd",), lambda r: r.update(seed=-1), 422, "greater than or equal to 0"),
    ("a seed as a string", ("sgd",), lambda r: r.update(seed="1"), 422, "valid integer"),
    ("too many units", ("forward", "gradients", "sgd"), many_units(50), 413, "max_units = 50"),
    ("too many neurons", ("gradients",), lambda r: units(r)[1].update(size=300), 413, "max_neurons = 200"),
    ("too many weight elements", ("forward", "gradients", "sgd"), layer_net(100, hidden=30), 413, "max_weight_elements = 2,000"),
    ("too many weights as columns", ("gradients",), lambda r: r["network"].update(weights={"source": ["x"] * 2001, "target": ["j"] * 2001, "value": [0.0] * 2001}), 413, "the number of weights is 2,001, over the limit max_weight_elements = 2,000"),
    ("too large a batch", ("forward", "gradients", "sgd"), layer_net(1, batch=65), 413, "max_batch = 64"),
    ("too many values", ("gradients",), layer_net(1, batch=60, hidden=100), 413, "max_activation_elements = 5,000"),
    ("too many per-sample values", ("gradients",), lambda r: (layer_net(1, batch=60, hidden=10)(r), r.update(per_sample=True)), 413, "max_per_sample_elements = 500"),
    ("too many steps", ("sgd",), lambda r: r.update(epochs=100, batch_size=1, samples={"inputs": {"x": [0.1] * 6}, "targets": {"o": [0.0] * 6}}), 413, "max_steps = 500"),
    ("too many epochs", ("sgd",), lambda r: r.update(epochs=101), 413, "max_epochs = 100"),
    ("too much total work", ("sgd",), lambda r: (layer_net(20, batch=60, hidden=40)(r), r.update(epochs=100)), 413, "max_work = 100,000"),
]  # fmt: skip

LITERALS = {
    b"NaN-literal": b"NaN",
    b"Infinity-literal": b"Infinity",
    b"-Infinity-literal": b"-Infinity",
    b"1e999-literal": b"1e999",
}


def body_of(endpoint: str, change: Change | bytes) -> bytes:
    if isinstance(change, bytes) and change in LITERALS:
        text = json.dumps(base(endpoint)).replace('"x": [1.5]', '"x": [' + LITERALS[change].decode() + "]")
        return text.encode()
    if isinstance(change, bytes):
        return change
    request = copy.deepcopy(base(endpoint))
    change(request)
    return json.dumps(request).encode()


@pytest.mark.parametrize(
    ("endpoint", "change", "status", "says"),
    [
        pytest.param(e, change, status, says, id=f"{e}: {name}")
        for name, eps, change, status, says in CASES
        for e in eps
    ],
)
def test_bad_input(strict_url: str, endpoint: str, change: Change | bytes, status: int, says: str) -> None:
    with httpx.Client(base_url=strict_url, timeout=30) as http:
        response = http.post(
            f"/v1/{endpoint}", content=body_of(endpoint, change), headers={"content-type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = wire.Problem.model_validate(response.json())
        assert problem.status == status
        assert says in problem.detail, problem.detail
        assert "Traceback" not in response.text
        assert http.get("/healthz").status_code == 200


def test_a_body_over_the_limit_by_its_content_length(strict_url: str) -> None:
    body = json.dumps({**base("gradients"), "pad": "x" * 70_000}).encode()
    response = httpx.post(strict_url + "/v1/gradients", content=body, headers=JSON)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert "max_body_bytes = 65,536" in response.json()["detail"]


def test_a_chunked_body_over_the_limit(strict_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    response = httpx.post(strict_url + "/v1/gradients", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["detail"]


def raw_exchange(url: str, request: bytes) -> str:
    """Send bytes on a fresh connection and read the first answer, whole."""
    import re
    import socket

    host, port = url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            answer += chunk
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            if sep and length and len(body) >= int(length.group(1)):
                break
    return answer.decode(errors="replace")


def test_a_content_length_that_lies_large_is_413_at_once(strict_url: str) -> None:
    head = b"POST /v1/gradients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = raw_exchange(strict_url, head + b"Content-Length: 1000000000\r\n\r\n{}")
    assert answer.startswith("HTTP/1.1 413")
    assert "application/problem+json" in answer
    assert "max_body_bytes" in answer


@pytest.mark.parametrize(
    ("digits", "status"), [("0" * 5000 + "2", "422"), ("1" + "0" * 30, "4"), ("0" * 30 + "2", "422")]
)
def test_a_content_length_of_thousands_of_digits_is_read_as_its_value(
    strict_url: str, digits: str, status: str
) -> None:
    """Leading zeros are legal; Python refuses int() of over 4,300 digits (it was a 500)."""
    head = b"POST /v1/gradients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = raw_exchange(strict_url, head + f"Content-Length: {digits}\r\n\r\n{{}}".encode())
    assert answer.startswith(f"HTTP/1.1 {status}"), answer[:200]
    assert httpx.get(strict_url + "/healthz").status_code == 200


@pytest.mark.parametrize("endpoint", ["forward", "check", "render"])
def test_a_network_whose_every_weight_value_is_misshapen_is_a_422(strict_url: str, endpoint: str) -> None:
    """No weight value usable at all: the problems are reported, nothing is laid out (was a 500)."""
    net = {
        "units": [{"id": "x", "role": "input", "size": 2}, {"id": "o", "role": "output"}],
        "weights": [{"source": "x", "target": "o", "value": 0.5}],
    }
    body = {"network": net, "samples": {"inputs": {"x": [[1.0, 2.0]]}, "targets": {"o": [0.0]}}}
    r = httpx.post(f"{strict_url}/v1/{endpoint}", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == ["network", "weights", 0, "value"]


def test_a_content_length_that_lies_small_is_a_protocol_error(strict_url: str) -> None:
    """The declared bytes are the body; what follows is not HTTP, and the connection is closed."""
    body = json.dumps(base("gradients")).encode()
    head = b"POST /v1/gradients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = raw_exchange(strict_url, head + b"Content-Length: 10\r\n\r\n" + body)
    assert answer.startswith("HTTP/1.1 400")
    assert httpx.get(strict_url + "/healthz").status_code == 200


def test_unknown_paths_and_methods(strict_url: str) -> None:
    for method, path, status in [
        ("GET", "/v2/gradients", 404),
        ("DELETE", "/v1/gradients", 405),
        ("GET", "/v1/sgd", 405),
    ]:
        response = httpx.request(method, strict_url + path)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status
        if status == 405:
            assert response.headers["allow"] == "POST"


def test_every_405_is_one_problem(strict_url: str) -> None:
    """A compute route (plain ASGI) and a FastAPI route answer a wrong method alike."""
    answers = {
        (method, path): httpx.request(method, strict_url + path)
        for method, path in [
            ("GET", "/v1/gradients"),
            ("PUT", "/v1/sgd"),
            ("POST", "/v1/info"),
            ("POST", "/healthz"),
        ]
    }
    for (method, path), response in answers.items():
        assert response.status_code == 405, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"] == "urn:gradserve:problem:method-not-allowed"
        allowed = response.headers["allow"].split(", ")
        assert method not in allowed
        assert body["detail"] == f"{path} takes {' or '.join(allowed)}"
    assert len({r.json()["title"] for r in answers.values()}) == 1
    assert answers["GET", "/v1/gradients"].headers["allow"] == "POST"
    assert "GET" in answers["POST", "/v1/info"].headers["allow"].split(", ")


@pytest.mark.parametrize(
    ("endpoint", "change", "loc"),
    [
        (
            "gradients",
            lambda r: weights(r)[1].update(sorce=weights(r)[1].pop("source")),
            ["network", "weights", 1, "sorce"],
        ),
        (
            "gradients",
            lambda r: weights(r)[1].update(sorce=weights(r)[1].pop("source")),
            ["network", "weights", 1, "source"],
        ),
        (
            "gradients",
            lambda r: r["network"].update(
                weights={"source": ["x", "j", "k"], "targets": ["j", "k", "o"], "value": [1, 2, 3]}
            ),
            ["network", "weights", "targets"],
        ),
        (
            "forward",
            lambda r: r["network"].update(
                weights={"source": ["x", "j", "k"], "target": ["j", "k", "o"], "value": [1, "a", 3]}
            ),
            ["network", "weights", "value", 1],
        ),
        ("sgd", lambda r: units(r)[1].update(bias=[0.1, "b"]), ["network", "units", 1, "bias", 1]),
        ("gradients", lambda r: r["samples"]["inputs"].update(x=[["a"]]), ["samples", "inputs", "x", 0, 0]),
        (
            "gradients",
            lambda r: r["samples"]["inputs"].update(x={"dtype": "float64", "shape": [1]}),
            ["samples", "inputs", "x", "data"],
        ),
        # a unit may be called like a tag: its key stays, only the tag goes
        (
            "gradients",
            lambda r: r["samples"]["inputs"].update(list=[[1, "a"]]),
            ["samples", "inputs", "list", 0, 1],
        ),
        (
            "check",
            lambda r: r.update(gradients={"weights": [{"source": "x", "target": "j", "valeu": 1.0}]}),
            ["gradients", "weights", 0, "valeu"],
        ),
        (
            "check",
            lambda r: r.update(
                gradients={"weights": {"source": ["x"], "target": ["j"], "value": [1.0], "extra": 1}}
            ),
            ["gradients", "weights", "extra"],
        ),
    ],
)
def test_an_error_is_located_where_the_user_wrote_it(
    strict_url: str, endpoint: str, change: Change, loc: list[Any]
) -> None:
    """Never at a tagged union's tag (`network.weights.objects.0.source`): the user wrote no `objects`."""
    request = base(endpoint)
    change(request)
    response = httpx.post(f"{strict_url}/v1/{endpoint}", json=request)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert loc in [e["loc"] for e in problem["errors"]]
    assert ".".join(map(str, loc)) + ": " in problem["detail"]


def test_an_unknown_render_format_is_a_422(strict_url: str) -> None:
    body = {"network": base("gradients")["network"]}
    response = httpx.post(strict_url + "/v1/render?format=png", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "'svg', 'dot' or 'layout'" in response.json()["detail"]


def test_a_client_that_leaves_mid_body_costs_nothing(strict_url: str) -> None:
    import socket

    host, port = strict_url.removeprefix("http://").split(":")
    for _ in range(20):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/gradients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000\r\n\r\n" + b'{"network": '
            )
    assert httpx.get(strict_url + "/healthz").status_code == 200
    response = httpx.post(strict_url + "/v1/gradients", json=base("gradients"))
    assert response.status_code == 200
