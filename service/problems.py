"""The service's own errors: raised anywhere, turned into problem+json in one place."""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, Tag

PROBLEM_TYPE = "urn:gradserve:problem:"


class ProblemError(Exception):
    """An error a client can act on, carried to the one handler that answers it."""

    status = 422
    slug = "invalid-request"
    title = "The request is not valid"

    def __init__(
        self,
        detail: str,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The problem+json body for this error."""
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


class MalformedJSONError(ProblemError):
    status = 400
    slug = "malformed-json"
    title = "The body is not valid JSON"


class InvalidRequestError(ProblemError):
    slug = "invalid-request"
    title = "The request does not match the schema"


class InvalidGraphError(ProblemError):
    slug = "invalid-network"
    title = "The network is not a valid graph"


class InvalidSamplesError(ProblemError):
    slug = "invalid-samples"
    title = "The samples do not fit the network"


class NonFiniteResultError(ProblemError):
    slug = "non-finite-result"
    title = "The computation overflowed"


class LimitExceededError(ProblemError):
    status = 413
    slug = "limit-exceeded"
    title = "The request exceeds a configured limit"


class BodyTooLargeError(LimitExceededError):
    slug = "body-too-large"
    title = "The request body is too large"


class HeadTooLargeError(ProblemError):
    """Answered by the connection's protocol (`service.http.edge`), before any app sees the request."""

    status = 431
    slug = "header-too-large"
    title = "The request head is too large"


class DeadlineExceededError(ProblemError):
    status = 503
    slug = "deadline-exceeded"
    title = "The computation ran out of time"


class OverloadedError(ProblemError):
    status = 503
    slug = "overloaded"
    title = "The service is busy"


class WorkerLostError(ProblemError):
    status = 500
    slug = "worker-lost"
    title = "The computation's worker died"


class OutOfMemoryError(ProblemError):
    """A MemoryError computing a request: the process had no memory left for it (a worker's
    address-space limit, `prlimit --as`, a container's); the worker is replaced."""

    status = 503
    slug = "out-of-memory"
    title = "The service ran out of memory for this request"

    def __init__(self) -> None:
        super().__init__(
            "the service ran out of memory computing this request; try again later, or ask for "
            "less work (a smaller batch, fewer units, binary arrays)",
            headers={"retry-after": "1"},
        )


class MethodNotAllowedError(ProblemError):
    """Every 405, the compute routes' and FastAPI's alike: one type, title and detail, and the
    methods the path takes in `Allow`."""

    status = 405
    slug = "method-not-allowed"
    title = "The path does not take this method"

    def __init__(self, path: str, allowed: Sequence[str]) -> None:
        methods = sorted(set(allowed))
        super().__init__(f"{path} takes {' or '.join(methods)}", headers={"allow": ", ".join(methods)})


class NotReadyError(ProblemError):
    status = 503
    slug = "not-ready"
    title = "The service is not ready"


def issue(loc: Sequence[str | int], msg: str) -> dict[str, Any]:
    """One entry of a problem's `errors` list."""
    return {"loc": list(loc), "msg": msg}


#: a problem lists at most this many errors: a body wrong in every one of a million items is
#: not answered with a million errors (loops that collect them stop once they have more)
MAX_LISTED = 100


def enough(items: list[dict[str, Any]]) -> bool:
    """Whether the issues collected are more than a problem lists: stop looking for others."""
    return len(items) > MAX_LISTED


def raise_collected(cls: type[ProblemError], items: list[dict[str, Any]]) -> None:
    """Raise `cls` for the collected issues at once, the first ones in the detail."""
    if not items:
        return
    shown = "; ".join(item["msg"] for item in items[:5])
    if len(items) > MAX_LISTED:
        shown += f" (and more: the first {MAX_LISTED} are listed)"
    elif len(items) > 5:
        shown += f" (and {len(items) - 5} more)"
    raise cls(shown, items[:MAX_LISTED])


# ---------------------------------------------------------------- where an error is


def user_loc(model: type[BaseModel], loc: Sequence[str | int]) -> list[str | int]:
    """A validation error's location as the user wrote it: pydantic puts the tag of each tagged
    union it passes through into the location (`network.weights.objects.0.source`), a name the
    user never wrote; this walks the model along `loc` and leaves those tags out
    (`network.weights.0.source`). Past a step it cannot follow, the rest is kept as it is."""
    out: list[str | int] = []
    node: Any = model
    for k, part in enumerate(loc):
        node, internal = _step(node, part)
        if node is None:
            return out + list(loc[k:])
        if not internal:
            out.append(part)
    return out


def _step(node: Any, part: str | int) -> tuple[Any, bool]:
    """The type at `part` below `node`, and whether `part` was a union's tag (not the user's)."""
    metadata: list[Any] = []
    while get_origin(node) is Annotated:
        node, *more = get_args(node)
        metadata += more
    if any(isinstance(m, Discriminator) for m in metadata):
        for member in get_args(node):
            if any(isinstance(m, Tag) and m.tag == part for m in get_args(member)[1:]):
                return member, True
        return None, False
    origin = get_origin(node)
    if origin in (Union, types.UnionType):
        members = [m for m in get_args(node) if m is not type(None)]
        return _step(members[0], part) if len(members) == 1 else (None, False)
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        if field is None:
            return None, False
        return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation, False
    if origin is list and isinstance(part, int):
        return get_args(node)[0], False
    if origin is dict and isinstance(part, str):
        return get_args(node)[1], False
    return None, False


def schema_problem(errors: Sequence[Mapping[str, Any]], model: type[BaseModel] | None = None) -> ProblemError:
    """The problem for pydantic's validation errors: malformed JSON, or what does not fit the
    schema, each error by where it is (never the rejected input), the first ones in the detail.
    Given the `model` validated, each location is the path the user wrote, without the tags
    of the model's tagged unions (`user_loc`)."""
    if any(e["type"] == "json_invalid" for e in errors):
        return MalformedJSONError(f"the body is not valid JSON: {errors[0]['msg']}")
    locs = [_echoed(user_loc(model, e["loc"]) if model else e["loc"]) for e in errors[:MAX_LISTED]]
    items = [issue(loc, e["msg"]) for loc, e in zip(locs, errors, strict=False)]
    lines = [
        (".".join(map(str, loc)) or "the body") + ": " + e["msg"]
        for loc, e in zip(locs[:5], errors, strict=False)
    ]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return InvalidRequestError("; ".join(lines) + more, items)


#: a key the client sent (an unknown field's name, a dict key) is echoed up to this many characters
MAX_ECHOED = 64


def _echoed(loc: Sequence[str | int]) -> list[str | int]:
    """A location as the client's keys name it, each key cut to MAX_ECHOED characters and "…"."""
    return [
        part[:MAX_ECHOED] + "…" if isinstance(part, str) and len(part) > MAX_ECHOED else part for part in loc
    ]


def echoed(value: object) -> str:
    """A value the client sent, for a message: at most MAX_ECHOED characters, then "…"
    (an integer of thousands of digits is valid JSON)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"over 2**{value.bit_length() - 1:,}"
    text = f"{value:,}" if isinstance(value, int) else str(value)
    return text[:MAX_ECHOED] + "…" if len(text) > MAX_ECHOED else text


class RequestTimeoutError(ProblemError):
    status = 408
    slug = "request-timeout"
    title = "The request body did not arrive in time"


class UnsupportedMediaTypeError(ProblemError):
    status = 415
    slug = "unsupported-media-type"
    title = "The body's Content-Type is not supported"


class ShuttingDownError(ProblemError):
    status = 503
    slug = "shutting-down"
    title = "The service is shutting down"


class MalformedBinaryBodyError(ProblemError):
    status = 400
    slug = "malformed-binary-body"
    title = "The binary body does not hold together"
