"""The HTTP routes: thin.

The compute endpoints are served by `ComputeRoutes`, plain ASGI: read the body (refusing it
past the size limit), then either compute it on the spot (a small request estimated to take
under `GRADSERVE_INLINE_MS`) or wait for a computation slot and hand the bytes to the executor,
which parses, computes and serialises away from the event loop (in worker processes by
default). They are plain ASGI because FastAPI's per-request machinery (dependencies, request
objects) costs more than a small network takes to compute (bench/RESULTS.md, "Figures behind the
design"). FastAPI still describes them in the OpenAPI document (`compute_docs`), and serves
everything else.

What a route does with bytes lives beside it: the body's arrival and the answer's sending
against the in-flight limit in `inflight`, a computation slot in `admission`, an answer as
server-sent events in `events`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service import wire
from service.convert.progress import Report
from service.http import events
from service.http.admission import computation_slot
from service.http.error_responses import ProblemResponse
from service.http.inflight import ClientGoneError, disconnected, receive_body, send_reply
from service.http.runtime import Runtime
from service.pipeline import dispatch
from service.pipeline.dispatch import Reply
from service.pipeline.handlers import HANDLERS, ROUTES
from service.problems import (
    MalformedBinaryBodyError,
    MethodNotAllowedError,
    NotReadyError,
    OutOfMemoryError,
    ProblemError,
    UnsupportedMediaTypeError,
)
from service.transport.shared import ReceivedBody
from service.wire import framing

log = logging.getLogger("gradserve")

#: bodies up to this size may be computed inline: their parse runs on the event loop, so it must
#: stay far below the inline budget
INLINE_MAX_BYTES = 64 * 1024


class ComputeRoutes:
    """ASGI middleware that answers POST /v1/<compute endpoint> and passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            runtime = Runtime.of(scope)
        except NotReadyError as exc:  # (called without its lifespan: nothing to compute with)
            await ProblemResponse(exc.body(), status_code=exc.status, headers=exc.headers)(
                scope, receive, send
            )
            return
        shutdown = runtime.shutdown
        task = asyncio.current_task()
        assert task is not None
        shutdown.tasks.add(task)
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowedError(scope["path"], ["POST"])
            framed = _framing(scope)
            shutdown.refuse_new()
            endpoint = _endpoint(route, scope)
            if HANDLERS[route.name].streamed is not None and events.wants_stream(scope):
                await _streamed(runtime, scope, receive, send, endpoint, framed)
                return
            reply = await _answer(runtime, scope, receive, endpoint, framed)
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
        await send_reply(reply, send, runtime.inflight)


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


def _endpoint(route: wire.Endpoint, scope: Scope) -> str:
    """The dispatch's key: the endpoint's handler row reads its variant from the query."""
    return HANDLERS[route.name].key(scope["query_string"])


async def _answer(
    runtime: Runtime, scope: Scope, receive: Receive, endpoint: str, framed: int | None
) -> Reply:
    settings = runtime.settings
    async with receive_body(scope, receive, runtime.limits, runtime.executor, runtime.inflight) as body:
        if isinstance(body, bytes) and len(body) <= INLINE_MAX_BYTES and settings.inline_ms > 0:
            reply = dispatch.handle_inline(endpoint, body, runtime.limits, settings.inline_ms, framed)
            if reply is not None:
                return reply
        return await _unless_gone(receive, _computed(runtime, endpoint, body, framed))


async def _streamed(
    runtime: Runtime, scope: Scope, receive: Receive, send: Send, endpoint: str, framed: int | None
) -> None:
    """The answer as server-sent events (service.http.events), once the body has arrived."""
    async with receive_body(scope, receive, runtime.limits, runtime.executor, runtime.inflight) as body:
        await events.stream(
            receive, send, lambda reports: _computed(runtime, endpoint, body, framed, reports), runtime
        )


async def _computed(
    runtime: Runtime, endpoint: str, body: ReceivedBody, framed: int | None, report: Report | None = None
) -> Reply:
    async with computation_slot(runtime.slots, runtime.inflight, runtime.settings):
        if report is None:
            return await runtime.executor.run(endpoint, body, runtime.limits, framed)
        return await runtime.executor.run(endpoint, body, runtime.limits, framed, report)


async def _unless_gone(receive: Receive, work: Coroutine[Any, Any, Reply]) -> Reply:
    """`work`'s reply; but if the client hangs up first, `work` is cancelled (which stops its
    computation and frees its slot) and ClientGoneError raised.

    The whole body has been read, so the next thing `receive` says is http.disconnect: when
    the client goes, or once the answer has been sent.
    """
    job = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait((job, gone), return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            return job.result()
        raise ClientGoneError
    finally:
        gone.cancel()
        job.cancel()
        await asyncio.wait((job, gone))  # (the slot given back, the worker told, before going on)
