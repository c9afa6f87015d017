"""The HTTP routes: thin.

The compute endpoints are served by `ComputeRoutes`, plain ASGI: read the body (refusing it
past the size limit), then either compute it on the spot (a small request estimated to take
under `GRADSERVE_INLINE_MS`) or wait for a computation slot and hand the bytes to the executor,
which parses, computes and serialises away from the event loop (in worker processes by
default). FastAPI's per-request machinery (dependencies, request objects) cost more than the
chain x -> j -> k -> o takes to compute: a bare validating endpoint answered 6,200 requests/s as a FastAPI
route and 15,500 as plain ASGI. FastAPI still describes them in the OpenAPI document
(`compute_docs`), and serves everything else.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__, engine, wire, worker
from service.errors import (
    BodyTooLargeError,
    InvalidRequestError,
    LimitExceededError,
    MethodNotAllowedError,
    NotReadyError,
    OverloadedError,
    ProblemError,
    RequestTimeoutError,
    ShuttingDownError,
    UnsupportedMediaTypeError,
)
from service.middleware import ConnectionDroppedError
from service.settings import Limits, Settings
from service.worker import Body, Executor, Reply, SharedBody

# ---------------------------------------------------------------- the compute endpoints


@dataclass(frozen=True)
class Compute:
    """A compute endpoint: POST /v1/<name>, answered by `worker.handle(name, ...)`."""

    name: str
    request: type[BaseModel]
    response: type[BaseModel] | None  # None: not JSON (render)
    summary: str


COMPUTE: dict[str, Compute] = {
    f"/v1/{c.name}": c
    for c in (
        Compute(
            "forward",
            wire.ForwardRequest,
            wire.ForwardResponse,
            "Every unit's s and z for a batch, and the loss when targets are given",
        ),
        Compute(
            "gradients",
            wire.GradientsRequest,
            wire.GradientsResponse,
            "The loss's gradient with respect to every weight and bias",
        ),
        Compute("sgd", wire.SgdRequest, wire.SgdResponse, "Train the network with SGD and return it updated"),
        Compute(
            "explain",
            wire.ExplainRequest,
            wire.ExplainResponse,
            "Why each gradient has its value: deltas, their terms, and the paths to the outputs",
        ),
        Compute(
            "check",
            wire.CheckRequest,
            wire.CheckResponse,
            "Gradients (the service's, or yours) checked by central finite differences",
        ),
        Compute(
            "render",
            wire.RenderRequest,
            None,
            "A picture of the network, its edges coloured and sized by weight or gradient",
        ),
    )
}

#: bodies up to this size may be computed inline (their parse, at worst ~1 ms, runs on the loop)
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
        route = COMPUTE.get(scope["path"]) if scope["type"] == "http" else None
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
            _check_media_type(scope)
            shutdown.refuse_new()
            reply = await _answer(scope, receive, _endpoint(route, scope))
        except ProblemError as exc:
            reply = worker.problem_reply(exc)
        except ClientGoneError:
            return
        except asyncio.CancelledError:
            if not shutdown.draining or task.uncancel() > 0:  # not (only) the drain's cancel
                raise
            reply = worker.problem_reply(shutdown.problem())
        finally:
            shutdown.tasks.discard(task)
        await _send_reply(reply, send, state.inflight)


def _check_media_type(scope: Scope) -> None:
    """A compute body is JSON, said so by its Content-Type: a 415 otherwise (a web page can
    post text/plain or a form to a local server without asking it first)."""
    given = Headers(scope=scope).get("content-type")
    media = (given or "").partition(";")[0].strip().lower()
    if media == "application/json":
        return
    if media == "application/octet-stream":
        raise UnsupportedMediaTypeError(
            "binary arrays (application/octet-stream) are not supported yet: send the request as "
            "application/json"
        )
    said = f"is {given[:60]!r}" if given is not None else "is missing"
    raise UnsupportedMediaTypeError(f"the body must be application/json; its Content-Type {said}")


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
            await _piece(
                send, {"type": "http.response.body", "body": content[at:end], "more_body": more}, inflight
            )
    finally:
        inflight.give(len(content))


#: a piece of an answer not taken by its client within this long counts as stalled
STALLED_AFTER_S = 0.1


async def _piece(send: Send, message: dict[str, Any], inflight: Inflight) -> None:
    """Send one piece of an answer; while its client does not read, the answer may be evicted
    (its connection dropped) to make room for computations that wait for in-flight bytes."""
    sending = asyncio.ensure_future(send(message))
    done, _ = await asyncio.wait({sending}, timeout=STALLED_AFTER_S)
    if done:
        return sending.result()
    evicted = inflight.stalled()
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


def _endpoint(route: Compute, scope: Scope) -> str:
    """The worker's endpoint: render's depends on ?format=svg|dot|layout and, for a layout,
    ?orient=horizontal|vertical."""
    if route.name != "render":
        return route.name
    query = parse_qs(scope["query_string"].decode("latin-1"))
    fmt = query.get("format", ["svg"])[-1]
    if fmt not in ("svg", "dot", "layout"):
        raise InvalidRequestError(f"format: Input should be 'svg', 'dot' or 'layout', not {fmt[:40]!r}")
    orient = query.get("orient", ["horizontal"])[-1]
    if orient not in ("horizontal", "vertical"):
        raise InvalidRequestError(f"orient: Input should be 'horizontal' or 'vertical', not {orient[:40]!r}")
    if orient == "vertical" and fmt != "layout":
        raise InvalidRequestError("orient: 'vertical' is for format=layout; SVG and DOT run left to right")
    if fmt == "layout":
        return "render.layout.vertical" if orient == "vertical" else "render.layout"
    return "render.dot" if fmt == "dot" else "render"


async def _answer(scope: Scope, receive: Receive, endpoint: str) -> Reply:
    state = scope["app"].state
    settings: Settings = state.settings
    async with _body(scope, receive, settings, state.executor, state.inflight) as body:
        if isinstance(body, bytes) and len(body) <= INLINE_MAX_BYTES and settings.inline_ms > 0:
            reply = worker.handle_inline(endpoint, body, state.limits, settings.inline_ms)
            if reply is not None:
                return reply
        return await _unless_gone(receive, _computed(state, settings, endpoint, body))


async def _computed(state: Any, settings: Settings, endpoint: str, body: Body) -> Reply:
    async with _slot(state.slots, state.inflight, settings):
        executor: Executor = state.executor
        return await executor.run(endpoint, body, state.limits)


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


class ClientGoneError(Exception):
    """The client disconnected before it was answered: there is no one to answer."""


class Inflight:
    """The bytes of request bodies (counted as they arrive, while they wait and compute) and of
    answers not yet sent, held at once, against a limit: bodies are read before a computation
    slot is free, and answers wait for their clients to read them, so without one, many
    clients posting large bodies, or not reading large answers, could fill the server's memory."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0
        self._freed = asyncio.Event()
        self._stalled: dict[asyncio.Event, None] = {}  # answers whose clients stopped reading, oldest first

    def could_fit(self, size: int) -> None:
        """A 413 for a body larger than all that may be held at once: waiting would not help."""
        if size > self.limit:
            raise LimitExceededError(
                f"the body is {size:,} bytes, over max_inflight_bytes = {self.limit:,}, the bytes of "
                "bodies the server holds at once (set by GRADSERVE_MAX_INFLIGHT_BYTES)"
            )

    def take(self, size: int) -> None:
        """Hold `size` more bytes of a body, or a 503 when that would pass the limit."""
        if self.held + size > self.limit:
            raise OverloadedError(
                f"the server holds {self.held:,} bytes of requests and answers and this body would "
                f"pass max_inflight_bytes = {self.limit:,} (set by GRADSERVE_MAX_INFLIGHT_BYTES); "
                "try again shortly",
                headers={"retry-after": "1"},
            )
        self.held += size

    def hold(self, size: int) -> None:
        """Hold an answer's bytes, even past the limit: they exist already, and sending them is
        how they go (bodies arriving meanwhile find the limit passed, and get a 503)."""
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size
        self._freed.set()

    async def room(self) -> None:
        """Once what is held is within the limit: a computation starts only then, so that answers
        waiting for clients that do not read them do not pile up. While it is not, the answer
        whose client has stalled longest is evicted (its connection dropped): clients that do not
        read pay for the room, not the clients waiting behind them."""
        while self.held > self.limit:
            if self._stalled:
                oldest = next(iter(self._stalled))
                oldest.set()
                self.unstalled(oldest)
            self._freed.clear()
            await self._freed.wait()

    def stalled(self) -> asyncio.Event:
        """An answer whose client stopped reading: the event is set when it is to be evicted."""
        evicted = asyncio.Event()
        self._stalled[evicted] = None
        self._freed.set()  # a computation waiting for room may evict it
        return evicted

    def unstalled(self, evicted: asyncio.Event) -> None:
        self._stalled.pop(evicted, None)


@asynccontextmanager
async def _body(
    scope: Scope, receive: Receive, limits: Limits, executor: Executor, inflight: Inflight
) -> AsyncIterator[Body]:
    """The request body, refused with 413 as soon as it passes the size limit, with 408 if it
    has not all arrived within `body_timeout_s`, and held against the in-flight limit as it
    arrives (503 when that is full) until the request is answered.

    A large one with a Content-Length goes into shared memory for a worker process, each chunk's
    room reserved as it arrives; when /dev/shm has no room left, what has arrived is copied out
    and the rest is read in here.
    """
    limit = limits.max_body_bytes
    declared = Headers(scope=scope).get("content-length", "")
    digits = declared.lstrip("0") or "0"  # (leading zeros are legal, and int() refuses 4,300 digits)
    length = (int(digits) if len(digits) <= 20 else 10**20) if declared.isdigit() else None
    if length is not None:
        if length > limit:
            raise BodyTooLargeError(_too_large(length, limit))
        inflight.could_fit(length)
    held = 0
    shared = None
    if length is not None and length >= SharedBody.MIN_SIZE and executor.segments is not None:
        shared = executor.segments.body(length)
    try:
        chunks, size = [], 0
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                async for chunk in _chunks(receive):
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLargeError(_too_large(size, limit, at_least=True))
                    inflight.could_fit(size)
                    inflight.take(len(chunk))
                    held += len(chunk)
                    if shared is not None and _written(shared, chunk, executor):
                        continue
                    if shared is not None:  # no room in /dev/shm: read the body in here
                        chunks.append(shared.to_memory())
                        shared = None
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the body had not all arrived after {limits.body_timeout_s:g} s "
                f"({size:,} of {f'{length:,}' if length is not None else 'an unknown number of'} "
                "bytes; GRADSERVE_BODY_TIMEOUT_S)",
                headers={"connection": "close"},
            ) from None
        if shared is not None:
            yield shared
        else:
            yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        if shared is not None:
            shared.release()
        inflight.give(held)


def _written(shared: SharedBody, chunk: bytes, executor: Executor) -> bool:
    """Whether `chunk` went into shared memory (after dropping idle segments if need be)."""
    for _ in range(2):
        try:
            shared.write(chunk)
            return True
        except OSError:  # ENOSPC: /dev/shm is full
            if executor.segments is None or not executor.segments.make_room():
                return False
    return False


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (
        f"the body is {'over ' if at_least else ''}{size:,} bytes, over the limit "
        f"max_body_bytes = {limit:,} (set by GRADSERVE_MAX_BODY_BYTES)"
    )


@asynccontextmanager
async def _slot(slots: asyncio.Semaphore, inflight: Inflight, settings: Settings) -> AsyncIterator[None]:
    """One of the `max_concurrent` computation slots, once one is free and the bytes held are
    within max_inflight_bytes (a 503 if not soon). A slot taken is given back whatever ends
    the wait or the computation: a timeout, a hang-up, the shutdown's drain."""
    try:
        async with asyncio.timeout(settings.queue_timeout_s):
            await slots.acquire()
    except TimeoutError:
        raise _overloaded(f"all {settings.max_concurrent} computation slots stayed busy", settings) from None
    try:
        try:
            async with asyncio.timeout(settings.queue_timeout_s):
                await inflight.room()
        except TimeoutError:
            raise _overloaded(
                f"answers not yet read held over max_inflight_bytes = {inflight.limit:,}", settings
            ) from None
        yield
    finally:
        slots.release()


def _overloaded(busy: str, settings: Settings) -> OverloadedError:
    return OverloadedError(
        f"{busy} for {settings.queue_timeout_s:g} s (GRADSERVE_MAX_CONCURRENT, "
        "GRADSERVE_MAX_INFLIGHT_BYTES, GRADSERVE_QUEUE_TIMEOUT_S); try again shortly",
        headers={"retry-after": "1"},
    )


class Shutdown:
    """SIGTERM (or SIGINT) as the compute routes see it.

    uvicorn, told to stop, closes its listeners, waits up to its grace period for the requests
    in flight, then cancels what is left (whose clients got a plain-text 500) and only then
    runs the lifespan's shutdown. So the signal is caught here too: from then on a new compute
    request is a 503 `shutting-down`, and `DRAIN_MARGIN_S` before the grace ends, every
    request still waiting for its body, a slot or its computation is cancelled (which stops
    the computation) and answered 503 `shutting-down` with Retry-After, while uvicorn still
    sends answers.
    """

    #: the drain comes this long before the grace ends, so its answers go out within the grace
    DRAIN_MARGIN_S = 1.0

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.started = False  # a signal came: no new compute requests
        self.draining = False  # the grace is (nearly) over: nothing more is computed
        self.tasks: set[asyncio.Task[Any]] = set()  # the compute requests not yet answered

    def problem(self) -> ShuttingDownError:
        return ShuttingDownError(
            "the server is shutting down; try again (another replica, or this one once restarted)",
            headers={"retry-after": "1", "connection": "close"},
        )

    def refuse_new(self) -> None:
        if self.started:
            raise self.problem()

    def begin(self) -> None:
        """The signal came: refuse new compute requests, and drain at the end of the grace."""
        if not self.started:
            self.started = True
            asyncio.get_running_loop().call_later(max(0.0, self.grace_s - self.DRAIN_MARGIN_S), self.drain)

    def drain(self) -> None:
        """Cancel every compute request not yet answered: each is answered 503."""
        self.started = self.draining = True
        for task in self.tasks:
            task.cancel()

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """While inside, SIGTERM and SIGINT also `begin` the shutdown, before the handlers
        already installed (uvicorn's) run. Only signals that already have a Python handler are
        chained, so a process where SIGTERM would kill is left as it is."""
        loop = asyncio.get_running_loop()
        chained: dict[int, Callable[[int, FrameType | None], Any]] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous = signal.getsignal(sig)
                if callable(previous):
                    chained[sig] = previous
                    signal.signal(sig, functools.partial(_chain, loop, self.begin, previous))
        try:
            yield
        finally:
            for number, handler in chained.items():
                signal.signal(number, handler)


def _chain(
    loop: asyncio.AbstractEventLoop,
    begin: Callable[[], None],
    previous: Callable[[int, FrameType | None], Any],
    sig: int,
    frame: FrameType | None,
) -> None:
    loop.call_soon_threadsafe(begin)
    previous(sig, frame)


# ---------------------------------------------------------------- their OpenAPI description


def _problem(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": ref}}}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("An API key is configured and the request did not carry it"),
    500: _problem("An unexpected error (the body carries a request id to report)"),
}
COMPUTE_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    400: _problem("The body is not JSON"),
    408: _problem("The body did not all arrive within GRADSERVE_BODY_TIMEOUT_S"),
    413: _problem("The body or the work it asks for is over a configured limit"),
    415: _problem("The Content-Type is not application/json"),
    422: _problem("The request, the network or the samples are not valid, or the result overflowed"),
    503: _problem(
        "Every computation slot is busy, or the server is shutting down (both with Retry-After), "
        "or the computation ran out of time"
    ),
}
RENDERED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "The network drawn: SVG, Graphviz DOT with format=dot, or with format=layout the "
            "drawing's geometry as JSON (each unit's box; each edge's route, SVG path, colour, "
            "stroke width and label box), layers top to bottom with orient=vertical"
        ),
        "content": {
            "image/svg+xml": {"schema": {"type": "string"}},
            "text/vnd.graphviz": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/RenderLayout"}},
        },
    },
}

#: models the compute routes parse themselves, so FastAPI does not see them: added to the document
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    *(c.request for c in COMPUTE.values()),
    wire.Problem,
    wire.RenderLayout,
)


# Never called: the signatures of the compute routes (render's has a query parameter), for
# the OpenAPI document. (No docstrings: FastAPI would publish them as descriptions.)
def _served_by_compute_routes() -> None:
    pass


def _render_served_by_compute_routes(
    format: Literal["svg", "dot", "layout"] = Query("svg"),
    orient: Literal["horizontal", "vertical"] = Query("horizontal", description="for format=layout"),
) -> None:
    pass


def compute_docs() -> list[APIRoute]:
    """The compute endpoints as FastAPI routes, to describe them; they are not mounted."""
    ref = {"$ref": "#/components/schemas/{}"}
    return [
        APIRoute(
            path,
            _served_by_compute_routes if c.response else _render_served_by_compute_routes,
            methods=["POST"],
            name=c.name,
            summary=c.summary,
            response_model=c.response,
            response_class=JSONResponse if c.response else Response,
            responses={**COMPUTE_ERRORS, **({} if c.response else RENDERED)},
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": ref["$ref"].format(c.request.__name__)}}
                    },
                }
            },
        )
        for path, c in COMPUTE.items()
    ]


# ---------------------------------------------------------------- everything else: FastAPI


def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]

router = APIRouter(prefix="/v1")


@router.get(
    "/info",
    response_model=wire.InfoResponse,
    responses=AUTH_ERRORS,
    summary="Version, activations, losses and limits",
)
async def info(settings: SettingsDep) -> wire.InfoResponse:
    limits = {name: getattr(settings, name) for name in Limits.model_fields}
    return wire.InfoResponse(
        version=__version__,
        activations=list(engine.ACTIVATIONS),
        losses=list(engine.LOSSES),
        limits=limits,
    )


health = APIRouter()


@health.get("/healthz", response_model=wire.Health, summary="Liveness")
async def healthz() -> wire.Health:
    return wire.Health(status="ok")


@health.get(
    "/readyz",
    response_model=wire.Health,
    responses={503: _problem("The self-check has not passed")},
    summary="Readiness: 200 once the engine has passed its self-check",
)
async def readyz(request: Request) -> wire.Health:
    if request.app.state.shutdown.started:
        raise NotReadyError("the server is shutting down")
    if not request.app.state.ready:
        raise NotReadyError("the engine's start-up self-check has not passed")
    return wire.Health(status="ready")
