"""A compute request's whole job, from the body's bytes to the answer's bytes: validate,
estimate and admit, compute, serialise. It runs where the transport puts it: in a worker
process, a thread, or inline on the event loop for a small request."""

from __future__ import annotations

import json
from typing import Any, NamedTuple, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from service import wire
from service.convert import binding, progress
from service.convert.encoding import Sections, binary_sections, dumps, framed_answer
from service.endpoints.render import Document
from service.pipeline import costs, refusal, scan
from service.pipeline.handlers import run_of
from service.problems import (
    InvalidRequestError,
    MalformedBinaryBodyError,
    ProblemError,
    issue,
    schema_problem,
)
from service.settings import Limits
from service.wire import framing

M = TypeVar("M", bound=BaseModel)


class Reply(NamedTuple):
    """An answer, ready to send: what crosses back from a worker."""

    status: int
    content: bytes
    media_type: str
    headers: dict[str, str]
    in_shared: int = 0  # > 0: the content is the first `in_shared` bytes of the body's shared memory
    # a binary answer's sections, sent after `content` (its JSON document): kept apart only on
    # the way to shared memory (`handle_in_pieces`), never across a pipe
    sections: tuple[memoryview, ...] = ()

    def joined(self) -> Reply:
        """The reply with its sections joined to its content."""
        if not self.sections:
            return self
        return self._replace(content=b"".join((self.content, *self.sections)), sections=())


def parse(model: type[M], body: bytes) -> M:
    """Validate a body straight from its bytes; NaN and Infinity never get in."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise schema_problem(exc.errors(include_input=False, include_url=False), model) from None


def handle(
    endpoint: str,
    body: bytes,
    limits: Limits,
    framed: int | None = None,
    report: progress.Report | None = None,
) -> Reply:
    """One compute request, from the body's bytes to the answer's bytes. `endpoint`: the key of
    its handler row (`service.pipeline.handlers.Handler.key`: the endpoint's name, with its
    variant). `framed`: the body is in the binary framing, its JSON document the first `framed`
    bytes. With `report`, an endpoint that can (`Handler.streamed`) reports its progress to it
    as it goes."""
    return handle_in_pieces(endpoint, body, limits, framed, report).joined()


def handle_in_pieces(
    endpoint: str,
    body: bytes | memoryview,
    limits: Limits,
    framed: int | None,
    report: progress.Report | None = None,
) -> Reply:
    """`handle`, a binary answer's sections left as views of its arrays (not joined). A framed
    body may be a view (of shared memory): its FP64 arrays are read in place."""
    reply = _handle(endpoint, body, limits, None, framed, report)
    assert reply is not None  # only a budget hands a request on
    return reply


def _handle(
    endpoint: str,
    body: bytes | memoryview,
    limits: Limits,
    budget_ms: float | None,
    framed: int | None,
    report: progress.Report | None = None,
) -> Reply | None:
    """`handle`; with a budget, None (handed on) as soon as its estimate is over `budget_ms`."""
    handler, run = run_of(endpoint)
    try:
        document, sections = _unframed(body, framed)
        counts = scan.BodyCounts.of(document, None if sections is None else len(sections.buffer))
        if budget_ms is not None and counts.parse_ns() / 1e6 > budget_ms:
            return None  # even parsing it would hold the event loop too long
        scan.check_body(document, counts, limits, handler.copies, handler.copies_are)
        if sections is not None:
            sections = _referenced(document, sections.buffer)
        request = parse(handler.wire.request, document)
        cost = costs.estimate(handler.cost, request, limits, counts)
        refusal.admit(handler, request, cost, limits)
        if budget_ms is not None and cost.ms > budget_ms:
            return None
        # Every endpoint runs under the time limit and without NumPy's floating-point warnings:
        # overflow is reported afterwards, by name (a 422 naming the unit or weight); the
        # warnings would only repeat it, or, where warnings are errors, turn it into a 500.
        with (
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
            binding.time_limit(limits.timeout_s),
            binary_sections(sections),
        ):
            result = (
                run(request, limits)
                if report is None or handler.streamed is None
                else handler.streamed(request, limits, report)
            )
        if isinstance(result, Document):
            return Reply(200, result.content, result.media_type, {})
        encoding: wire.ArrayEncoding = getattr(request, "array_encoding", "list")
        if encoding == "binary":
            length, pieces = framed_answer(result)
            headers = {framing.HEADER: str(length)}
            return Reply(200, bytes(pieces[0]), framing.MEDIA_TYPE, headers, sections=tuple(pieces[1:]))
        return Reply(200, dumps(result, encoding), "application/json", {})
    except ProblemError as exc:
        return problem_reply(exc)


def _unframed(body: bytes | memoryview, framed: int | None) -> tuple[bytes, Sections | None]:
    """A body's JSON document, and a binary body's sections (their references not read yet)."""
    if framed is None:
        return bytes(body), None
    try:
        document, sections = framing.cut(body, framed)
    except framing.FramingError as exc:
        raise MalformedBinaryBodyError(str(exc)) from None
    return bytes(document), Sections(sections, {})


def _referenced(document: bytes, sections: memoryview) -> Sections | None:
    """The sections with the references of the document, each at its JSON path; None when the
    document is not JSON (its parse says so next)."""
    tree: Any = {}
    if sections or b"binary_data_size" in document:  # (else there is nothing to parse twice for)
        try:
            tree = orjson.loads(document)
        except orjson.JSONDecodeError:
            try:  # orjson refuses some JSON the schema's parser takes (integers past 64 bits)
                tree = json.loads(document)
            except (ValueError, RecursionError):  # (nested past the stack: the parse says so next)
                return None
    try:
        found = framing.references(tree, len(sections))
    except framing.FramingError as exc:
        raise MalformedBinaryBodyError(str(exc)) from None
    except framing.InvalidReference as exc:
        raise InvalidRequestError(str(exc), [issue(list(exc.path), exc.msg)]) from None
    return Sections(sections, {ref.path: ref for ref in found})


def problem_reply(exc: ProblemError) -> Reply:
    return Reply(exc.status, orjson.dumps(exc.body()), "application/problem+json", exc.headers)


def handle_inline(
    endpoint: str, body: bytes, limits: Limits, budget_ms: float, framed: int | None = None
) -> Reply | None:
    """`handle`, on the calling thread, if the whole request (parse, computation, answer) is
    estimated to take under `budget_ms`; else None, having spent only a scan of the bytes, or
    their parse and the estimate.

    Tiny requests are most requests, and the hop to a worker process and back costs more than
    computing one of them (bench/RESULTS.md, "Figures behind the design").
    """
    if not run_of(endpoint)[0].inline or budget_ms <= 0:
        return None
    reply = _handle(endpoint, body, limits, budget_ms, framed)
    return None if reply is None else reply.joined()
