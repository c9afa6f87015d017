"""Who may call, and what each request leaves behind: API keys, CORS, request ids, one log
line a request, a generic 500."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import client
from service.http.keys import CHECK_EVERY_S, KeyRing
from service.pipeline import handlers
from service.settings import Settings
from tests.bodies import chain_request
from tests.servers import Serve
from tests.support import asgi

# ---------------------------------------------------------------- auth

#: a key as keys must be: 16 characters or more of printable ASCII
KEY = "s3cret-of-the-tests"


@pytest.fixture(scope="module")
def keyed_url(serve_module: Serve) -> str:
    return serve_module({"GRADSERVE_API_KEY": KEY}).url


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
        keyed_url + "/v1/gradients", json=chain_request(), headers={"authorization": f"Bearer {KEY}"}
    )
    assert right.status_code == 200
    assert httpx.get(keyed_url + "/openapi.json", headers={"authorization": f"Bearer {KEY}"}).json()[
        "security"
    ]


def test_the_client_sends_its_key(keyed_url: str) -> None:
    with client.Client(keyed_url, api_key=KEY) as gs:
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
        Settings(cors_origins="http://app.example", api_key=KEY),
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


def test_one_structured_log_line_per_request(serve: Serve) -> None:
    server = serve()
    httpx.post(server.url + "/v1/gradients", json=chain_request(), headers={"x-request-id": "trace-me"})
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

    broken_gradients = dataclasses.replace(handlers.HANDLERS["gradients"], run=broken)
    monkeypatch.setitem(handlers.HANDLERS, "gradients", broken_gradients)
    (response,) = asgi(
        Settings(),
        ("POST", "/v1/gradients", {"json": chain_request(), "headers": {"x-request-id": "r-1"}}),
        raise_errors=False,
    )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-content-type-options"] == "nosniff"  # (Starlette's own 500 too)
    body = response.json()
    assert body["request_id"] == "r-1"
    assert "r-1" in body["detail"]
    assert "secret" not in response.text
    assert "Traceback" not in response.text


# ---------------------------------------------------------------- several keys, rotated


def bearer(key: str) -> dict[str, Any]:
    return {"headers": {"authorization": f"Bearer {key}"}}


def test_every_configured_key_is_accepted_at_once() -> None:
    k0, k1, k2, k3 = (f"key-number-{n}-of-four" for n in range(4))
    settings = Settings(api_key=k0, api_keys=f" {k1}, {k2},")
    answers = asgi(settings, *(("GET", "/v1/info", bearer(key)) for key in [k0, k1, k2, k3, k1 + ","]))
    assert [a.status_code for a in answers] == [200, 200, 200, 401, 401]
    assert k1 not in answers[0].text  # /v1/info names no key


class MountedSecret:
    """A directory laid out as Kubernetes mounts a Secret: `api-keys` -> `..data/api-keys`, and
    `..data` -> a directory of this version's files; an update swaps `..data` at once."""

    def __init__(self, root: Path) -> None:
        self.root, self.version = root, 0
        (root / "api-keys").symlink_to("..data/api-keys")

    @property
    def path(self) -> Path:
        return self.root / "api-keys"

    def write(self, text: str | None) -> None:
        """This version of the file (None: a version without it)."""
        self.version += 1
        files = self.root / f"..{self.version}"
        files.mkdir()
        if text is not None:
            (files / "api-keys").write_text(text)
        (self.root / "..data_tmp").symlink_to(files.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")


def status_with(url: str, key: str) -> int:
    bearer = b"Bearer " + key.encode()  # (UTF-8: a key that is not ASCII goes as its bytes)
    return httpx.get(url + "/v1/info", headers=[(b"authorization", bearer)]).status_code


def until_status(url: str, key: str, status: int, within: float) -> float:
    """Seconds until a request with `key` is answered `status`, asking every 0.1 s."""
    start = time.monotonic()
    while status_with(url, key) != status:
        assert time.monotonic() - start < within, f"{key}: not {status} within {within} s"
        time.sleep(0.1)
    return time.monotonic() - start


OLD, NEW, ENV, NEWER = (f"{name}-key-0123456789" for name in ("old", "new", "env", "newer"))


def test_keys_in_a_file_rotate_without_a_restart(tmp_path: Path, serve: Serve) -> None:
    secret = MountedSecret(tmp_path)
    secret.write(f"# the keys, one a line\n{OLD}\n\n  {NEW}  \n")
    server = serve({"GRADSERVE_API_KEYS_FILE": str(secret.path), "GRADSERVE_API_KEY": ENV})
    assert [status_with(server.url, k) for k in (OLD, NEW, ENV, "nope")] == [
        200,
        200,
        200,
        401,
    ]
    secret.write(f"{NEW}\n")  # old-key withdrawn
    until_status(server.url, OLD, 401, within=60)  # (looked at once a second; a guard)
    assert status_with(server.url, NEW) == status_with(server.url, ENV) == 200
    secret.write(None)  # a version without the file: the keys read before stay
    time.sleep(1.2)
    assert status_with(server.url, NEW) == 200
    assert status_with(server.url, OLD) == 401
    secret.write(f"{NEWER}\n")
    until_status(server.url, NEWER, 200, within=60)
    assert status_with(server.url, NEW) == 401
    server.stop()
    log = server.output()
    assert "the keys read before are still accepted" in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    used = {line["key"] for line in lines if line["status"] == 200 and line["path"] == "/v1/info"}
    assert used == {fingerprint(k) for k in (OLD, NEW, ENV, NEWER)}
    assert all("key" not in line for line in lines if line["status"] == 401)
    for key in (OLD, NEW, ENV, NEWER):
        assert key not in log  # only their fingerprints


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@pytest.mark.parametrize(("text", "said"), [(None, "cannot be read"), ("# none yet\n\n", "holds no key")])
def test_a_key_file_without_keys_stops_the_server_as_it_starts(
    tmp_path: Path, text: str | None, said: str, serve: Serve
) -> None:
    path = tmp_path / "api-keys"
    if text is not None:
        path.write_text(text)
    with pytest.raises(RuntimeError, match=f"GRADSERVE_API_KEYS_FILE\\) {said}"):
        serve({"GRADSERVE_API_KEYS_FILE": str(path)})


def test_the_file_is_looked_at_once_a_second_and_a_bad_version_keeps_the_last_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    a, b, fixed = "key-a-0123456789", "key-b-0123456789", "key-fixed-0123456789"
    path.write_text(a + "\n")
    ring = KeyRing([fixed.encode()], path)
    assert ring.match(a.encode()) == fingerprint(a)
    path.write_text(b + "\n")
    now = time.monotonic()
    ring.refresh(now)  # (the constructor looked less than a second ago)
    assert ring.match(a.encode())
    assert not ring.match(b.encode())
    ring.refresh(now + CHECK_EVERY_S)
    assert ring.match(b.encode())
    assert not ring.match(a.encode())
    path.write_bytes(b"\xff\xfe")  # not UTF-8
    ring.refresh(now + 2 * CHECK_EVERY_S)
    assert ring.match(b.encode()) == fingerprint(b)
    assert ring.match(fixed.encode()) == fingerprint(fixed)


@pytest.mark.parametrize("variable", ["GRADSERVE_API_KEYS", "GRADSERVE_API_KEY"])
@pytest.mark.parametrize("value", ["", " , "])
def test_a_key_setting_set_but_empty_stops_the_server_instead_of_opening_it(
    variable: str, value: str, serve: Serve
) -> None:
    """An empty secret in a deployment must not turn the keys off (every path open, /metrics too)."""
    with pytest.raises(RuntimeError, match=f"{variable} is set but holds no key"):
        serve({variable: value})


# ---------------------------------------------------------------- what a key may be


def test_a_key_file_saved_with_a_byte_order_mark_and_crlf_line_ends_works(
    tmp_path: Path, serve: Serve
) -> None:
    path = tmp_path / "api-keys"
    path.write_bytes(b"\xef\xbb\xbf" + f"{OLD}\r\n# a comment\r\n{NEW}\r\n".encode())
    server = serve({"GRADSERVE_API_KEYS_FILE": str(path)})
    assert [status_with(server.url, k) for k in (OLD, NEW, "\ufeff" + OLD)] == [200, 200, 401]


def refused(serve: Serve, env: dict[str, str]) -> str:
    """Why a server with `env` does not start (one that does fails the test)."""
    try:
        serve(env)
    except RuntimeError as exc:
        return str(exc)
    raise AssertionError("the server started")


BAD_KEYS = {
    "short": ("Zq9", "a key 3 characters long: a key needs at least 16"),
    "non-ASCII": ("clé-secrète-0123456789", "printable ASCII only"),
    "a space": ("two words-0123456789", "printable ASCII only"),
    "a control character": ("tab\there-0123456789", "printable ASCII only"),
}


@pytest.mark.parametrize("bad", BAD_KEYS, ids=list(BAD_KEYS))
def test_a_key_file_with_a_key_that_is_not_one_stops_the_server_naming_its_line(
    tmp_path: Path, bad: str, serve: Serve
) -> None:
    key, said = BAD_KEYS[bad]
    path = tmp_path / "api-keys"
    path.write_text(f"{OLD}\n{key}\n", encoding="utf-8")
    why = refused(serve, {"GRADSERVE_API_KEYS_FILE": str(path)})
    assert "line 2 of the API key file" in why
    assert said in why
    assert key not in why
    assert OLD not in why


@pytest.mark.parametrize("variable", ["GRADSERVE_API_KEY", "GRADSERVE_API_KEYS"])
@pytest.mark.parametrize("bad", BAD_KEYS, ids=list(BAD_KEYS))
def test_a_key_setting_with_a_key_that_is_not_one_stops_the_server(
    variable: str, bad: str, serve: Serve
) -> None:
    key, said = BAD_KEYS[bad]
    why = refused(serve, {variable: key})
    assert variable in why
    assert said in why
    assert key not in why


def test_a_key_file_caught_half_written_keeps_the_last_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that truncates and rewrites the file in place: read between the two, it holds
    the first characters of the new key, which must never be accepted."""
    path = tmp_path / "keys"
    path.write_text(f"{OLD}\n")
    ring = KeyRing([], path)
    now = time.monotonic()
    for torn in (NEW[:1], NEW[:15], f"{OLD}\n{NEW[:3]}"):
        path.write_text(torn)
        now += CHECK_EVERY_S
        with caplog.at_level(logging.ERROR, logger="gradserve"):
            ring.refresh(now)
        assert ring.match(OLD.encode()) == fingerprint(OLD)
        assert ring.match(torn.encode()) is None
        assert ring.match(NEW[:3].encode()) is None
    assert "a key needs at least 16; the keys read before are still accepted" in caplog.text
    assert NEW[:15] not in caplog.text
    path.write_text(f"{NEW}\n")  # the write completed: read at the next look
    ring.refresh(now + CHECK_EVERY_S)
    assert ring.match(NEW.encode()) == fingerprint(NEW)
    assert ring.match(OLD.encode()) is None


def test_a_header_that_is_not_ascii_is_compared_as_its_bytes(keyed_url: str) -> None:
    """The key's bytes against the header's bytes as sent: never decoded and encoded again."""
    for token in ("clé-" + KEY, KEY + "é"):
        answer = httpx.get(
            keyed_url + "/v1/info", headers=[(b"authorization", b"Bearer " + token.encode("utf-8"))]
        )
        assert answer.status_code == 401
    latin1 = httpx.get(keyed_url + "/v1/info", headers=[(b"authorization", b"Bearer \xe9" + KEY.encode())])
    assert latin1.status_code == 401
    assert status_with(keyed_url, KEY) == 200


@pytest.mark.parametrize("variable", ["GRADSERVE_API_KEY", "GRADSERVE_API_KEYS"])
def test_a_key_starting_with_a_hash_is_refused_as_the_key_file_would_take_it_for_a_comment(
    variable: str, serve: Serve
) -> None:
    why = refused(serve, {variable: "#a-key-that-looks-like-a-comment"})
    assert variable in why
    assert "starts with #" in why
