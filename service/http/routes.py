"""The HTTP routes: thin.

The compute endpoints are served by `ComputeRoutes`, plain ASGI: read the body (refusing it
past the size limit), then either compute it on the spot (a small request estimated to take
under `GRADSERVE_INLINE_MS`) or wait for a computation slot and hand the bytes to the executor,
which parses, computes and serialises away from the event loop (in worker processes by
default). They are plain ASGI because FastAPI's per-request machinery (dependencies, request
objects) costs more than a small network takes to compute (bench/RESULTS.md, "Figures behind the
design"). FastAPI still describes them in the OpenAPI document (`compute_docs`), and serves
everything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service import wire
from service.convert.progress import PROGRESS, START, Report
from service.errors import (
    MalformedBinaryBodyError,
    MethodNotAllowedError,
    OutOfMemoryError,
    ProblemError,
    UnsupportedMediaTypeError,
)
from service.http.admission import ClientGoneError, Inflight, computation_slot, receive_body
from service.http.middleware import ConnectionDroppedError
from service.http.shutdown import Shutdown
from service.pipeline import dispatch
from service.pipeline.dispatch import Reply
from service.pipeline.handlers import HANDLERS, ROUTES
from service.settings import Settings
from service.transport.executors import Executor
from service.transport.shared import ReceivedBody
from service.wire import framing

log = logging.getLogger("gradserve")

#: bodies up to this size may be computed inline: their parse runs on the event loop, so it must
#: stay far below the inline budget
INLINE_MAX_BYTES = 64 * 1024

#: answers go out in pieces of this size, so that uvicorn's flow control holds the next piece
#: back until the client has read the last: a client that does not read holds one piece in the
#: transport, never a copy of the whole answer
SEND_CHUNK = 256 * 1024


class ComputeRoutes:
    """ASGI middleware that answers POST /v1/<compute endpoint> and passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        shutdown: Shutdown = state.shutdown
        task = asyncio.current_task()
        assert task is not None
        shutdown.tasks.add(task)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowedError(scope["path"], ["POST"])
            framed = _framing(scope)
            shutdown.refuse_new()
            endpoint = _endpoint(route, scope)
            if HANDLERS[route.name].streamed is not None and _wants_stream(scope):
                await _stream(scope, receive, send, endpoint, framed)
                return
            reply = await _answer(scope, receive, endpoint, framed)
        except ProblemError as exc:
            reply = dispatch.problem_reply(exc)
        except MemoryError:  # in this process: computing inline, or holding the body
            log.warning("the server process ran out of memory for a request to %s", scope["path"])
            reply = dispatch.problem_reply(OutOfMemoryError())
        except ClientGoneError:
            return
        except asyncio.CancelledError:
            if not shutdown.draining or task.uncancel() > 0:  # not (only) the drain's cancel
                raise
            reply = dispatch.problem_reply(shutdown.problem())
        finally:
            shutdown.tasks.discard(task)
        await _send_reply(reply, send, state.inflight)


def _framing(scope: Scope) -> int | None:
    """A compute body is JSON, or JSON and binary sections (the binary framing), said so by its
    Content-Type: a 415 otherwise (a web page can post text/plain or a form to a local server
    without asking it first). For a binary body, the length of its JSON document (a 400 when
    its header does not say it)."""
    headers = Headers(scope=scope)
    given = headers.get("content-type")
    media = (given or "").partition(";")[0].strip().lower()
    if media == "application/json":
        return None
    if media == framing.MEDIA_TYPE:
        try:
            return framing.header_length(headers.get(framing.HEADER))
        except framing.FramingError as exc:
            raise MalformedBinaryBodyError(str(exc)) from None
    said = f"is {given[:60]!r}" if given is not None else "is missing"
    raise UnsupportedMediaTypeError(
        f"the body must be application/json, or {framing.MEDIA_TYPE} in the binary framing; "
        f"its Content-Type {said}"
    )


async def _send_reply(reply: Reply, send: Send, inflight: Inflight) -> None:
    """Send an answer, its bytes held against the in-flight limit until they have gone."""
    content = reply.content
    headers = [
        (b"content-type", reply.media_type.encode()),
        (b"content-length", str(len(content)).encode()),
        *((k.encode(), v.encode()) for k, v in reply.headers.items()),
    ]
    inflight.hold(len(content))
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if len(content) <= SEND_CHUNK:
            await send({"type": "http.response.body", "body": content})
            return
        for at in range(0, len(content), SEND_CHUNK):
            end = at + SEND_CHUNK
            more = end < len(content)
            piece = {"type": "http.response.body", "body": content[at:end], "more_body": more}
            await _piece(send, piece, inflight, len(content))
    finally:
        inflight.give(len(content))


#: a piece of an answer not taken by its client within this long counts as stalled
STALLED_AFTER_S = 0.1


async def _piece(send: Send, message: dict[str, Any], inflight: Inflight, size: int) -> None:
    """Send one piece of an answer of `size` bytes; while its client does not read, the answer
    may be evicted (its connection dropped) to make room for bodies and computations."""
    sending = asyncio.ensure_future(send(message))
    done, _ = await asyncio.wait({sending}, timeout=STALLED_AFTER_S)
    if done:
        return sending.result()
    evicted = inflight.stalled(size)
    waiting = asyncio.ensure_future(evicted.wait())
    try:
        await asyncio.wait({sending, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if sending.done():
            return sending.result()
        raise ConnectionDroppedError  # (the connection is aborted; its bytes are let go)
    finally:
        inflight.unstalled(evicted)
        waiting.cancel()
        sending.cancel()


def _endpoint(route: wire.Endpoint, scope: Scope) -> str:
    """The dispatch's key: the endpoint's handler row reads its variant from the query."""
    return HANDLERS[route.name].key(scope["query_string"])


async def _answer(scope: Scope, receive: Receive, endpoint: str, framed: int | None) -> Reply:
    state = scope["app"].state
    settings: Settings = state.settings
    async with receive_body(scope, receive, settings, state.executor, state.inflight) as body:
        if isinstance(body, bytes) and len(body) <= INLINE_MAX_BYTES and settings.inline_ms > 0:
            reply = dispatch.handle_inline(endpoint, body, state.limits, settings.inline_ms, framed)
            if reply is not None:
                return reply
        return await _unless_gone(receive, _computed(state, settings, endpoint, body, framed))


async def _computed(
    state: Any,
    settings: Settings,
    endpoint: str,
    body: ReceivedBody,
    framed: int | None,
    report: Report | None = None,
) -> Reply:
    async with computation_slot(state.slots, state.inflight, settings):
        executor: Executor = state.executor
        if report is None:
            return await executor.run(endpoint, body, state.limits, framed)
        return await executor.run(endpoint, body, state.limits, framed, report)


async def _unless_gone(receive: Receive, work: Coroutine[Any, Any, Reply]) -> Reply:
    """`work`'s reply; but if the client hangs up first, `work` is cancelled (which stops its
    computation and frees its slot) and ClientGoneError raised.

    The whole body has been read, so the next thing `receive` says is http.disconnect: when
    the client goes, or once the answer has been sent.
    """
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((job, gone), return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            return job.result()
        raise ClientGoneError
    finally:
        gone.cancel()
        job.cancel()
        await asyncio.wait((job, gone))  # (the slot given back, the worker told, before going on)


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------- streamed answers


def _wants_stream(scope: Scope) -> bool:
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


async def _stream(scope: Scope, receive: Receive, send: Send, endpoint: str, framed: int | None) -> None:
    """A computation's answer as server-sent events: `progress` as it reports them, then
    `result` (the plain answer's JSON) or `error` (its problem document).

    The stream starts once the computation says it has begun (its request validated and
    admitted, a slot taken): whatever is refused before that (4xx, a busy 503) is answered
    plainly, with its status, as without the stream. A comment line goes out after each
    GRADSERVE_STREAM_HEARTBEAT_S without an event. A client that hangs up stops the
    computation; one that does not read is dropped after GRADSERVE_SEND_TIMEOUT_S.
    """
    state = scope["app"].state
    settings: Settings = state.settings
    reports = _Reports()
    async with receive_body(scope, receive, settings, state.executor, state.inflight) as body:
        job = asyncio.ensure_future(_computed(state, settings, endpoint, body, framed, reports))
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            await reports.wait(job, gone, None)
            if not reports.started:  # over before it began: a plain answer (a ProblemError raises)
                await _send_reply(job.result(), send, state.inflight)
                return
            await send({"type": "http.response.start", "status": 200, "headers": EVENT_STREAM_HEADERS})
            try:
                await _relay(send, job, gone, reports, settings.stream_heartbeat_s)
                try:
                    reply = job.result()
                except ProblemError as exc:
                    reply = dispatch.problem_reply(exc)
            except asyncio.CancelledError:
                shutdown: Shutdown = state.shutdown
                task = asyncio.current_task()
                if not shutdown.draining or task is None or task.uncancel() > 0:
                    raise
                reply = dispatch.problem_reply(shutdown.problem())
            name = "result" if reply.status == 200 else "error"
            await _send_event(send, name, reply.content, state.inflight, last=True)
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
            await _piece(send, piece, inflight, len(data))
        await send({"type": "http.response.body", "body": b"\n\n", "more_body": not last})
    finally:
        inflight.give(len(data))
