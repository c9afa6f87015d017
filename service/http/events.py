"""Streamed answers: a computation's progress and then its answer as server-sent events, for a
request whose Accept lists text/event-stream (to an endpoint whose handler reports progress)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from service.convert.progress import PROGRESS, START, Report
from service.http.inflight import SEND_CHUNK, ClientGoneError, Inflight, disconnected, send_piece, send_reply
from service.http.runtime import Runtime
from service.pipeline.dispatch import Reply, problem_reply
from service.problems import ProblemError


def wants_stream(scope: Scope) -> bool:
    """Whether the request's Accept lists text/event-stream (and does not refuse it with q=0)."""
    for item in Headers(scope=scope).get("accept", "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media == "text/event-stream":
            return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
    return False


class _Reports:
    """What a computation reports, as it arrives on the event loop: the stream's START, and
    the latest of its progress events not yet sent (the ones before it are skipped: a
    client reading slowly gets the newest news, not a backlog)."""

    def __init__(self) -> None:
        self.started = False
        self.latest: deque[Any] = deque(maxlen=1)
        self.arrived = asyncio.Event()

    def __call__(self, name: str, data: Any) -> None:
        if name == START:
            self.started = True
        elif name == PROGRESS:
            self.latest.append(data)
        self.arrived.set()

    async def wait(
        self, job: asyncio.Future[Reply], gone: asyncio.Future[None], timeout: float | None
    ) -> bool:
        """Until something is reported, the job ends or the client goes (ClientGoneError);
        False if `timeout` passed first."""
        if self.arrived.is_set() or job.done():
            self.arrived.clear()
            return True
        arrived = asyncio.ensure_future(self.arrived.wait())
        try:
            done, _ = await asyncio.wait(
                (job, gone, arrived), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            arrived.cancel()
        if gone.done():
            raise ClientGoneError
        self.arrived.clear()
        return bool(done)


EVENT_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # (nginx and its kin: pass each event on at once)
]


async def stream(
    receive: Receive,
    send: Send,
    compute: Callable[[Report], Coroutine[Any, Any, Reply]],
    runtime: Runtime,
) -> None:
    """A computation's answer as server-sent events: `progress` as it reports them, then
    `result` (the plain answer's JSON) or `error` (its problem document). `compute(report)` is
    the computation (in a slot, on the executor), `report` the callback its progress goes to.

    The stream starts once the computation says it has begun (its request validated and
    admitted, a slot taken): whatever is refused before that (4xx, a busy 503) is answered
    plainly, with its status, as without the stream. A comment line goes out after each
    GRADSERVE_STREAM_HEARTBEAT_S without an event. A client that hangs up stops the
    computation; one that does not read is dropped after GRADSERVE_SEND_TIMEOUT_S.
    """
    inflight, shutdown = runtime.inflight, runtime.shutdown
    reports = _Reports()
    job = asyncio.ensure_future(compute(reports))
    gone = asyncio.ensure_future(disconnected(receive))
    try:
        await reports.wait(job, gone, None)
        if not reports.started:  # over before it began: a plain answer (a ProblemError raises)
            await send_reply(job.result(), send, inflight)
            return
        await send({"type": "http.response.start", "status": 200, "headers": EVENT_STREAM_HEADERS})
        try:
            await _relay(send, job, gone, reports, runtime.settings.stream_heartbeat_s)
            try:
                reply = job.result()
            except ProblemError as exc:
                reply = problem_reply(exc)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not shutdown.draining or task is None or task.uncancel() > 0:
                raise
            reply = problem_reply(shutdown.problem())
        name = "result" if reply.status == 200 else "error"
        await _send_event(send, name, reply.content, inflight, last=True)
    finally:
        gone.cancel()
        job.cancel()
        await asyncio.wait((job, gone))  # (the slot given back, the worker told, before going on)


async def _relay(
    send: Send, job: asyncio.Future[Reply], gone: asyncio.Future[None], reports: _Reports, heartbeat_s: float
) -> None:
    """Send each progress event as it comes, and a heartbeat after `heartbeat_s` of silence,
    until the job is done."""
    while True:
        if reports.latest:
            data = orjson.dumps(reports.latest.popleft())
            await send({"type": "http.response.body", "body": _event("progress", data), "more_body": True})
        elif job.done():
            return
        elif not await reports.wait(job, gone, heartbeat_s):
            await send({"type": "http.response.body", "body": b": heartbeat\n\n", "more_body": True})


def _event(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data.replace(b"\n", b"\ndata: ") + b"\n\n"


async def _send_event(send: Send, name: str, data: bytes, inflight: Inflight, last: bool) -> None:
    """Send one event whose data may be large: held against the in-flight limit, in pieces."""
    if len(data) <= SEND_CHUNK:
        await send({"type": "http.response.body", "body": _event(name, data), "more_body": not last})
        return
    data = data.replace(b"\n", b"\ndata: ") if b"\n" in data else data
    inflight.hold(len(data))
    try:
        head = b"event: " + name.encode() + b"\ndata: "
        await send({"type": "http.response.body", "body": head, "more_body": True})
        for at in range(0, len(data), SEND_CHUNK):
            piece = {"type": "http.response.body", "body": data[at : at + SEND_CHUNK], "more_body": True}
            await send_piece(send, piece, inflight, len(data))
        await send({"type": "http.response.body", "body": b"\n\n", "more_body": not last})
    finally:
        inflight.give(len(data))
