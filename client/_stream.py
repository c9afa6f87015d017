"""Streamed training: POST /v1/sgd's server-sent events, read by both clients.

A request is retried like any other until its stream starts (connection errors, 429, 5xx);
from then on, an `error` event raises the exception its problem's status maps to, and a
stream cut short raises APIConnectionError. Leaving the iteration early hangs up, which
stops the training on the server.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx

from client._core import Call, Core
from client._errors import APIConnectionError, APIError, status_error
from service.wire import SgdProgress, SgdResponse

#: what a streamed training yields: its progress as epochs end, last its result
SgdEvent = SgdProgress | SgdResponse
ProgressCallback = Callable[[SgdProgress], Any]


class _Events:
    """Server-sent events from a stream's lines, as the SSE rules read them."""

    def __init__(self) -> None:
        self.name = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """One line in; an event (name, data) when this line ended one."""
        if line == "":
            if not self.data:
                return None
            event = (self.name, "\n".join(self.data))
            self.name, self.data = "message", []
            return event
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self.name = value
        elif field == "data":
            self.data.append(value)
        return None  # comments (heartbeats) and other fields


def _request(core: Core, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
    call.streamed = True
    request = core.request(http, call)
    request.headers["accept"] = "text/event-stream"
    return request


def _streams(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.headers.get("content-type", "").startswith(
        "text/event-stream"
    )


def _event(call: Call, request: httpx.Request, name: str, data: str) -> SgdEvent | None:
    """A progress event or the result; an error event raised as its exception."""
    if name == "progress":
        return SgdProgress.model_validate_json(data)
    if name == "result":
        result: SgdResponse = call.result(httpx.Response(200, content=data.encode(), request=request))
        return result
    if name == "error":
        try:
            status = int(json.loads(data)["status"])
        except (ValueError, KeyError, TypeError):
            status = 500
        headers = {"content-type": "application/problem+json"}
        raise status_error(httpx.Response(status, content=data.encode(), headers=headers, request=request))
    return None  # an event this client does not know


def _cut_short(call: Call, request: httpx.Request) -> APIConnectionError:
    return APIConnectionError(f"the stream of {call.path} ended before its result", request)


def events(core: Core, http: httpx.Client, sleep: Callable[[float], None], call: Call) -> Iterator[SgdEvent]:
    """The sync client's streamed call."""
    attempt = 0
    while True:
        request = _request(core, http, call)
        outcome: httpx.Response | APIConnectionError
        try:
            response = http.send(request, stream=True)
        except httpx.TransportError as exc:
            outcome = core.failure(exc, request)
        else:
            if _streams(response):
                try:
                    parser = _Events()
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        found = None if event is None else _event(call, request, *event)
                        if found is not None:
                            yield found
                        if isinstance(found, SgdResponse):
                            return
                except httpx.TransportError as exc:
                    raise core.failure(exc, request) from None
                finally:
                    response.close()
                raise _cut_short(call, request)
            response.read()
            response.close()
            outcome = response
        delay = core.next_delay(attempt, outcome)
        if delay is None:
            if isinstance(outcome, APIConnectionError):
                raise outcome
            yield call.result(outcome)  # a plain answer (a server that does not stream)
            return
        sleep(delay)
        attempt += 1


async def aevents(
    core: Core, http: httpx.AsyncClient, sleep: Callable[[float], Any], call: Call
) -> AsyncIterator[SgdEvent]:
    """The async client's streamed call: `events`, awaited."""
    attempt = 0
    while True:
        request = _request(core, http, call)
        outcome: httpx.Response | APIConnectionError
        try:
            response = await http.send(request, stream=True)
        except httpx.TransportError as exc:
            outcome = core.failure(exc, request)
        else:
            if _streams(response):
                try:
                    parser = _Events()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        found = None if event is None else _event(call, request, *event)
                        if found is not None:
                            yield found
                        if isinstance(found, SgdResponse):
                            return
                except httpx.TransportError as exc:
                    raise core.failure(exc, request) from None
                finally:
                    await response.aclose()
                raise _cut_short(call, request)
            await response.aread()
            await response.aclose()
            outcome = response
        delay = core.next_delay(attempt, outcome)
        if delay is None:
            if isinstance(outcome, APIConnectionError):
                raise outcome
            yield call.result(outcome)
            return
        await sleep(delay)
        attempt += 1


def followed(stream: Iterator[SgdEvent], progress: ProgressCallback) -> SgdResponse:
    """The result of a stream, each progress event handed to `progress` on the way."""
    for event in stream:
        if isinstance(event, SgdResponse):
            return event
        progress(event)
    raise APIError("the stream ended before its result")


async def afollowed(stream: AsyncIterator[SgdEvent], progress: ProgressCallback) -> SgdResponse:
    """`followed` for the async client; `progress` may be a coroutine function."""
    async for event in stream:
        if isinstance(event, SgdResponse):
            return event
        done = progress(event)
        if inspect.isawaitable(done):
            await done
    raise APIError("the stream ended before its result")
