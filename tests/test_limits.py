"""Limits, checked before any computing: an app with small limits, over httpx.ASGITransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.http.app import create_app
from service.settings import Settings
from tests import seed
from tests.support import asgi

JSON = {"content-type": "application/json"}


def call(settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to a fresh app built with `settings`."""
    return asgi(settings, (method, path, kwargs))[0]


def chain_request(**changes: Any) -> dict[str, Any]:
    case = seed.chain()
    return {"network": case.network, "samples": case.samples, **changes}


def over_limit(response: httpx.Response, name: str) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert name in body["detail"]
    assert f"GRADSERVE_{name.upper()}" in body["detail"]


def test_a_body_over_the_limit_is_413_by_its_content_length() -> None:
    body = json.dumps(chain_request()).encode()
    response = call(
        Settings(max_body_bytes=len(body) - 1), "POST", "/v1/gradients", content=body, headers=JSON
    )
    over_limit(response, "max_body_bytes")
    assert (
        call(
            Settings(max_body_bytes=len(body)), "POST", "/v1/gradients", content=body, headers=JSON
        ).status_code
        == 200
    )


def test_a_chunked_body_over_the_limit_is_413_while_it_streams() -> None:
    body = json.dumps(chain_request()).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16):
            yield body[start : start + 16]

    response = call(Settings(max_body_bytes=100), "POST", "/v1/gradients", content=chunks(), headers=JSON)
    over_limit(response, "max_body_bytes")


@pytest.mark.parametrize(
    ("name", "value", "request_changes"),
    [
        ("max_units", 3, {}),
        ("max_neurons", 3, {}),
        ("max_weight_elements", 2, {}),
        ("max_batch", 1, {"samples": {"inputs": {"x": [1.0, 2.0]}, "targets": {"o": [0.0, 1.0]}}}),
        (
            "max_activation_elements",
            7,
            {"samples": {"inputs": {"x": [1.0, 2.0]}, "targets": {"o": [0.0, 1.0]}}},
        ),
        ("max_work", 20, {}),
        ("max_per_sample_elements", 5, {"per_sample": True}),
    ],
)
def test_work_over_a_limit_is_413_naming_it(name: str, value: int, request_changes: dict[str, Any]) -> None:
    response = call(Settings(**{name: value}), "POST", "/v1/gradients", json=chain_request(**request_changes))
    over_limit(response, name)


@pytest.mark.parametrize(
    ("name", "value", "options"), [("max_epochs", 2, {"epochs": 3}), ("max_steps", 5, {"epochs": 6})]
)
def test_sgd_over_a_limit_is_413(name: str, value: int, options: dict[str, Any]) -> None:
    response = call(
        Settings(**{name: value}), "POST", "/v1/sgd", json=chain_request(learning_rate=0.1, **options)
    )
    over_limit(response, name)


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADSERVE_MAX_BATCH", "7")
    info = call(Settings(), "GET", "/v1/info").json()
    assert info["limits"]["max_batch"] == 7


def test_overflow_in_process_is_a_422_even_where_warnings_are_errors() -> None:
    request = chain_request()
    request["network"]["weights"][0]["value"] = 1e308
    request["samples"]["inputs"]["x"] = [1e10]
    for unit in request["network"]["units"][1:3]:
        unit["activation"] = "identity"
    for path, extra in [
        ("/v1/forward", {}),
        ("/v1/gradients", {}),
        ("/v1/sgd", {"learning_rate": 0.1}),
        ("/v1/explain", {}),
        ("/v1/check", {}),
        ("/v1/render", {"show": "gradients"}),
    ]:
        response = call(Settings(), "POST", path, json={**request, **extra})
        assert response.status_code == 422, f"{path}: {response.text}"
        assert "'j'" in response.json()["detail"]


def test_sgd_that_diverges_is_a_422_naming_a_parameter() -> None:
    response = call(Settings(), "POST", "/v1/sgd", json=chain_request(learning_rate=1e300, epochs=5))
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("non-finite-result")


def test_a_huge_encoded_shape_is_a_422() -> None:
    request = chain_request()
    request["samples"]["inputs"]["x"] = {"dtype": "float64", "shape": [2**40, 2**40, 2**40], "data": ""}
    response = call(Settings(), "POST", "/v1/gradients", json=request)
    assert response.status_code == 422, response.text
    assert "shape [1099511627776, 1099511627776, 1099511627776] is too large" in response.json()["detail"]


def test_every_endpoint_runs_under_the_deadline() -> None:
    wide = {
        "units": [
            {"id": "x", "role": "input", "size": 30},
            {"id": "h", "size": 30},
            {"id": "o", "role": "output"},
        ],
        "weights": [
            {"source": "x", "target": "h", "value": [[0.01] * 30] * 30},
            {"source": "h", "target": "o", "value": [[0.1]] * 30},
        ],
    }
    samples = {"inputs": {"x": [[0.1] * 30] * 200}, "targets": {"o": [0.0] * 200}}
    response = call(
        Settings(timeout_s=0.001), "POST", "/v1/check", json={"network": wide, "samples": samples}
    )
    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith("deadline-exceeded")


def bad_everywhere(n: int) -> list[tuple[str, dict[str, Any]]]:
    """Requests in which each of `n` items is wrong in the same way."""
    chain = chain_request()
    units = [{"id": f"u{k}", "size": "big"} for k in range(n)]
    weights = [{"source": "x", "target": "j", "value": "w"}] * n
    unknown = {"source": ["q"] * n, "target": ["o"] * n, "value": [0.0] * n}
    return [
        ("a batch of strings", {**chain, "samples": {"inputs": {"x": ["a"] * n}, "targets": {"o": [0.0]}}}),
        ("rows of strings", {**chain, "samples": {"inputs": {"x": [["a"]] * n}, "targets": {"o": [0.0]}}}),
        ("bad units", {**chain, "network": {**chain["network"], "units": units}}),
        ("bad weights", {**chain, "network": {**chain["network"], "weights": weights}}),
        ("inputs for no unit", {**chain, "samples": {"inputs": {f"z{k}": "a" for k in range(n)}}}),
        ("columns of unknown ids", {**chain, "network": {**chain["network"], "weights": unknown}}),
    ]


@pytest.mark.parametrize(("what", "request_body"), bad_everywhere(200_000))
def test_an_answer_about_many_bad_items_stays_small(what: str, request_body: dict[str, Any]) -> None:
    """A body wrong in every one of its items once cost ~900 MB of error objects per 5 MB:
    errors are now found first-per-list and at most a hundred are listed."""
    from service.pipeline import dispatch

    body = json.dumps(request_body).encode()
    reply = dispatch.handle("gradients", body, Settings(max_weight_elements=10**7).limits())
    assert reply.status in (400, 413, 422), reply.content[:300]
    assert len(reply.content) < 20_000, (what, len(reply.content))


def test_bodies_held_at_once_are_limited() -> None:
    """Bodies are read before a computation slot is free: what they hold is limited, so many
    clients posting large bodies at once cannot fill the server's memory."""
    body = json.dumps(chain_request()).encode()
    # (no reserve: the httpx transport sends a body's end as a message of its own, so no body
    # here would arrive whole in one piece, and each piece is what this test counts)
    settings = Settings(max_inflight_bytes=len(body) + 50, inflight_reserve_bytes=0, isolation="thread")

    async def go() -> tuple[list[int], httpx.Response, httpx.Response]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gradserve") as http:
                one_by_one = [
                    (await http.post("/v1/gradients", content=body, headers=JSON)).status_code
                    for _ in range(3)
                ]
                go_on = asyncio.Event()

                async def slowly() -> AsyncIterator[bytes]:  # no Content-Length: held as it arrives
                    yield body[:100]
                    await go_on.wait()
                    yield body[100:]

                first = asyncio.ensure_future(http.post("/v1/gradients", content=slowly(), headers=JSON))
                assert app.runtime is not None
                while app.runtime.inflight.held < 100:
                    await asyncio.sleep(0.001)
                second = await http.post(
                    "/v1/gradients", content=body, headers=JSON
                )  # 100 + len(body) held: too much
                go_on.set()
                return one_by_one, await first, second

    one_by_one, first, second = asyncio.run(go())
    (never,) = asgi(
        Settings(max_inflight_bytes=len(body) // 2),
        ("POST", "/v1/gradients", {"content": body, "headers": JSON}),
    )
    assert never.status_code == 413  # larger than all that may be held: waiting would not help
    assert "max_inflight_bytes" in never.json()["detail"]
    assert one_by_one == [200, 200, 200]  # each gave back what it held
    assert first.status_code == 200
    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert "max_inflight_bytes" in second.json()["detail"]
