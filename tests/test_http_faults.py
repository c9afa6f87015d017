"""The HTTP layer under hostile clients: idle and slow uploads, clients that never read their
answers, clients that hang up, SIGTERM with long requests in flight, and bodies that do not say
they are JSON. Each against a real server on a loopback port, raw sockets for the clients that
misbehave, every test bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.reliability import Termination, huge_answer_body, long_sgd_body, sigterm_under_load
from service.http import admission
from service.http.app import create_app
from service.http.inflight import Inflight
from service.http.middleware import ABORT, WRITE_PAUSED, SendTimeout
from service.launcher import Server
from service.settings import Settings
from service.transport.shared import SegmentPool
from tests import seed
from tests.servers import Serve
from tests.support import dropped
from tests.test_metrics import scrape, until

JSON = {"content-type": "application/json"}


def serving(serve: Serve, **env: str) -> Server:
    """A quiet server with these settings (`body_timeout_s="3"`: GRADSERVE_BODY_TIMEOUT_S)."""
    return serve({"GRADSERVE_LOG_LEVEL": "warning", **{f"GRADSERVE_{k.upper()}": v for k, v in env.items()}})


def chain_body() -> bytes:
    case = seed.chain()
    return json.dumps({"network": case.network, "samples": case.samples}).encode()


def connect(server: Server, rcvbuf: int | None = None) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(20)
    sock.connect((host, int(port)))
    return sock


def head(path: str, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer from a raw socket: its status, headers and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += got
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        got = sock.recv(65536)
        if not got:
            break
        body += got
    return int(lines[0].split()[1]), headers, body


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    kind: str = response.json()["type"]
    return kind.removeprefix("urn:gradserve:problem:")


def shm_reserved(pid: int) -> int:
    """Bytes of /dev/shm the process has reserved in the segments it holds open."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("/dev/shm/psm_"):
                total += os.stat(fd).st_blocks * 512
        except OSError:  # closed meanwhile
            pass
    return total


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# ---------------------------------------------------------------- Content-Type


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
def test_a_body_not_said_to_be_json_is_a_415(http: httpx.Client, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    response = http.post("/v1/gradients", content=chain_body(), headers=headers)
    assert response.status_code == 415
    assert problem_type(response) == "unsupported-media-type"
    assert "application/json" in response.json()["detail"]


def test_a_binary_body_without_its_header_is_a_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/forward", content=b"\0" * 8, headers={"content-type": "application/octet-stream"}
    )
    assert response.status_code == 400
    assert problem_type(response) == "malformed-binary-body"
    assert "Inference-Header-Content-Length" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_with_or_without_parameters_is_computed(http: httpx.Client, content_type: str) -> None:
    response = http.post("/v1/gradients", content=chain_body(), headers={"content-type": content_type})
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- idle and slow uploads


@pytest.mark.chaos
def test_idle_uploads_hold_only_what_arrived_and_time_out_with_a_408(serve: Serve) -> None:
    """Four connections that declare 32 MiB bodies and send one byte: other requests are still
    computed, /dev/shm is not reserved for the bytes that never came, and each idle upload is
    answered 408 once its time is up."""
    declared = 32 * 1024 * 1024
    server = serving(serve, body_timeout_s="3", inline_ms="0")
    with contextlib.ExitStack() as sockets:
        idle = []
        for _ in range(4):
            sock = sockets.enter_context(connect(server))
            sock.sendall(head("/v1/gradients", declared) + b"{")
            idle.append(sock)
        started = time.monotonic()
        time.sleep(0.5)  # (the server has read their headers and byte)
        with httpx.Client(base_url=server.url, timeout=20) as http:
            for _ in range(3):
                response = http.post("/v1/gradients", content=chain_body(), headers=JSON)
                assert response.status_code == 200, response.text
        assert shm_reserved(server.pid) < 1024 * 1024
        for sock in idle:
            status, headers, body = read_answer(sock)
            assert status == 408
            assert headers["content-type"] == "application/problem+json"
            assert json.loads(body)["type"] == "urn:gradserve:problem:request-timeout"
        assert time.monotonic() - started < 60  # answered when their time was up (a generous bound)
        with httpx.Client(base_url=server.url, timeout=20) as http:  # their bytes were let go
            big = {"network": seed.chain().network, "samples": seed.chain().samples, "pad": "x" * (2 << 20)}
            response = http.post("/v1/gradients", json=big)
            assert response.status_code in (200, 422), response.text


@pytest.mark.chaos
def test_a_body_trickling_in_is_cut_off_at_the_body_timeout(serve: Serve) -> None:
    body = chain_body() + b" " * 2000  # (JSON allows the spaces): some 200 s at a byte a 0.1 s
    server = serving(serve, body_timeout_s="2")
    with connect(server) as sock:
        sock.sendall(head("/v1/gradients", len(body)))
        sent = 0
        # A byte every 0.1 s, each well within the 2 s, until the server answers: cut off while
        # it still trickles, whenever the 2 s are up on this machine, never reset by a byte.
        while sent < len(body) and not select.select([sock], [], [], 0.1)[0]:
            sock.sendall(body[sent : sent + 1])
            sent += 1
        status, headers, _ = read_answer(sock)
        assert status == 408
        assert headers["connection"] == "close"
        assert sent < len(body)


# ---------------------------------------------------------------- clients that never read


@pytest.mark.chaos
def test_clients_that_never_read_do_not_grow_the_server_and_are_dropped(serve: Serve) -> None:
    """Thirty clients post a 170-byte request whose answer is ~8 MB and never read it."""
    body = huge_answer_body(999_000)
    budget = 24 * 1024 * 1024
    server = serving(serve, max_inflight_bytes=str(budget), send_timeout_s="2")
    with contextlib.ExitStack() as sockets:
        with httpx.Client(base_url=server.url, timeout=20) as http:  # (the server warmed up)
            assert http.post("/v1/forward", content=body, headers=JSON).status_code == 200
        before = rss(server.pid)
        clients = []
        for _ in range(30):
            sock = sockets.enter_context(connect(server, rcvbuf=4096))
            sock.sendall(head("/v1/forward", len(body)) + body)
            clients.append(sock)
        peak, guard = 0, time.monotonic() + 120  # until the server has dropped each of them
        while not all(dropped(sock) for sock in clients):  # (however slowly it answered them)
            assert time.monotonic() < guard, "clients that never read kept for 120 s"
            peak = max(peak, rss(server.pid))
            time.sleep(0.05)
        peak = max(peak, rss(server.pid))
        print(f"server growth under 30 clients that never read: {(peak - before) / 2**20:.0f} MiB")
        assert peak - before < budget + 64 * 1024 * 1024, (peak - before) / 2**20
        for sock in clients:  # each was dropped: what the kernel held, then the end (no hang)
            sock.settimeout(5)
            got = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(1 << 20):
                    got += len(chunk)
            assert got < 7_000_000  # not its whole answer
        with httpx.Client(base_url=server.url, timeout=20) as http:  # and their bytes let go
            response = http.post("/v1/forward", content=body, headers=JSON)
            assert response.status_code == 200, response.text


# ---------------------------------------------------------------- clients that hang up


@pytest.mark.chaos
def test_a_client_that_hangs_up_frees_its_slot(serve: Serve) -> None:
    """Two clients post long SGD requests and hang up: both are stopped and their slots given
    back (what the server decided, seen in /metrics), and a third is computed."""
    server = serving(serve, max_concurrent="2", inline_ms="0", max_work=str(10**13))
    with contextlib.ExitStack() as sockets:
        long = long_sgd_body(epochs=2000)
        gone = []
        for taken in (1, 2):
            sock = sockets.enter_context(connect(server))
            sock.sendall(head("/v1/sgd", len(long)) + long)
            gone.append(sock)
            until(lambda: scrape(server.url).value("gradserve_slots_in_use") == taken)  # noqa: B023
        for sock in gone:
            sock.close()
        until(
            lambda: (
                scrape(server.url).value("gradserve_computations_stopped_total", reason="client-gone") == 2
            )
        )
        until(lambda: scrape(server.url).value("gradserve_slots_in_use") == 0)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            response = http.post("/v1/sgd", content=long_sgd_body(epochs=1), headers=JSON)
        assert response.status_code == 200, response.text


# ---------------------------------------------------------------- SIGTERM


GRACE_S = 3


@pytest.fixture(scope="module")
def sigterm_run() -> Termination:
    """Two long SGD requests in flight, then SIGTERM: what they got, when, and when the
    server exited."""
    return sigterm_under_load(GRACE_S)


@pytest.mark.chaos
def test_sigterm_answers_what_is_still_running_503_within_the_grace(sigterm_run: Termination) -> None:
    assert len(sigterm_run.answers) == 2, sigterm_run.log[-3000:]
    for at, response in sigterm_run.answers:
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 503, response.text
        assert problem_type(response) == "shutting-down"
        assert response.headers["retry-after"] == "1"
        assert at - sigterm_run.signalled < GRACE_S + 0.5


@pytest.mark.chaos
def test_sigterm_exits_within_the_grace_and_a_second_or_two(sigterm_run: Termination) -> None:
    assert sigterm_run.seconds < GRACE_S + 2


class Stalling:
    """An executor whose computations never end until cancelled, as the supervised pool's are
    stopped when cancelled: what the HTTP layer does on its side, without worker processes."""

    segments = None

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def run(self, endpoint: str, body: Any, limits: Any, framed: int | None = None) -> Any:
        self.started += 1
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("never")

    async def start(self) -> bool:
        return True

    def stop(self) -> None:
        pass


def test_a_hang_up_cancels_the_computation_and_frees_its_slot() -> None:
    """The client hangs up while its request computes: the computation is cancelled at once,
    its slot and its bytes are given back, and nothing is sent."""
    body = chain_body()
    settings = Settings(max_concurrent=1, inline_ms=0, isolation="thread")

    async def go() -> tuple[Stalling, float, list[Any], int, int]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            executor = Stalling()
            assert app.runtime is not None
            runtime = app.runtime = dataclasses.replace(app.runtime, executor=executor)
            sent: list[Any] = []
            hung_up = asyncio.Event()
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await hung_up.wait()
                return {"type": "http.disconnect"}

            async def send(message: Any) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/v1/gradients",
                "raw_path": b"/v1/gradients",
                "query_string": b"",
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 2),
            }
            request = asyncio.ensure_future(app(scope, receive, send))
            while executor.started == 0:
                await asyncio.sleep(0.01)
            hung_up.set()
            gone = time.monotonic()
            await asyncio.wait_for(request, 5)
            return executor, time.monotonic() - gone, sent, runtime.slots._value, runtime.inflight.held

    executor, took, sent, free_slots, held = asyncio.run(go())
    assert executor.cancelled == 1
    assert took < 1
    assert sent == []
    assert free_slots == 1
    assert held == 0


# ---------------------------------------------------------------- admission's own rules


def test_an_app_called_before_it_has_started_answers_503_not_ready() -> None:
    """Called without its lifespan (uvicorn never does; an embedding program might), the app
    has no runtime: its compute routes and its readiness say so with a 503 `not-ready` problem,
    never a 500."""

    async def go() -> list[httpx.Response]:
        app = create_app(Settings(isolation="thread"))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gradserve") as http:
            return [
                await http.post("/v1/gradients", content=chain_body(), headers=JSON),
                await http.get("/readyz"),
            ]

    for response in asyncio.run(go()):
        assert response.status_code == 503, response.text
        assert problem_type(response).endswith("not-ready")
        assert response.headers["content-type"] == "application/problem+json"


def test_a_request_given_up_while_it_waits_for_room_gives_its_slot_back() -> None:
    """Cancelled (a hang-up, the drain) after taking a slot, while answers held the bytes."""
    settings = Settings(queue_timeout_s=5, max_concurrent=1)

    async def go() -> bool:
        slots, inflight = asyncio.Semaphore(1), Inflight(100)
        inflight.hold(500)  # answers not yet read, over the limit

        async def compute() -> None:
            async with admission.computation_slot(slots, inflight, settings):
                pass

        waiting = asyncio.ensure_future(compute())
        await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return not slots.locked()

    assert asyncio.run(go())


def test_an_answer_that_stalls_after_a_computation_began_waiting_is_evicted() -> None:
    async def go() -> tuple[bool, bool]:
        inflight = Inflight(100)
        inflight.hold(500)
        room = asyncio.ensure_future(inflight.room())
        await asyncio.sleep(0.05)
        evicted = inflight.stalled(500)  # the answer's client stops reading only now
        await asyncio.sleep(0.05)
        was_evicted = evicted.is_set()
        inflight.give(500)  # (the evicted answer's bytes let go)
        await asyncio.wait_for(room, 1)
        return was_evicted, room.done()

    assert asyncio.run(go()) == (True, True)


def test_segments_given_back_after_the_shutdown_are_unlinked() -> None:
    segments = SegmentPool(keep_bytes=1 << 20)
    body = segments.body(4096)
    assert body is not None
    segments.close()
    body.release()  # a request that ended after the executor stopped
    assert segments.idle == []
    assert not Path(f"/dev/shm/{body.shm.name}").exists()


@pytest.mark.parametrize("kind", ["http.response.start", "http.response.body"])
def test_a_send_held_by_a_client_that_does_not_read_is_dropped_in_time(kind: str) -> None:
    """While the connection's writing is paused (uvicorn's flow control), every message waits for
    the client: an answer's start as much as its pieces (a pipelining client that stopped
    reading after the first answer held the second's start, and its bytes in flight, for good);
    the send timeout drops the connection. While it is not paused, nothing is timed."""
    aborted: list[bool] = []
    paused = [True]

    async def forever(message: dict[str, Any]) -> None:
        await asyncio.Event().wait()  # a client that never reads

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if kind == "http.response.body":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(
            {"type": kind, "status": 200, "headers": []}
            if kind == "http.response.start"
            else {"type": kind, "body": b"x"}
        )

    async def abort() -> None:
        aborted.append(True)

    async def sent_through(downstream: Any) -> None:
        scope = {"type": "http", "extensions": {ABORT: abort, WRITE_PAUSED: lambda: paused[0]}}
        await SendTimeout(app, timeout_s=0.05)(scope, None, downstream)  # type: ignore[arg-type]

    async def drive() -> None:
        async def first_free(message: dict[str, Any]) -> None:  # (the start goes when a body is tested)
            if message["type"] == "http.response.body":
                await forever(message)

        await asyncio.wait_for(
            sent_through(forever if kind == "http.response.start" else first_free), timeout=60
        )

    asyncio.run(drive())
    assert aborted == [True]
    paused[0], aborted[:] = False, []
    done: list[str] = []

    async def quick(message: dict[str, Any]) -> None:
        done.append(message["type"])

    asyncio.run(sent_through(quick))
    assert not aborted
    assert done[-1] == kind
