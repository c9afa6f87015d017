"""What both clients and their streamed training share: a call prepared and its answer read
(`Call`), and the configuration that sends it and decides on retries (`Core`)."""

from __future__ import annotations

import os
from typing import Any

import httpx
from pydantic import BaseModel

from client import _constants as const
from client._errors import APIConnectionError, APIError, APITimeoutError, status_error
from client._retry import parse_retry_after, retry_delay, should_retry
from client.arrays import RequestBody, decode_encoded, holds_encoded, read_answer, request_body
from service import __version__
from service.wire import framing


class Call:
    """One prepared call: where, what, and how to read the answer."""

    def __init__(
        self, method: str, path: str, model: type[BaseModel] | None, body: dict[str, Any] | None = None
    ) -> None:
        self.method, self.path, self.model = method, path, model
        self.body = body
        self.prepared: RequestBody | None = None
        self.streamed = False  # answered as server-sent events, whose result is JSON, never framed

    def prepare(self, binary: bool) -> RequestBody | None:
        """The body to send (built once, on first use: a retry sends the same bytes)."""
        if self.body is not None and self.prepared is None:
            self.prepared = request_body(self.body, binary, framed_answer=not self.streamed)
        return self.prepared

    def result(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise status_error(response)
        if self.model is None:
            return response.text
        decode = self.prepared is not None and self.prepared.decode
        try:
            if response.headers.get("content-type", "").startswith(framing.MEDIA_TYPE):
                return read_answer(self.model, response.content, response.headers.get(framing.HEADER), decode)
            result = self.model.model_validate_json(response.content)
            return decode_encoded(result) if decode and holds_encoded([result]) else result
        except ValueError as exc:
            raise APIError(
                f"the server's answer to {self.path} does not fit the API: {exc}", response.request
            ) from None


class Core:
    """Configuration and request building shared by both clients."""

    def __init__(
        self, base_url: str | None, api_key: str | None, timeout: float, max_retries: int, binary: bool
    ) -> None:
        self.base_url = (base_url or os.environ.get(const.BASE_URL_ENV) or const.DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(const.API_KEY_ENV)
        self.timeout = timeout
        self.max_retries = max_retries
        self.binary = binary

    def headers(self) -> dict[str, str]:
        headers = {"user-agent": f"gradserve-client/{__version__}", "accept": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def request(self, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        headers = self.headers()
        body = call.prepare(self.binary)
        if body is not None:
            headers.update(body.headers)
        return http.build_request(
            call.method,
            self.base_url + call.path,
            content=None if body is None else body.content,
            headers=headers,
            timeout=self.timeout,
        )

    def failure(self, exc: httpx.TransportError, request: httpx.Request) -> APIConnectionError:
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                f"{request.method} {request.url} timed out after {self.timeout} s", request
            )
        return APIConnectionError(f"cannot reach gradserve at {self.base_url}: {exc}", request)

    def next_delay(self, attempt: int, outcome: httpx.Response | APIConnectionError) -> float | None:
        """Seconds to wait before trying again, or None when this outcome is final."""
        if attempt >= self.max_retries:
            return None
        if isinstance(outcome, httpx.Response):
            if not should_retry(outcome.status_code, problem_type(outcome)):
                return None
            return retry_delay(attempt, parse_retry_after(outcome.headers.get("retry-after")))
        return retry_delay(attempt)


def problem_type(response: httpx.Response) -> str:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""
