"""One exception tree, mapped from the HTTP status, so callers catch exactly what they can handle."""

from __future__ import annotations

from typing import Any

import httpx


class APIError(Exception):
    """Anything that went wrong talking to gradserve."""

    def __init__(self, message: str, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke."""


class APITimeoutError(APIConnectionError):
    """The server did not answer in time."""


class APIStatusError(APIError):
    """The server answered with an error status; `problem` is its problem+json body."""

    def __init__(self, response: httpx.Response, problem: dict[str, Any]) -> None:
        detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase)
        super().__init__(detail, response.request)
        self.response = response
        self.status_code = response.status_code
        self.detail = detail
        self.problem = problem

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The validation errors' locations and messages, if the server listed them."""
        errors = self.problem.get("errors")
        return list(errors) if isinstance(errors, list) else []


class BadRequestError(APIStatusError):
    """400: the body is not JSON."""


class AuthenticationError(APIStatusError):
    """401: a missing or wrong API key."""


class NotFoundError(APIStatusError):
    """404."""


class PayloadTooLargeError(APIStatusError):
    """413: the body or the work it asks for is over one of the server's limits."""


class UnprocessableEntityError(APIStatusError):
    """422: the request, the network (a cycle, an unknown unit...) or the samples are not valid."""


class RateLimitError(APIStatusError):
    """429."""


class InternalServerError(APIStatusError):
    """5xx."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(response: httpx.Response) -> APIStatusError:
    """The exception for an error response."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem: dict[str, Any] = body if isinstance(body, dict) else {"detail": response.text[:500]}
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    return cls(response, problem)


class NetworkImportError(ValueError):
    """A network made elsewhere (a neat-python genome, ...) that cannot be turned into
    gradserve's: the message says what (an activation, a network type) and where (a node)."""
