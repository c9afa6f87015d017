"""Chaos below the app: a request's head, silent connections, descriptors, and the drain.

Each attack runs against a real server with bystanders (bench.edge.bystanders): /healthz and a
400-byte gradients request on new connections, which must be answered while it lasts (how fast
is measured by `python -m bench.edge`, not asserted here: the machine may be loaded). Nothing
here decides by how long something took; time only bounds how long a failing test waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bench.common import rss_kib
from bench.edge import JSON, SMALL, Bystanders, address, bystanders, command, is_open, worker_pids
from bench.reliability import long_sgd_body
from service.launcher import Server
from tests.servers import Serve

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

QUIET = {"GRADSERVE_LOG_LEVEL": "warning"}
#: how long a failing test waits for what should happen at once (never a pass/fail by time)
PATIENCE_S = 30.0


def until(condition: Callable[[], bool], patience: float = PATIENCE_S) -> bool:
    stop = time.monotonic() + patience
    while not condition():
        if time.monotonic() > stop:
            return False
        time.sleep(0.1)
    return True


def assert_served(seen: Bystanders) -> None:
    """Every bystander was answered: each /healthz a 200, each small gradients request a 200."""
    assert seen.healthz, seen
    assert all(t != float("inf") for t in seen.healthz), seen
    assert set(seen.gradients) == {200}, seen


def answer_of(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and problem of the one answer on `sock`, read to its end."""
    sock.settimeout(PATIENCE_S)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:  # (what the client sent after the answer was not read)
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), data[:300]
    return int(head.split()[1]), json.loads(body)


@pytest.fixture(scope="module")
def server(serve_module: Serve) -> Server:
    return serve_module({**QUIET, "GRADSERVE_MAX_CONCURRENT": "2"})


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"x-a: b\r\n" * 300 + b"\r\n",  # too many lines
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: " + b"b" * 70_000 + b"\r\n\r\n",  # one long line
        b"GET /healthz?" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n",  # a long URL
    ],
    ids=["lines", "one-line", "url"],
)
def test_a_head_over_its_bound_is_a_431(server: Server, head: bytes) -> None:
    with socket.create_connection(address(server)) as sock:
        sock.sendall(head)
        status, problem = answer_of(sock)  # (read to its end: the server closed it)
    assert status == 431
    assert problem["type"] == "urn:gradserve:problem:header-too-large"
    assert "GRADSERVE_MAX_HEADER_BYTES" in problem["detail"]
    limits = httpx.get(server.url + "/v1/info").json()["limits"]
    assert limits["max_header_bytes"] == 65536
    assert limits["max_headers"] == 200


def test_a_header_flood_is_cut_off_and_nothing_of_it_kept(server: Server) -> None:
    idle = rss_kib(server.pid, children=False)
    line = b"x-flood: " + b"a" * 1013 + b"\r\n"
    sent = 0
    with bystanders(server.url) as seen, socket.create_connection(address(server)) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            while sent < 64 * 2**20:  # the flood stops here only if the server took it all
                sock.sendall(line * 256)
                sent += 256 * len(line)
        except OSError:
            pass  # the server closed the connection
    assert sent < 64 * 2**20, "the server took a 64 MiB head"
    assert_served(seen)
    assert (rss_kib(server.pid, children=False) - idle) / 1024 < 32  # (it took, at most, a few reads)


def test_a_trailer_flood_after_a_chunked_body_is_cut_off_as_a_head_is(server: Server) -> None:
    """A chunked body's trailers are header lines after the head: on the first version of the
    head bound they were neither counted nor bounded (72 MiB taken, /healthz 4.9 s behind it)."""
    idle = rss_kib(server.pid, children=False)
    line = b"a" * 1024
    sent = 0
    with bystanders(server.url) as seen, socket.create_connection(address(server)) as sock:
        try:
            sock.sendall(
                b"POST /v1/forward HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nx-pad: "
            )
            while sent < 64 * 2**20:  # the flood stops here only if the server took it all
                sock.sendall(line * 256)
                sent += 256 * len(line)
        except OSError:
            pass  # the server closed the connection
    assert sent < 64 * 2**20, "the server took 64 MiB of trailers"
    assert_served(seen)
    assert (rss_kib(server.pid, children=False) - idle) / 1024 < 32


def test_a_pipelined_request_is_answered_before_the_refusal_of_the_head_after_it(server: Server) -> None:
    """A client that pipelines takes answers in order: the 431 of a head over the bound must
    come after the answer of the request before it (at first it was written at once, taken as
    that request's answer, and that request's computation cancelled)."""
    first = long_sgd_body(width=20, batch=16, epochs=300)
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * (80 * 1024) + b"\r\n\r\n"
    with socket.create_connection(address(server)) as sock:
        sock.sendall(
            b"POST /v1/sgd HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(first)}\r\n\r\n".encode()
            + first
            + head
        )
        sock.settimeout(PATIENCE_S)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]  # (answers abut)
    assert statuses == [200, 431], data[:300]


def test_silent_and_trickling_connections_are_closed_at_the_head_deadline(serve: Serve) -> None:
    server = serve({**QUIET, "GRADSERVE_HEADER_TIMEOUT_S": "2"})
    socks = [socket.create_connection(address(server)) for _ in range(20)]
    trickling = socks[10:]
    try:
        with bystanders(server.url) as seen:
            for sock in trickling[:5]:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            for sock in trickling[5:]:  # the next request on a connection that was answered
                sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")

            def all_closed() -> bool:
                for sock in trickling:  # a byte at a time, each well within the keep-alive timeout
                    with contextlib.suppress(OSError):
                        sock.send(b"x")
                return not any(is_open(sock) for sock in socks)

            assert until(all_closed)
        assert_served(seen)
    finally:
        for sock in socks:
            sock.close()


def test_past_the_open_file_limit_a_dead_worker_is_replaced_and_healthz_answers(serve: Serve) -> None:
    # 38 idle connections kept a killed worker from being replaced; 78 made /healthz fail
    env = {**QUIET, "GRADSERVE_MAX_CONCURRENT": "2", "GRADSERVE_HEADER_TIMEOUT_S": "600"}
    server = serve(env, ["prlimit", "--nofile=64:64", *command(None)])
    socks: list[socket.socket] = []
    try:
        with bystanders(server.url) as seen:
            for _ in range(80):
                with contextlib.suppress(OSError):
                    socks.append(socket.create_connection(address(server), timeout=5))
            workers = worker_pids(server)
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            assert until(lambda: victim not in (now := worker_pids(server)) and len(now) == len(workers))
            assert httpx.get(server.url + "/healthz", timeout=PATIENCE_S).status_code == 200
            assert httpx.post(server.url + "/v1/gradients", content=SMALL, headers=JSON).status_code == 200
        assert_served(seen)
        limits = httpx.get(server.url + "/v1/info").json()["limits"]
        assert 1 <= limits["max_connections"] <= 64 - 32  # what the pool needs is kept
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_past_the_bound_is_refused_when_every_one_is_busy(serve: Serve) -> None:
    server = serve({**QUIET, "GRADSERVE_MAX_CONNECTIONS": "4"})
    busy = []
    try:
        for _ in range(4):  # each with a request in progress: its body is still to come
            sock = socket.create_connection(address(server))
            sock.sendall(
                b"POST /v1/gradients HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: 1000\r\nexpect: 100-continue\r\n\r\n"
            )
            sock.settimeout(PATIENCE_S)
            assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")  # its head is in: the app reads its body
            busy.append(sock)
        with socket.create_connection(address(server)) as sock:
            status, problem = answer_of(sock)
        assert status == 503
        assert problem["type"] == "urn:gradserve:problem:overloaded"
        assert "GRADSERVE_MAX_CONNECTIONS" in problem["detail"]
        busy.pop().close()
        assert until(lambda: httpx.get(server.url + "/healthz").status_code == 200)
    finally:
        for sock in busy:
            sock.close()


def slots_in_use(server: Server) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(v) for v in re.findall(r"^gradserve_slots_in_use(?:\{[^}]*\})? (\S+)$", text, re.M))


@pytest.mark.parametrize("processes", [1, 2])
def test_a_new_request_during_the_drain_is_refused_at_once(processes: int, serve: Serve) -> None:
    env = {**QUIET, "GRADSERVE_SHUTDOWN_GRACE_S": "8", "GRADSERVE_MAX_WORK": str(10**14)}
    env |= {"GRADSERVE_TIMEOUT_S": "600", "GRADSERVE_MAX_CONCURRENT": "1"}
    server = serve(env, command(None, "--workers", str(processes)))
    events: list[tuple[str, Any]] = []

    def long() -> None:
        try:
            r = httpx.post(server.url + "/v1/sgd", content=long_sgd_body(), headers=JSON, timeout=120)
            events.append(("long", (r.status_code, r.json()["type"])))
        except httpx.TransportError as exc:
            events.append(("long", type(exc).__name__))

    thread = threading.Thread(target=long)
    thread.start()
    assert until(lambda: slots_in_use(server) >= 1)  # the long request is computing
    server.proc.send_signal(signal.SIGTERM)

    def refusing() -> bool:
        """Refused (the listening socket shut) or answered 503 (draining); a /readyz that only
        took long on a loaded machine is neither (the signal may not have been handled yet)."""
        try:
            return httpx.get(server.url + "/readyz", timeout=5).status_code != 200
        except httpx.ConnectError:
            return True
        except httpx.TransportError:
            return False

    assert until(refusing)
    try:
        r = httpx.post(server.url + "/v1/gradients", content=SMALL, headers=JSON, timeout=60)
        events.append(("new", (r.status_code, r.json()["type"])))
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        events.append(("new", type(exc).__name__))
    thread.join()
    # the new request was refused (or answered shutting-down) while the long one was still in flight
    assert [name for name, _ in events] == ["new", "long"], events
    assert events[0][1] in {"ConnectError", (503, "urn:gradserve:problem:shutting-down")}, events
    assert events[1][1] == (503, "urn:gradserve:problem:shutting-down"), events
