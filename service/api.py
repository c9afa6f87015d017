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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__, wire, worker
from service.errors import (
    BodyTooLargeError,
    InvalidRequestError,
    LimitExceededError,
    MethodNotAllowedError,
    NotReadyError,
    OverloadedError,
    ProblemError,
)
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


class ComputeRoutes:
    """ASGI middleware that answers POST /v1/<compute endpoint> and passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = COMPUTE.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowedError(scope["path"], ["POST"])
            reply = await _answer(scope, receive, _endpoint(route, scope))
        except ProblemError as exc:
            reply = worker.problem_reply(exc)
        except ClientGoneError:
            return
        headers = [
            (b"content-type", reply.media_type.encode()),
            (b"content-length", str(len(reply.content)).encode()),
            *((k.encode(), v.encode()) for k, v in reply.headers.items()),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.content})


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
    async with _body(scope, receive, settings.max_body_bytes, state.executor, state.inflight) as body:
        if isinstance(body, bytes) and len(body) <= INLINE_MAX_BYTES and settings.inline_ms > 0:
            reply = worker.handle_inline(endpoint, body, state.limits, settings.inline_ms)
            if reply is not None:
                return reply
        async with _slot(state.slots, settings):
            executor: Executor = state.executor
            return await executor.run(endpoint, body, state.limits)


class ClientGoneError(Exception):
    """The client disconnected before its body arrived: there is no one to answer."""


class Inflight:
    """The bytes of request bodies held at once (arriving, waiting or computing), against a
    limit: bodies are read before a computation slot is free, so without one, many clients
    posting large bodies at once could fill the server's memory."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, size: int) -> None:
        if size > self.limit:  # never, however long the client waits
            raise LimitExceededError(
                f"the body is {size:,} bytes, over max_inflight_bytes = {self.limit:,}, the bytes of "
                "bodies the server holds at once (set by GRADSERVE_MAX_INFLIGHT_BYTES)"
            )
        if self.held + size > self.limit:
            raise OverloadedError(
                f"the server holds {self.held:,} bytes of request bodies and this one would pass "
                f"max_inflight_bytes = {self.limit:,} (set by GRADSERVE_MAX_INFLIGHT_BYTES); "
                "try again shortly",
                headers={"retry-after": "1"},
            )
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size


@asynccontextmanager
async def _body(
    scope: Scope, receive: Receive, limit: int, executor: Executor, inflight: Inflight
) -> AsyncIterator[Body]:
    """The request body, refused with 413 as soon as it passes the size limit, and held
    against the in-flight limit until the request is answered (503 when that is full).

    A large one with a Content-Length goes straight into shared memory for a worker process.
    """
    declared = Headers(scope=scope).get("content-length", "")
    length = int(declared) if declared.isdigit() else None
    if length is not None and length > limit:
        raise BodyTooLargeError(_too_large(length, limit))
    held = 0
    try:
        if length is not None:
            inflight.take(length)
            held = length
        shared = None
        if length is not None and length >= SharedBody.MIN_SIZE and executor.segments is not None:
            shared = executor.segments.body(length)  # None: no room in /dev/shm, so read it in here
        if shared is not None:
            try:
                async for chunk in _chunks(receive):
                    shared.write(chunk)
                yield shared
            finally:
                shared.release()
            return
        chunks, size = [], 0
        async for chunk in _chunks(receive):
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(_too_large(size, limit, at_least=True))
            if size > held:  # a body without a Content-Length is held as it arrives
                inflight.take(size - held)
                held = size
            chunks.append(chunk)
        yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        inflight.give(held)


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
async def _slot(slots: asyncio.Semaphore, settings: Settings) -> AsyncIterator[None]:
    """One of the `max_concurrent` computation slots, once one is free (a 503 if none is soon)."""
    try:
        async with asyncio.timeout(settings.queue_timeout_s):
            await slots.acquire()
    except TimeoutError:
        raise OverloadedError(
            f"all {settings.max_concurrent} computation slots stayed busy for {settings.queue_timeout_s:g} s "
            "(GRADSERVE_MAX_CONCURRENT, GRADSERVE_QUEUE_TIMEOUT_S); try again shortly",
            headers={"retry-after": "1"},
        ) from None
    try:
        yield
    finally:
        slots.release()


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
    413: _problem("The body or the work it asks for is over a configured limit"),
    422: _problem("The request, the network or the samples are not valid, or the result overflowed"),
    503: _problem("Every computation slot is busy (with Retry-After), or the computation ran out of time"),
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
        activations=list(wire.ACTIVATIONS),
        losses=list(wire.LOSSES),
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
    if not request.app.state.ready:
        raise NotReadyError("the engine's start-up self-check has not passed")
    return wire.Health(status="ready")
