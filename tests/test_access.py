"""Who may call, and what each request leaves behind: API keys, CORS, request ids, one log
line a request, a generic 500."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import client
from service.endpoints import table
from service.launcher import start_server
from service.settings import Settings
from tests.bodies import chain_request
from tests.support import asgi

# ---------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    server = start_server({"GRADSERVE_API_KEY": "s3cret"})
    yield server.url
    server.stop()


def test_with_a_key_everything_but_the_health_checks_and_the_pages_needs_it(keyed_url: str) -> None:
    assert httpx.get(keyed_url + "/healthz").status_code == 200
    assert httpx.get(keyed_url + "/readyz").status_code == 200
    # the playground and the docs load first, so a key can be typed in (tests/test_pages.py)
    assert httpx.get(keyed_url + "/docs").status_code == 200
    for path in ["/v1/info", "/metrics"]:
        response = httpx.get(keyed_url + path)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in response.json()["detail"]
    wrong = httpx.post(
        keyed_url + "/v1/gradients", json=chain_request(), headers={"authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "the API key is not valid"
    right = httpx.post(
        keyed_url + "/v1/gradients", json=chain_request(), headers={"authorization": "Bearer s3cret"}
    )
    assert right.status_code == 200
    assert httpx.get(keyed_url + "/openapi.json", headers={"authorization": "Bearer s3cret"}).json()[
        "security"
    ]


def test_the_client_sends_its_key(keyed_url: str) -> None:
    with client.Client(keyed_url, api_key="s3cret") as gs:
        assert gs.info().version
    with client.Client(keyed_url, api_key="wrong") as gs, pytest.raises(client.AuthenticationError):
        gs.info()


def test_without_a_key_nothing_asks_for_one(http: httpx.Client) -> None:
    assert http.get("/v1/info").status_code == 200
    assert "security" not in http.get("/openapi.json").json()


def test_cors_is_off_unless_configured() -> None:
    preflight = {"origin": "http://app.example", "access-control-request-method": "POST"}
    (closed,) = asgi(Settings(), ("OPTIONS", "/v1/gradients", {"headers": preflight}))
    assert "access-control-allow-origin" not in closed.headers
    (opened,) = asgi(
        Settings(cors_origins="http://app.example", api_key="k"),
        ("OPTIONS", "/v1/gradients", {"headers": preflight}),
    )
    assert opened.status_code == 200  # the preflight needs no key
    assert opened.headers["access-control-allow-origin"] == "http://app.example"


# ---------------------------------------------------------------- request ids and logs


def test_request_ids_are_echoed_or_made(http: httpx.Client) -> None:
    given = http.get("/healthz", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = http.get("/healthz", headers={"x-request-id": "not ok/" * 50})
    assert len(made.headers["x-request-id"]) == 32
    assert made.headers["x-request-id"] != http.get("/healthz").headers["x-request-id"]


def test_one_structured_log_line_per_request() -> None:
    server = start_server()
    try:
        httpx.post(server.url + "/v1/gradients", json=chain_request(), headers={"x-request-id": "trace-me"})
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    (entry,) = [line for line in lines if line["request_id"] == "trace-me"]
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/gradients"
    assert entry["status"] == 200
    assert entry["duration_ms"] > 0


def test_an_unexpected_error_is_a_generic_500_with_a_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("secret internals")

    broken_gradients = dataclasses.replace(table.HANDLERS["gradients"], run=broken)
    monkeypatch.setitem(table.HANDLERS, "gradients", broken_gradients)
    (response,) = asgi(
        Settings(),
        ("POST", "/v1/gradients", {"json": chain_request(), "headers": {"x-request-id": "r-1"}}),
        raise_errors=False,
    )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["request_id"] == "r-1"
    assert "r-1" in body["detail"]
    assert "secret" not in response.text
    assert "Traceback" not in response.text
