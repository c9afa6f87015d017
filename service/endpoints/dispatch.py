"""A compute request's whole job, from the body's bytes to the answer's bytes: validate,
estimate and admit, compute, serialise. It runs where the transport puts it: in a worker
process, a thread, or inline on the event loop for a small request."""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from service import wire
from service.endpoints import costs, progress, requests
from service.endpoints.arrays import dumps
from service.endpoints.render import Document
from service.endpoints.table import HANDLERS
from service.errors import ProblemError, schema_problem
from service.settings import Limits

M = TypeVar("M", bound=BaseModel)


class Reply(NamedTuple):
    """An answer, ready to send: what crosses back from a worker."""

    status: int
    content: bytes
    media_type: str
    headers: dict[str, str]
    in_shared: int = 0  # > 0: the content is the first `in_shared` bytes of the body's shared memory


def parse(model: type[M], body: bytes) -> M:
    """Validate a body straight from its bytes; NaN and Infinity never get in."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise schema_problem(exc.errors(include_input=False, include_url=False), model) from None


def handle(endpoint: str, body: bytes, limits: Limits, report: progress.Report | None = None) -> Reply:
    """One compute request, from the body's bytes to the answer's bytes; with `report`, an
    endpoint that can (`Handler.streamed`) reports its progress to it as it goes."""
    reply = _handle(endpoint, body, limits, None, report)
    assert reply is not None  # only a budget hands a request on
    return reply


def _handle(
    endpoint: str, body: bytes, limits: Limits, budget_ms: float | None, report: progress.Report | None = None
) -> Reply | None:
    """`handle`; with a budget, None (handed on) as soon as its estimate is over `budget_ms`."""
    handler = HANDLERS[endpoint]
    try:
        counts = costs.BodyCounts.of(body)
        if budget_ms is not None and counts.parse_ns() / 1e6 > budget_ms:
            return None  # even parsing it would hold the event loop too long
        costs.check_body(endpoint, body, counts, limits)
        request = parse(handler.wire.request, body)
        cost = costs.estimate(handler.cost, request, limits, counts)
        costs.admit(endpoint, request, cost, limits)
        if budget_ms is not None and cost.ms > budget_ms:
            return None
        # Every endpoint runs under the time limit and without NumPy's floating-point warnings:
        # overflow is reported afterwards, by name (a 422 naming the unit or weight); the
        # warnings would only repeat it, or, where warnings are errors, turn it into a 500.
        with (
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
            requests.time_limit(limits.timeout_s),
        ):
            result = (
                handler.run(request, limits)
                if report is None or handler.streamed is None
                else handler.streamed(request, limits, report)
            )
        if isinstance(result, Document):
            return Reply(200, result.content, result.media_type, {})
        encoding: wire.ArrayEncoding = getattr(request, "array_encoding", "list")
        return Reply(200, dumps(result, encoding), "application/json", {})
    except ProblemError as exc:
        return problem_reply(exc)


def problem_reply(exc: ProblemError) -> Reply:
    return Reply(exc.status, orjson.dumps(exc.body()), "application/problem+json", exc.headers)


def handle_inline(endpoint: str, body: bytes, limits: Limits, budget_ms: float) -> Reply | None:
    """`handle`, on the calling thread, if the whole request (parse, computation, answer) is
    estimated to take under `budget_ms`; else None, having spent only a scan of the bytes, or
    their parse and the estimate.

    Tiny requests are most requests, and the hop to a worker process and back costs more than
    computing one of them (bench/RESULTS.md, "Figures behind the design").
    """
    if not HANDLERS[endpoint].inline or budget_ms <= 0:
        return None
    return _handle(endpoint, body, limits, budget_ms)
