"""Binary arrays (issue 15) against a real server: the binary framing of requests and answers
agrees bit for bit with base64 and lists, and every framing fault is a problem, never a 500."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from bench.common import rss_kib
from service import engine, wire
from service.convert import binding
from service.convert.encoding import Sections, binary_sections, to_numpy
from service.launcher import Server
from service.pipeline import costs, dispatch, scan
from service.pipeline.handlers import HANDLERS
from service.problems import InvalidRequestError
from service.settings import Settings
from service.transport import shared
from service.transport.shared import SharedBody, handle_shared
from service.wire import framing
from tests.servers import Serve

OCTETS = "application/octet-stream"
PROBLEM = "urn:gradserve:problem:"


# ---------------------------------------------------------------- building and reading bodies


def as_lists(request: dict[str, Any]) -> bytes:
    return orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)


def as_base64(request: dict[str, Any]) -> bytes:
    def encoded(value: Any) -> Any:
        assert isinstance(value, np.ndarray)
        data = base64.b64encode(np.ascontiguousarray(value).tobytes()).decode()
        return {"dtype": str(value.dtype), "shape": list(value.shape), "data": data}

    return orjson.dumps(request, default=encoded)


def as_binary(request: dict[str, Any], align: int = 8) -> tuple[bytes, dict[str, str]]:
    """The request framed, each NumPy array (float64 or float32) a binary reference."""
    arrays: list[np.ndarray] = []

    def referenced(value: Any) -> Any:
        assert isinstance(value, np.ndarray)
        arrays.append(np.ascontiguousarray(value))
        return framing.reference(value.shape, "FP32" if value.dtype == np.float32 else "FP64")

    length, pieces = framing.frame(orjson.dumps(request, default=referenced), arrays, align)
    return b"".join(pieces), {"content-type": OCTETS, framing.HEADER: str(length)}


def post(http: httpx.Client, path: str, request: dict[str, Any], form: str) -> httpx.Response:
    if form == "binary":
        body, headers = as_binary(request)
        return http.post(path, content=body, headers=headers)
    body = as_lists(request) if form == "list" else as_base64(request)
    return http.post(path, content=body, headers={"content-type": "application/json"})


def answer(response: httpx.Response) -> Any:
    """An answer's JSON, every array (base64 or binary) as nested lists."""
    assert response.status_code == 200, response.text[:500]
    if response.headers["content-type"] == OCTETS:
        text, sections = framing.split(response.content, response.headers[framing.HEADER])
        tree = orjson.loads(bytes(text))
        refs = framing.references(tree, len(sections))
        assert all(ref.datatype == "FP64" for ref in refs)
        return framing.resolve(tree, refs, lambda ref: framing.to_lists(sections, ref))
    assert response.headers["content-type"] == "application/json"
    return _decoded(response.json())


def _decoded(tree: Any) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"dtype", "shape", "data"}:
            raw = base64.b64decode(tree["data"])
            return np.frombuffer(raw, tree["dtype"]).reshape(tree["shape"]).tolist()
        return {k: _decoded(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_decoded(v) for v in tree]
    return tree


def problem(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"] == "application/problem+json", response.text[:300]
    return response.status_code, response.json()["type"].removeprefix(PROBLEM)


# ---------------------------------------------------------------- requests


def mlp(rng: np.random.Generator, batch: int = 6) -> dict[str, Any]:
    """x(3) -> h(5, tanh) -> o(2, sigmoid), every array NumPy."""
    net = {
        "units": [
            {"id": "x", "role": "input", "size": 3},
            {"id": "h", "size": 5, "activation": "tanh", "bias": rng.normal(size=5)},
            {"id": "o", "role": "output", "size": 2, "activation": "sigmoid", "bias": rng.normal(size=2)},
        ],
        "weights": [
            {"source": "x", "target": "h", "value": rng.normal(size=(3, 5))},
            {"source": "h", "target": "o", "value": rng.normal(size=(5, 2))},
            {"source": "x", "target": "o", "value": rng.normal(size=(3, 2))},
        ],
        "loss": "cross_entropy",
    }
    samples = {"inputs": {"x": rng.normal(size=(batch, 3))}, "targets": {"o": rng.uniform(size=(batch, 2))}}
    return {"network": net, "samples": samples}


def columns(rng: np.random.Generator) -> dict[str, Any]:
    """Single units joined by weights given as columns."""
    units: list[dict[str, Any]] = [{"id": f"i{k}", "role": "input"} for k in range(3)]
    units += [{"id": "h0", "bias": rng.normal(size=1)}, {"id": "h1"}, {"id": "o", "role": "output"}]
    source, target = ["i0", "i1", "i2", "i0", "h0", "h1"], ["h0", "h0", "h1", "h1", "o", "o"]
    net = {"units": units, "weights": {"source": source, "target": target, "value": rng.normal(size=6)}}
    inputs = {f"i{k}": rng.normal(size=(4, 1)) for k in range(3)}
    return {"network": net, "samples": {"inputs": inputs, "targets": {"o": rng.normal(size=(4, 1))}}}


def claimed(request: dict[str, Any], http: httpx.Client) -> dict[str, Any]:
    """The request with the service's own gradients claimed (as NumPy), for /v1/check."""
    got = answer(post(http, "/v1/gradients", request, "list"))["gradients"]
    weights = got["weights"]
    if isinstance(weights, dict):
        weights = {**weights, "value": np.array(weights["value"])}
    else:
        weights = [{**w, "value": np.array(w["value"])} for w in weights]
    biases = {uid: np.atleast_1d(b) for uid, b in got["biases"].items()}
    return {**request, "gradients": {"weights": weights, "biases": biases}}


CASES: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "forward": ("/v1/forward", mlp, {}),
    "gradients": ("/v1/gradients", mlp, {"per_sample": True}),
    "gradients-columns": ("/v1/gradients", columns, {"per_sample": True}),
    "sgd": ("/v1/sgd", mlp, {"learning_rate": 0.3, "epochs": 3, "batch_size": 4, "momentum": 0.5}),
    "sgd-columns": ("/v1/sgd", columns, {"learning_rate": 0.3, "epochs": 2}),
    "check": ("/v1/check", mlp, {}),
    "check-columns": ("/v1/check", columns, {}),
    "explain": ("/v1/explain", columns, {"sample": 1}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_binary_base64_and_list_requests_answer_the_same_bit_for_bit(http: httpx.Client, case: str) -> None:
    path, build, extra = CASES[case]
    request = {**build(np.random.default_rng(len(case))), **extra}
    if path == "/v1/check":
        request = claimed(request, http)
    answers = {
        (form, encoding): answer(post(http, path, {**request, "array_encoding": encoding}, form))
        for form in ("list", "base64", "binary")
        for encoding in ("list", "base64", "binary")
    }
    for (form, encoding), got in answers.items():
        # floats compared exactly; sgd answers a bias it was not given as a number in a list
        # answer and as an array [1] in an encoded one, so each is compared with its own kind
        like = "list" if encoding == "list" and path == "/v1/sgd" else "base64"
        assert got == answers["list", like], (form, encoding)


def test_a_binary_body_is_drawn_as_its_json_twin_is(http: httpx.Client) -> None:
    request = mlp(np.random.default_rng(17))
    binary, listed = (post(http, "/v1/render?format=dot", request, form) for form in ("binary", "list"))
    assert binary.status_code == 200
    assert binary.text == listed.text


def test_a_binary_answer_has_its_headers_and_sections_in_order(http: httpx.Client) -> None:
    request = {**mlp(np.random.default_rng(1)), "array_encoding": "binary"}
    response = post(http, "/v1/gradients", request, "list")
    assert response.headers["content-type"] == OCTETS
    length = int(response.headers[framing.HEADER])
    assert length % 8 == 0  # padded, so that FP64 sections can be read in place
    text = response.content[:length]
    tree = json.loads(text)
    refs = framing.references(tree, len(response.content) - length)
    weights = [ref for ref in refs if ref.path[:2] == ("gradients", "weights")]
    assert [ref.shape for ref in weights] == [(3, 5), (5, 2), (3, 2)]
    assert [ref.offset for ref in refs] == sorted(ref.offset for ref in refs)
    listed = post(http, "/v1/gradients", {**request, "array_encoding": "list"}, "list").json()
    w = np.frombuffer(response.content, "<f8", count=15, offset=length + weights[0].offset)
    assert w.reshape(3, 5).tolist() == listed["gradients"]["weights"][0]["value"]


def test_fp32_arrays_are_computed_as_the_float64_numbers_they_are(http: httpx.Client) -> None:
    request = mlp(np.random.default_rng(2))
    as32 = {
        "network": request["network"],
        "samples": {
            "inputs": {"x": request["samples"]["inputs"]["x"].astype(np.float32)},
            "targets": {"o": request["samples"]["targets"]["o"].astype(np.float32)},
        },
    }
    widened = {
        "network": request["network"],
        "samples": {
            kind: {k: v.astype(np.float64) for k, v in d.items()} for kind, d in as32["samples"].items()
        },
    }
    got = answer(post(http, "/v1/gradients", as32, "binary"))
    assert got == answer(post(http, "/v1/gradients", widened, "list"))
    assert got != answer(post(http, "/v1/gradients", request, "list"))  # (the rounding shows)


def test_a_body_framed_as_tritons_python_client_frames_one_is_accepted(http: httpx.Client) -> None:
    # tritonclient.http: json.dumps of the document (its default separators, no padding), the
    # tensors' raw bytes appended in order, and the header giving the JSON's length
    rng = np.random.default_rng(3)
    request = mlp(rng)
    arrays = [
        request["network"]["weights"][0]["value"],
        rng.normal(size=(6, 3)).astype(np.float32),
    ]
    request["network"]["weights"][0]["value"] = {
        "datatype": "FP64",
        "shape": [3, 5],
        "parameters": {"binary_data_size": arrays[0].nbytes},
    }
    request["samples"]["inputs"]["x"] = {
        "shape": [6, 3],
        "datatype": "FP32",
        "parameters": {"binary_data_size": arrays[1].nbytes},
    }
    text = json.dumps(request, default=lambda a: a.tolist())
    assert len(text) % 8 != 0  # (so the FP64 section is not aligned: read by copy)
    body = text.encode() + b"".join(a.tobytes() for a in arrays)
    headers = {"Inference-Header-Content-Length": str(len(text)), "Content-Type": OCTETS}
    response = http.post("/v1/gradients", content=body, headers=headers)
    request["network"]["weights"][0]["value"] = arrays[0]
    request["samples"]["inputs"]["x"] = arrays[1].astype(np.float64)
    assert answer(response) == answer(post(http, "/v1/gradients", request, "list"))


def _reference_in_learning_rate(request: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body, headers = as_binary({**request, "learning_rate": np.ones(1)})
    return body, headers


def _framing_faults() -> Iterator[tuple[str, Any, str, int, str]]:
    """(name, how the body and headers are spoiled, endpoint, status, problem type)."""

    def spoil(fn: Any) -> Any:
        return fn

    yield (
        "no header",
        spoil(lambda b, h: (b, {"content-type": OCTETS})),
        "gradients",
        400,
        "malformed-binary-body",
    )
    yield (
        "text header",
        spoil(lambda b, h: (b, {**h, framing.HEADER: "12a"})),
        "gradients",
        400,
        "malformed-binary-body",
    )
    yield (
        "negative header",
        spoil(lambda b, h: (b, {**h, framing.HEADER: "-1"})),
        "gradients",
        400,
        "malformed-binary-body",
    )
    yield (
        "length past the body",
        spoil(lambda b, h: (b, {**h, framing.HEADER: str(len(b) + 1)})),
        "gradients",
        400,
        "malformed-binary-body",
    )
    yield "sections short", spoil(lambda b, h: (b[:-8], h)), "gradients", 400, "malformed-binary-body"
    yield (
        "sections left over",
        spoil(lambda b, h: (b + bytes(8), h)),
        "gradients",
        400,
        "malformed-binary-body",
    )
    yield (
        "JSON cut short",
        spoil(lambda b, h: (b, {**h, framing.HEADER: "10"})),
        "gradients",
        400,
        "malformed-json",
    )
    yield (
        "size not shape x itemsize",
        spoil(lambda b, h: _respelled(b, h, b'"binary_data_size":120', b'"binary_data_size":112')),
        "gradients",
        422,
        "invalid-request",
    )
    yield (
        "unknown datatype",
        spoil(lambda b, h: _respelled(b, h, b'"FP64"', b'"INT8"')),
        "gradients",
        422,
        "invalid-request",
    )
    yield (
        "a reference where no array may stand",
        spoil(
            lambda b, h: _respelled(
                b, h, b'"per_sample":false', b'"per_sample":' + orjson.dumps(framing.reference([0]))
            )
        ),
        "gradients",
        422,
        "invalid-request",
    )
    yield (
        "a NaN element",
        spoil(lambda b, h: (b[:-8] + np.array([np.nan]).tobytes(), h)),
        "gradients",
        422,
        "invalid-request",
    )
    yield (
        "an infinite element",
        spoil(lambda b, h: (b[:-8] + np.array([-np.inf]).tobytes(), h)),
        "forward",
        422,
        "invalid-request",
    )
    yield (
        "a reference in a JSON body",
        spoil(lambda b, h: (b[: int(h[framing.HEADER])], {"content-type": "application/json"})),
        "gradients",
        422,
        "invalid-request",
    )


def _respelled(body: bytes, headers: dict[str, str], old: bytes, new: bytes) -> tuple[bytes, dict[str, str]]:
    length = int(headers[framing.HEADER])
    text = body[:length]
    assert old in text, text
    text = text.replace(old, new, 1)
    return text + body[length:], {**headers, framing.HEADER: str(len(text))}


FAULTS = list(_framing_faults())


@pytest.mark.chaos
@pytest.mark.parametrize(("name", "spoil", "endpoint", "status", "kind"), FAULTS, ids=[f[0] for f in FAULTS])
def test_every_framing_fault_is_a_problem(
    http: httpx.Client, name: str, spoil: Any, endpoint: str, status: int, kind: str
) -> None:
    request = {**mlp(np.random.default_rng(4)), "per_sample": False}
    if endpoint == "forward":
        request.pop("per_sample")
    body, headers = as_binary(request)
    assert http.post(f"/v1/{endpoint}", content=body, headers=headers).status_code == 200
    response = http.post(f"/v1/{endpoint}", content=spoil(body, headers)[0], headers=spoil(body, headers)[1])
    assert problem(response) == (status, kind)


def test_a_faults_problem_says_where(http: httpx.Client) -> None:
    body, headers = as_binary({**mlp(np.random.default_rng(5)), "array_encoding": "binary"})
    body, headers = _respelled(body, headers, b'"FP64"', b'"FP16"')
    response = http.post("/v1/forward", content=body, headers=headers)
    assert problem(response) == (422, "invalid-request")
    assert response.json()["errors"][0]["loc"] == ["network", "units", 1, "bias", "datatype"]
    nan = mlp(np.random.default_rng(5))
    nan["samples"]["inputs"]["x"][2, 1] = np.nan
    body, headers = as_binary(nan)
    response = http.post("/v1/forward", content=body, headers=headers)
    assert problem(response) == (422, "invalid-request")
    assert response.json()["errors"][0]["loc"] == ["samples", "inputs", "x"]


def test_a_binary_requests_problems_stay_problem_json(http: httpx.Client) -> None:
    request = {**mlp(np.random.default_rng(6)), "array_encoding": "binary"}
    request["network"]["weights"][0]["target"] = "nowhere"
    body, headers = as_binary(request)
    assert problem(http.post("/v1/gradients", content=body, headers=headers)) == (422, "invalid-network")


def test_a_header_with_another_content_type_is_still_a_415(http: httpx.Client) -> None:
    body, headers = as_binary(mlp(np.random.default_rng(7)))
    response = http.post("/v1/forward", content=body, headers={**headers, "content-type": "text/plain"})
    assert problem(response) == (415, "unsupported-media-type")
    assert OCTETS in response.json()["detail"]


# ---------------------------------------------------------------- large bodies, in shared memory


def _large(rng: np.random.Generator, batch: int) -> dict[str, Any]:
    request = mlp(rng, batch)
    request["network"]["units"][0]["size"] = 40
    request["network"]["weights"][0]["value"] = rng.normal(size=(40, 5))
    request["network"]["weights"][2]["value"] = rng.normal(size=(40, 2))
    request["samples"]["inputs"]["x"] = rng.normal(size=(batch, 40))
    return request


def test_a_large_binary_body_is_read_in_shared_memory_and_answered_the_same(http: httpx.Client) -> None:
    request = {**_large(np.random.default_rng(8), 4000), "array_encoding": "binary"}
    body, _ = as_binary(request)
    assert len(body) > SharedBody.MIN_SIZE  # (so the server writes it into shared memory)
    got = answer(post(http, "/v1/forward", request, "binary"))
    assert got == answer(post(http, "/v1/forward", request, "base64"))
    assert got["units"]["x"]["z"] == request["samples"]["inputs"]["x"].tolist()


def test_handle_shared_reads_a_binary_body_in_place_and_writes_its_answer_over_it() -> None:
    request = {**_large(np.random.default_rng(9), 3000), "array_encoding": "binary"}
    body, headers = as_binary(request)
    length = int(headers[framing.HEADER])
    # room for the answer, which holds the input's z: a view of the body that must be copied
    # before the answer is written over the body
    shm = SharedMemory(create=True, size=2 * len(body))
    try:
        assert shm.buf is not None
        shm.buf[: len(body)] = body
        limits = Settings().limits()
        reply = handle_shared("forward", shm.name, len(body), limits, length)
        assert reply.status == 200
        assert reply.in_shared > 0
        assert reply.content == b""
        framed = bytes(shm.buf[: reply.in_shared])
    finally:
        shm.close()
        shm.unlink()
    expected = dispatch.handle("forward", as_base64(request), limits)
    assert framed == expected.content
    assert reply.headers == expected.headers
    assert reply.media_type == expected.media_type == OCTETS


def test_an_answer_that_views_the_body_is_not_spoilt_by_being_written_over_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an answer whose sections are views of the body (an engine that hands an input back as it
    # came), its JSON longer than the request's: written in order without a copy, the first
    # section would overwrite the start of the second before it is read
    halves = np.arange(2 * 4096, dtype=np.float64)
    body = b"{}" + b" " * 6 + halves.tobytes()
    document = b'{"a": 1}' + b" " * 4096

    def echo(endpoint: str, view: memoryview, limits: Any, framed: int | None) -> dispatch.Reply:
        sections = view[8:]
        return dispatch.Reply(
            200, document, OCTETS, {}, sections=(sections[: 4096 * 8], sections[4096 * 8 :])
        )

    monkeypatch.setattr(shared, "handle_in_pieces", echo)
    shm = SharedMemory(create=True, size=2 * len(body))
    try:
        assert shm.buf is not None
        shm.buf[: len(body)] = body
        reply = shared.handle_shared("forward", shm.name, len(body), Settings().limits(), 8)
        written = bytes(shm.buf[: reply.in_shared])
    finally:
        shm.close()
        shm.unlink()
    assert written == document + halves.tobytes()


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_finite_numbers_whose_sum_overflows_are_accepted(datatype: str) -> None:
    big = np.finfo(np.float64 if datatype == "FP64" else np.float32).max
    values = np.array([[big, big], [1.0, -2.0]], framing.DATATYPES[datatype][0])
    ref = wire.BinaryReference.model_validate(framing.reference([2, 2], datatype))
    found = framing.references({"a": framing.reference([2, 2], datatype)}, values.nbytes)
    sections = Sections(memoryview(values.tobytes()), {found[0].path: found[0]})
    with binary_sections(sections):
        assert to_numpy(ref, ["a"]).tolist() == values.astype(np.float64).tolist()
        values[1, 1] = np.nan
        spoilt = Sections(memoryview(values.tobytes()), sections.at)
        with binary_sections(spoilt), pytest.raises(InvalidRequestError, match="finite"):
            to_numpy(ref, ["a"])


def test_one_input_units_array_is_used_as_given_not_copied() -> None:
    request = mlp(np.random.default_rng(15))
    plan = binding.compile_network(wire.Network.model_validate_json(as_lists(request["network"])))
    x, y = request["samples"]["inputs"]["x"], request["samples"]["targets"]["o"]
    batch = engine.bind_samples(plan, {"x": x}, {"o": y}, True)
    assert np.shares_memory(batch.x, x)
    assert batch.y is not None
    assert np.shares_memory(batch.y, y)


@pytest.mark.slow
def test_a_32_mib_binary_body_peaks_under_three_times_its_size(serve: Serve) -> None:
    rng = np.random.default_rng(16)
    width = 400
    rows = 3_990_000 // (width + 1)  # (max_activation_elements)
    units = [{"id": "x", "role": "input", "size": width}, {"id": "o", "role": "output"}]
    request = {
        "network": {
            "units": units,
            "weights": [{"source": "x", "target": "o", "value": rng.normal(size=(width, 1))}],
        },
        "samples": {"inputs": {"x": rng.normal(size=(rows, width))}, "targets": {"o": np.zeros((rows, 1))}},
        "include_units": False,
        "array_encoding": "binary",
    }
    body, headers = as_binary(request)
    assert len(body) > 30 * 2**20
    server = serve()
    idle = rss_kib(server.pid)
    response = httpx.post(server.url + "/v1/gradients", content=body, headers=headers, timeout=120)
    assert response.status_code == 200
    peak = rss_kib(server.pid, "VmHWM")
    assert (peak - idle) * 1024 / len(body) < 3  # server and workers (shared memory counted in each)


# ---------------------------------------------------------------- costs, documents


def test_a_binary_answer_is_estimated_at_eight_bytes_a_number() -> None:
    request = _large(np.random.default_rng(10), 2000)
    sizes = {}
    for encoding in ("list", "base64", "binary"):
        body = as_lists({**request, "array_encoding": encoding})
        parsed = dispatch.parse(HANDLERS["forward"].wire.request, body)
        sizes[encoding] = costs.estimate(costs.forward, parsed, Settings().limits()).answer_bytes
    numbers = 2000 * (40 + 2 * (5 + 2) + 2)
    assert numbers * 8 <= sizes["binary"] < numbers * 9
    assert sizes["binary"] < sizes["base64"] < sizes["list"]


def test_binary_sections_are_not_counted_as_json() -> None:
    body, headers = as_binary(_large(np.random.default_rng(11), 4000))
    length = int(headers[framing.HEADER])
    counts = scan.BodyCounts.of(body[:length], len(body) - length)
    assert counts.size == length
    json_counts = scan.BodyCounts.of(as_lists(_large(np.random.default_rng(11), 4000)))
    assert counts.parse_ns() * 20 < json_counts.parse_ns()


def test_the_numbers_in_binary_sections_count_against_the_limits(http: httpx.Client) -> None:
    limits = Settings(max_activation_elements=1000, max_weight_elements=1000, max_neurons=100).limits()
    body, headers = as_binary(_large(np.random.default_rng(12), 2000))
    reply = dispatch.handle("forward", body, limits, int(headers[framing.HEADER]))
    assert reply.status == 413
    assert b"binary sections" in reply.content


def test_the_openapi_document_describes_binary_bodies_and_answers(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    for path in ("/v1/forward", "/v1/gradients", "/v1/sgd", "/v1/explain", "/v1/check", "/v1/render"):
        post_doc = doc["paths"][path]["post"]
        content = post_doc["requestBody"]["content"]
        assert OCTETS in content, path
        assert framing.HEADER in content[OCTETS]["description"]
        if path != "/v1/render":
            streamed = {"text/event-stream"} if path == "/v1/sgd" else set()  # (test_stream.py)
            assert set(post_doc["responses"]["200"]["content"]) == {"application/json", OCTETS} | streamed, (
                path
            )
    assert "binary_tensor_data" in http.get("/v1/info").json()["extensions"]


@pytest.fixture(scope="module")
def thread_server(serve_module: Serve) -> Server:
    return serve_module({"GRADSERVE_ISOLATION": "thread", "GRADSERVE_INLINE_MS": "0"})


def test_binary_bodies_work_computed_in_threads_too(thread_server: Server) -> None:
    request = {**_large(np.random.default_rng(13), 4000), "array_encoding": "binary"}
    with httpx.Client(base_url=thread_server.url, timeout=60) as http:
        got = answer(post(http, "/v1/gradients", request, "binary"))
        assert got == answer(post(http, "/v1/gradients", request, "list"))


def test_a_binary_body_nested_past_the_parsers_depth_is_a_400_not_a_500(http: httpx.Client) -> None:
    document = b"[" * 5000 + b"]" * 5000
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(document)),
    }
    response = http.post("/v1/forward", content=document + bytes(8), headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_an_empty_reference_of_a_huge_shape_is_a_422_not_a_500(http: httpx.Client) -> None:
    request = mlp(np.random.default_rng(8))
    request["network"]["units"][1]["bias"] = [0.0] * 5  # in the JSON: no section of its own
    body, headers = as_binary(request)
    length = int(headers[framing.HEADER])
    document = json.loads(body[:length])
    document["network"]["units"][1]["bias"] = {
        "datatype": "FP64",
        "shape": [0, 2**62],
        "parameters": {"binary_data_size": 0},
    }
    text = json.dumps(document).encode()
    response = http.post(
        "/v1/forward", content=text + body[length:], headers={**headers, framing.HEADER: str(len(text))}
    )
    assert problem(response) == (422, "invalid-request"), response.text
    assert "too large" in response.json()["detail"]
