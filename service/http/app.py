"""The app factory: settings, middleware, routes, the one error format, the OpenAPI document."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from service import __version__, pages, wire
from service.http import error_responses, memory
from service.http import metrics as prometheus
from service.http.info import health, router
from service.http.keys import KeyRing
from service.http.middleware import Abortable, ApiKeyAuth, RequestContext, SecurityHeaders, SendTimeout
from service.http.openapi import REQUEST_MODELS, compute_docs
from service.http.routes import ComputeRoutes
from service.http.runtime import Runtime
from service.pipeline.handlers import ROUTES
from service.problems import ProblemError
from service.settings import Settings, get_settings
from service.transport.executors import make_executor

log = logging.getLogger("gradserve")


@asynccontextmanager
async def _lifespan(app: GradServe) -> AsyncIterator[None]:
    """The app's Runtime, built once its executor has started, for as long as it runs."""
    settings = app.settings
    computes = settings.isolation == "thread"  # (then it keeps freed memory, as workers do)
    memory.tune_server(computes)
    executor = make_executor(settings)
    ready = await executor.start()
    if not ready:
        log.error("the engine's self-check failed: /readyz answers 503")
    runtime = app.runtime = Runtime.build(settings, executor, ready)
    metrics = app.metrics
    sampling = asyncio.ensure_future(metrics.sampling(runtime)) if metrics is not None else None
    trimming = asyncio.ensure_future(memory.trimming()) if not computes else None
    try:
        with runtime.shutdown.on_signals():
            yield
    finally:
        runtime.shutdown.drain()  # whatever uvicorn has not cancelled yet (and /readyz says so)
        executor.stop()
        if trimming is not None:
            trimming.cancel()
            await asyncio.wait([trimming])
        if sampling is not None and metrics is not None:
            sampling.cancel()
            await asyncio.wait([sampling])
            metrics.exiting()


class GradServe(FastAPI):
    """FastAPI, its whole middleware stack inside `Abortable` and `SecurityHeaders` (so that
    even Starlette's own 500 gets the headers); what it holds is typed: its settings, its
    metrics (made with its routes), and once started its `runtime` (service.http.runtime)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics: prometheus.Metrics | None = None
        self.runtime: Runtime | None = None
        super().__init__(
            title="gradserve",
            version=__version__,
            summary="Backpropagation as a service: forward values, exact gradients and SGD "
            "for any DAG of units. Every error is problem+json.",
            description=wire.BODY_RULES,
            lifespan=_lifespan,
            separate_input_output_schemas=False,
            docs_url=None,  # served by service.pages with every asset from the service itself
            redoc_url=None,
        )

    def build_middleware_stack(self) -> ASGIApp:
        return Abortable(SecurityHeaders(super().build_middleware_stack(), self.settings.frame_ancestors))


def create_app(settings: Settings | None = None) -> GradServe:
    """A gradserve app; nothing happens at import time, and nothing is started before its lifespan."""
    settings = settings or get_settings()
    keys = KeyRing.from_settings(settings)  # (a key file that cannot be read stops it here)
    app = GradServe(settings)
    app.include_router(health)
    app.include_router(router)
    pages.mount(app)
    if settings.metrics:
        app.metrics = prometheus.mount(app, [health, router], pages.OPEN_PREFIXES, ROUTES)
    app.add_exception_handler(ProblemError, error_responses.on_problem)
    app.add_exception_handler(HTTPException, error_responses.on_http)
    app.add_exception_handler(RequestValidationError, error_responses.on_validation)
    app.add_exception_handler(Exception, error_responses.on_unexpected)
    # the last added runs first: the send timeout around request ids and logs around the
    # metrics around CORS around the API key around the compute routes
    app.add_middleware(ComputeRoutes)
    if keys is not None:
        app.add_middleware(
            ApiKeyAuth,
            keys=keys,
            open_paths=pages.OPEN_PATHS,
            open_prefixes=pages.OPEN_PREFIXES,
        )
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
        )
    if app.metrics is not None:
        app.add_middleware(prometheus.RecordMetrics, metrics=app.metrics)
    app.add_middleware(RequestContext)
    app.add_middleware(SendTimeout, timeout_s=settings.send_timeout_s)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=[*app.routes, *compute_docs()],
                separate_input_output_schemas=False,
            )
            _, defs = models_json_schema(
                [(m, "validation") for m in REQUEST_MODELS],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            if keys is not None:
                schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
