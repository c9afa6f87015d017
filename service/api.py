"""The HTTP routes: thin. A compute route reads its body (refusing it past the size limit),
waits for a computation slot, and hands the bytes to the executor, which parses, computes and
serialises away from the event loop (in worker processes by default): the loop only moves bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from service import __version__, wire
from service.errors import BodyTooLargeError, NotReadyError, OverloadedError
from service.settings import Limits, Settings
from service.worker import Body, Executor, SharedBody


def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]


async def raw_body(request: Request, settings: SettingsDep) -> AsyncIterator[Body]:
    """The request body, refused with 413 as soon as it passes the size limit.

    A large one with a Content-Length goes straight into shared memory for a worker process.
    """
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    length = int(declared) if declared.isdigit() else None
    if length is not None and length > limit:
        raise BodyTooLargeError(_too_large(length, limit))
    executor: Executor = request.app.state.executor
    if length is not None and length >= SharedBody.MIN_SIZE and executor.shares_memory:
        shared = SharedBody(length)
        try:
            async for chunk in request.stream():
                shared.write(chunk)
            yield shared
        finally:
            shared.release()
        return
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(_too_large(size, limit, at_least=True))
        chunks.append(chunk)
    yield b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (
        f"the body is {'over ' if at_least else ''}{size:,} bytes, over the limit "
        f"max_body_bytes = {limit:,} (set by GRADSERVE_MAX_BODY_BYTES)"
    )


BodyDep = Annotated[Body, Depends(raw_body)]


async def admitted_body(request: Request, body: BodyDep, settings: SettingsDep) -> AsyncIterator[Body]:
    """The body, once one of the `max_concurrent` computation slots is free (a 503 if none is soon)."""
    slots: asyncio.Semaphore = request.app.state.slots
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
        yield body
    finally:
        slots.release()


AdmittedBody = Annotated[Body, Depends(admitted_body)]


async def _compute(request: Request, endpoint: str, body: Body) -> Response:
    """Hand the body to the executor (worker processes by default) and send what it answers."""
    executor: Executor = request.app.state.executor
    reply = await executor.run(endpoint, body, request.app.state.limits)
    return Response(
        reply.content, status_code=reply.status, media_type=reply.media_type, headers=reply.headers
    )


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body the route parses itself (from bytes, off the event loop)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


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

REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    wire.ForwardRequest,
    wire.GradientsRequest,
    wire.SgdRequest,
    wire.ExplainRequest,
    wire.CheckRequest,
    wire.RenderRequest,
    wire.Problem,
)

router = APIRouter(prefix="/v1")


@router.post(
    "/forward",
    responses=COMPUTE_ERRORS,
    response_model=wire.ForwardResponse,
    openapi_extra=request_body(wire.ForwardRequest),
    summary="Every unit's s and z for a batch, and the loss when targets are given",
)
async def forward(request: Request, body: AdmittedBody) -> Response:
    return await _compute(request, "forward", body)


@router.post(
    "/gradients",
    responses=COMPUTE_ERRORS,
    response_model=wire.GradientsResponse,
    openapi_extra=request_body(wire.GradientsRequest),
    summary="The loss's gradient with respect to every weight and bias",
)
async def gradients(request: Request, body: AdmittedBody) -> Response:
    return await _compute(request, "gradients", body)


@router.post(
    "/sgd",
    responses=COMPUTE_ERRORS,
    response_model=wire.SgdResponse,
    openapi_extra=request_body(wire.SgdRequest),
    summary="Train the network with SGD and return it updated",
)
async def sgd(request: Request, body: AdmittedBody) -> Response:
    return await _compute(request, "sgd", body)


@router.post(
    "/explain",
    responses=COMPUTE_ERRORS,
    response_model=wire.ExplainResponse,
    openapi_extra=request_body(wire.ExplainRequest),
    summary="Why each gradient has its value: deltas, their terms, and the paths to the outputs",
)
async def explain(request: Request, body: AdmittedBody) -> Response:
    return await _compute(request, "explain", body)


@router.post(
    "/check",
    responses=COMPUTE_ERRORS,
    response_model=wire.CheckResponse,
    openapi_extra=request_body(wire.CheckRequest),
    summary="Gradients (the service's, or yours) checked by central finite differences",
)
async def check(request: Request, body: AdmittedBody) -> Response:
    return await _compute(request, "check", body)


@router.post(
    "/render",
    response_class=Response,
    responses={
        **COMPUTE_ERRORS,
        200: {
            "description": "The network drawn: SVG, or Graphviz DOT with format=dot",
            "content": {
                "image/svg+xml": {"schema": {"type": "string"}},
                "text/vnd.graphviz": {"schema": {"type": "string"}},
            },
        },
    },
    openapi_extra=request_body(wire.RenderRequest),
    summary="A picture of the network, its edges coloured and sized by weight or gradient",
)
async def render(
    request: Request, body: AdmittedBody, format: Literal["svg", "dot"] = Query("svg")
) -> Response:
    return await _compute(request, "render" if format == "svg" else "render.dot", body)


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
