"""Costs estimated before computing: what runs inline, what is refused, and how well the
estimates follow the time each endpoint takes."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import numpy as np
import pytest

from service.pipeline import costs, dispatch, handlers, scan
from service.settings import Settings
from service.transport import executors
from tests.test_limits import call, chain_request, over_limit

JSON = {"content-type": "application/json"}


def wide_layer(size: int, batch: int = 1, **changes: Any) -> bytes:
    """The smallest request for a lot of work: one hidden layer of `size` units and no weights."""
    units = [{"id": "x", "role": "input"}, {"id": "h", "size": size}, {"id": "o", "role": "output"}]
    samples = {"inputs": {"x": [1.0] * batch}, "targets": {"o": [0.0] * batch}}
    return json.dumps({"network": {"units": units}, "samples": samples, **changes}).encode()


def estimate(endpoint: str, body: bytes, limits: Any = None) -> costs.Estimate:
    handler = handlers.HANDLERS[endpoint]
    request = handler.wire.request.model_validate_json(body)
    return costs.estimate(handler.cost, request, limits or Settings().limits(), scan.BodyCounts.of(body))


# ---------------------------------------------------------------- inline, or in a worker


def test_a_small_body_asking_for_a_huge_answer_is_not_computed_inline() -> None:
    """A few hundred bytes asking for a million units' values once ran on the event loop,
    answering tens of MB; its estimate now counts the units x batch and the answer."""
    body = wide_layer(999_997)
    assert len(body) < 400
    limits = Settings().limits()
    assert estimate("forward", body).ms > 1.0
    assert dispatch.handle_inline("forward", body, limits, 1.0) is None
    assert dispatch.handle_inline("forward", json.dumps(chain_request()).encode(), limits, 1.0) is not None


def test_a_body_of_many_objects_is_handed_on_before_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing 64 KiB of tiny objects holds the event loop for many milliseconds: the bytes
    are counted first, and the parse is left to a worker."""
    units = [
        {"id": "x", "role": "input"},
        *({"id": f"u{k}"} for k in range(3000)),
        {"id": "o", "role": "output"},
    ]
    body = json.dumps({"network": {"units": units}, "samples": {"inputs": {"x": [1.0]}}}).encode()
    assert len(body) < 64 * 1024
    parsed: list[bytes] = []
    real = dispatch.parse
    monkeypatch.setattr(dispatch, "parse", lambda model, data: parsed.append(data) or real(model, data))
    assert dispatch.handle_inline("forward", body, Settings().limits(), 1.0) is None
    assert parsed == []
    dispatch.handle_inline("forward", json.dumps(chain_request()).encode(), Settings().limits(), 1.0)
    assert len(parsed) == 1  # (the spy sees what is parsed)


# ---------------------------------------------------------------- the answer's size


def test_an_answer_over_max_answer_bytes_is_a_quick_413_saying_how_to_ask_for_less() -> None:
    started = time.monotonic()
    response = call(Settings(), "POST", "/v1/forward", content=wide_layer(999_997, batch=2), headers=JSON)
    over_limit(response, "max_answer_bytes")
    detail = response.json()["detail"]
    assert "smaller batch" in detail
    assert "base64" in detail
    assert time.monotonic() - started < 5  # refused before computing (a generous bound)

    body = wide_layer(999_997, batch=2, include_units=True)
    gradients = call(Settings(), "POST", "/v1/gradients", content=body, headers=JSON)
    over_limit(gradients, "max_answer_bytes")
    assert "include_units false" in gradients.json()["detail"]
    # asking for less fits: no unit tables, or base64 (less than half the bytes of JSON lists)
    limit = Settings().max_answer_bytes
    assert estimate("gradients", wide_layer(999_997, batch=2, include_units=False)).answer_bytes < limit
    assert estimate("forward", wide_layer(999_997, batch=2, array_encoding="base64")).answer_bytes < limit
    small = Settings(max_answer_bytes=estimate("forward", json.dumps(chain_request()).encode()).answer_bytes)
    assert call(small, "POST", "/v1/forward", json=chain_request()).status_code == 200


# ---------------------------------------------------------------- work


def test_checking_a_wide_layer_is_refused_for_its_work_at_once() -> None:
    """/v1/check runs the network twice per parameter: a 150,000-unit layer of biases alone was
    estimated at 2 s, accepted, and ran until the deadline."""
    body = wide_layer(150_000)
    assert len(body) < 300
    started = time.monotonic()
    reply = dispatch.handle("check", body, Settings(timeout_s=5).limits())
    assert reply.status == 413, reply.content[:300]
    detail = json.loads(reply.content)["detail"]
    assert "max_work" in detail
    assert "checking 150,001 parameters runs the network twice for each" in detail
    assert time.monotonic() - started < 2  # refused, not run until the 5 s deadline
    assert dispatch.handle("check", wide_layer(300), Settings().limits()).status == 200


def dense(rng: np.random.Generator, batch: int) -> dict[str, Any]:
    sizes = [16, 32, 32, 4]
    units = [
        {"id": "l0", "role": "input", "size": sizes[0]},
        {"id": "l1", "size": sizes[1], "activation": "tanh"},
        {"id": "l2", "size": sizes[2], "activation": "relu"},
        {"id": "l3", "role": "output", "size": sizes[3]},
    ]
    weights = [
        {
            "source": f"l{i}",
            "target": f"l{i + 1}",
            "value": rng.normal(scale=0.2, size=(sizes[i], sizes[i + 1])).tolist(),
        }
        for i in range(3)
    ]
    samples = {
        "inputs": {"l0": rng.normal(size=(batch, sizes[0])).tolist()},
        "targets": {"l3": rng.normal(size=(batch, sizes[-1])).tolist()},
    }
    return {"network": {"units": units, "weights": weights}, "samples": samples}


def singles(rng: np.random.Generator, batch: int) -> dict[str, Any]:
    """A deep DAG of single units (each joined to the next and to the one three on): many levels."""
    ids = ["x", *(f"u{k}" for k in range(60)), "o"]
    units = [{"id": "x", "role": "input"}, *({"id": u} for u in ids[1:-1]), {"id": "o", "role": "output"}]
    pairs = [*itertools.pairwise(ids), *zip(ids, ids[3:], strict=False)]
    weights = {
        "source": [a for a, _ in pairs],
        "target": [b for _, b in pairs],
        "value": rng.normal(scale=0.5, size=len(pairs)).tolist(),
    }
    samples = {
        "inputs": {"x": rng.normal(size=batch).tolist()},
        "targets": {"o": rng.normal(size=batch).tolist()},
    }
    return {"network": {"units": units, "weights": weights}, "samples": samples}


def biases_only(rng: np.random.Generator, batch: int, size: int = 3000) -> dict[str, Any]:
    units = [
        {"id": "x", "role": "input"},
        {"id": "h", "size": size, "activation": "sigmoid", "bias": rng.normal(size=size).tolist()},
        {"id": "o", "role": "output"},
    ]
    samples = {"inputs": {"x": [0.5] * batch}, "targets": {"o": [0.0] * batch}}
    return {"network": {"units": units}, "samples": samples}


OPTIONS: dict[str, dict[str, Any]] = {
    "forward": {},
    "gradients": {"per_sample": True, "wrt_inputs": True},
    "sgd": {"learning_rate": 0.01, "epochs": 3, "batch_size": 8},
    "explain": {"max_paths": 2},
    "check": {},
    "render": {"show": "gradients"},
    "hvp": {},  # and a vector of the network's own weights (below)
}


def _vector_for(request: dict[str, Any]) -> dict[str, Any]:
    """/v1/hvp's vector: the network's weights themselves (any direction costs the same)."""
    weights = request["network"].get("weights", [])
    values = weights["value"] if isinstance(weights, dict) else [w["value"] for w in weights]
    return {"vector": {"weights": values}}


@pytest.mark.parametrize("shape", ["dense", "singles", "biases only"])
def test_estimates_follow_the_time_each_endpoint_takes(shape: str) -> None:
    """Each endpoint's estimate is within 10x of its CPU time (the least of three runs: CPU time,
    as other processes on a shared machine stretch the wall clock; this thread's, as a BLAS
    thread left spinning after an earlier test's large product would add its own to the
    process's), and its answer's estimate is at least its size and within 10x of it."""
    rng = np.random.default_rng(0)
    make = {"dense": dense, "singles": singles, "biases only": biases_only}[shape]
    limits = Settings().limits()
    executors.tune_for_requests()
    misses = []
    for endpoint, options in OPTIONS.items():
        request = make(rng, 32)
        if endpoint == "check" and shape == "biases only":
            request = biases_only(rng, 32, size=200)  # two forward passes per bias
        if endpoint == "hvp":
            options = _vector_for(request)
        body = json.dumps({**request, **options}).encode()
        guess = estimate(endpoint, body, limits)
        times = []
        for _ in range(3):
            start = time.thread_time()
            reply = dispatch.handle(endpoint, body, limits)
            times.append((time.thread_time() - start) * 1e3)
        assert reply.status == 200, (endpoint, reply.content[:300])
        taken, median = min(times), statistics.median(times)
        line = f"{endpoint}: estimated {guess.ms:.2f} ms, took {taken:.2f} ms (median {median:.2f})"
        print(line)
        if not taken / 10 <= guess.ms <= taken * 10:
            misses.append(line)
        if not len(reply.content) <= guess.answer_bytes <= 10 * len(reply.content):
            misses.append(
                f"{endpoint}: answer estimated at {guess.answer_bytes:,} bytes, was {len(reply.content):,}"
            )
    assert not misses, misses


# ---------------------------------------------------------------- parsing, bounded


MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time
    from service.pipeline import dispatch
    from service.transport import executors
    from service.settings import Settings

    size = 32 * 2**20 - 4096
    tail = b']}, "samples": {"inputs": {}}}'
    head = b'{"network": {"units": ['
    item = b'{"id":"a"},'
    units = head + item * ((size - 100) // len(item)) + b'{"id":"b"}' + tail
    head = b'{"network": {"units": [{"id": "x", "role": "input"}, {"id": "o", "role": "output"}]}, '
    numbers = head + b'"samples": {"inputs": {"x": [' + b"0," * ((size - 200) // 2) + b"0]}}}"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for body in (units, numbers):
        started = time.monotonic()
        reply = dispatch.handle("forward", body, Settings().limits())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"status": reply.status, "detail": json.loads(reply.content)["detail"],
                          "grew": (peak - before) / len(body), "seconds": time.monotonic() - started}))
    """
)


def test_bodies_of_millions_of_items_are_refused_before_they_are_parsed() -> None:
    """32 MiB of three million tiny units once took 7 s and 2 GB to refuse (pydantic built every
    one before max_units was counted); 16 million zeros in a list, 1.3 GB. Both are counted in
    the bytes first: the process parsing them grows by at most 10x a body."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=120, check=True
    )
    (units, numbers) = [json.loads(line) for line in out.stdout.splitlines()]
    assert units["status"] == 413, units
    assert "max_units" in units["detail"]
    assert numbers["status"] == 413, numbers
    assert "max_activation_elements" in numbers["detail"]
    for measured in (units, numbers):
        assert measured["grew"] <= 10, measured


def test_counting_units_in_the_bytes_sees_keys_not_ids() -> None:
    """A unit named "id" may be named by every weight: only "id" as a key counts a unit, with
    or without whitespace before its colon."""
    hidden = ["h1", "h2", "h3"]
    units = [{"id": "x", "role": "input"}, {"id": "id"}, *({"id": h} for h in hidden)]
    weights = [("x", "id"), *(("id", h) for h in hidden), *((h, "o") for h in hidden)]
    request = {
        "network": {
            "units": [*units, {"id": "o", "role": "output"}],
            "weights": [{"source": a, "target": b, "value": 0.5} for a, b in weights],
        },
        "samples": {"inputs": {"x": [1.0]}, "targets": {"o": [0.0]}},
    }
    limits = Settings(max_units=6).limits()
    body = json.dumps(request).encode()
    assert body.count(b'"id"') > 6 + 3
    assert dispatch.handle("gradients", body, limits).status == 200
    many = {**chain_request(), "network": {"units": [{"id": f"u{k}"} for k in range(10)]}}
    assert dispatch.handle("gradients", json.dumps(many).encode(), limits).status == 413
    spaced = json.dumps(many).replace('"id":', '"id" \n:').encode()
    reply = dispatch.handle("gradients", spaced, limits)
    assert reply.status == 413, reply.content
    assert b"10 unit entries" in reply.content


@pytest.mark.parametrize("framed", [False, True], ids=["json", "binary"])
def test_a_body_whose_parse_alone_would_outlast_half_the_time_limit_is_refused_before_it(
    framed: bool,
) -> None:
    """Nested lists cost microseconds each to parse and walk, and a parse cannot be stopped once
    it runs: a 31.5 MiB framed body of them held a worker 100 s (timeout_s 30) and 2.6 GB."""
    request = {**chain_request(), "pad": [[[[1]]]] * 400_000}
    document = json.dumps(request).encode()
    limits = Settings(timeout_s=1.0).limits()
    counts = scan.BodyCounts.of(document, 0 if framed else None)
    assert counts.parse_ns() / 1e9 > max(limits.timeout_s / 2, scan.MIN_PARSE_BOUND_S)  # (the subject)
    started = time.process_time()
    reply = dispatch.handle("forward", document, limits, len(document) if framed else None)
    assert reply.status == 413
    assert "timeout_s" in json.loads(reply.content)["detail"]
    assert time.process_time() - started < counts.parse_ns() / 1e9 / 2  # not parsed (CPU, not wall time)
    # the same lists in a body half as deep are within the bound and read as usual (a 422: `pad`
    # is no field), so the rule refuses by the estimate, not by the shape
    small = json.dumps({**chain_request(), "pad": [[1]] * 1_000}).encode()
    assert dispatch.handle("forward", small, limits, len(small) if framed else None).status in (200, 422)
