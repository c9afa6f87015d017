"""The one error format: every error response is problem+json, built here and only here."""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.problems import (
    PROBLEM_TYPE,
    MethodNotAllowedError,
    OutOfMemoryError,
    ProblemError,
    schema_problem,
)

log = logging.getLogger("gradserve")


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem_response(
    status: int, detail: str, slug: str | None = None, headers: dict[str, str] | None = None, **extra: Any
) -> ProblemResponse:
    body = {
        "type": PROBLEM_TYPE + slug if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


async def on_problem(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, ProblemError)
    return ProblemResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def on_http(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:  # the same problem as the compute routes' 405
        allow = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
        methods = [m.strip() for m in allow.split(",") if m.strip()]
        return await on_problem(request, MethodNotAllowedError(request.url.path, methods))
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).description
    return problem_response(exc.status_code, detail, headers=dict(exc.headers or {}))


async def on_validation(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    return await on_problem(request, schema_problem(exc.errors()))


async def on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
    if isinstance(exc, MemoryError):  # no bug: the process has no memory left for it
        log.warning("out of memory for a request to %s", request.url.path)
        return await on_problem(request, OutOfMemoryError())
    request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
    log.error("unexpected error, request id %s", request_id, exc_info=exc)
    return problem_response(
        500,
        f"an unexpected error; report request id {request_id}",
        "internal",
        headers={"x-request-id": request_id},
        request_id=request_id,
    )
