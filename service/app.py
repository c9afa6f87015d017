"""The app factory: settings, routes, the one error format, the OpenAPI document."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException

from service import __version__, selfcheck
from service.api import REQUEST_MODELS, health, router
from service.errors import PROBLEM_TYPE, ProblemError, issue
from service.settings import Settings, get_settings

log = logging.getLogger("gradserve")


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def _problem(status: int, detail: str, slug: str | None = None, **extra: Any) -> ProblemResponse:
    phrase = HTTPStatus(status).phrase
    body = {
        "type": PROBLEM_TYPE + slug if slug else "about:blank",
        "title": phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return ProblemResponse(body, status_code=status)


async def _on_problem(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    return ProblemResponse(exc.body(), status_code=exc.status)


async def _on_http(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).description
    response = _problem(exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _on_validation(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [issue(list(e["loc"]), e["msg"]) for e in exc.errors()]  # never echo the input
    detail = "; ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in errors[:5])
    return _problem(422, detail, "invalid-request", errors=errors)


async def _on_unexpected(_: Request, exc: Exception) -> ProblemResponse:
    request_id = uuid.uuid4().hex
    log.error("unexpected error, request id %s", request_id, exc_info=exc)
    return _problem(
        500, f"an unexpected error; report request id {request_id}", "internal", request_id=request_id
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.ready = selfcheck.passes()
    if not app.state.ready:
        log.error("the engine's self-check failed: /readyz answers 503")
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """A gradserve app; nothing happens at import time."""
    app = FastAPI(
        title="gradserve",
        version=__version__,
        summary="Backpropagation as a service: forward values, exact gradients and SGD "
        "for any DAG of units. The contract is API.md; every error is problem+json.",
        lifespan=_lifespan,
        separate_input_output_schemas=False,
    )
    app.state.settings = settings or get_settings()
    app.state.ready = False
    app.include_router(health)
    app.include_router(router)
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(Exception, _on_unexpected)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
                separate_input_output_schemas=False,
            )
            _, defs = models_json_schema(
                [(m, "validation") for m in REQUEST_MODELS],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
