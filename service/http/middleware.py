"""Pure ASGI middleware: security headers, the send timeout, request ids and access logs, and the
optional API keys."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import re
import time
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.error_responses import problem_response
from service.http.keys import KeyRing

access_log = logging.getLogger("gradserve.access")

_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # whole value (fullmatch): "$" would pass "id\n"
#: a request's own id, 32 hex digits like a UUID's: a random prefix per process and a count
#: (unique as a uuid4 is, and a tenth of its cost: no system call per request)
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count()


def _new_prefix() -> None:  # (a forked process counts on its own)
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_prefix)


class RequestContext:
    """Give each request an id (the client's X-Request-ID when sane), echo it, log one line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _SANE_ID.fullmatch(given) else f"{_ID_PREFIX}{next(_ids):016x}"
        scope.setdefault("state", {})["request_id"] = request_id
        status, start = 500, time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):  # the line is not even built otherwise
                self._log(scope, status, start, request_id)

    @staticmethod
    def _log(scope: Scope, status: int, start: float, request_id: str) -> None:
        line = {
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round((time.perf_counter() - start) * 1000, 2),
            "request_id": request_id,
        }
        key = scope["state"].get("key")
        if key is not None:  # the fingerprint of the API key that made it (ApiKeyAuth)
            line["key"] = key
        access_log.info(json.dumps(line))


class ApiKeyAuth:
    """With API keys configured, every request needs `Bearer <key>` (any of the keys) but the
    health checks and a GET of `open_paths` or of a path under `open_prefixes` (pages a browser
    loads first). The key's fingerprint goes into the scope's state, for the access log."""

    OPEN = frozenset({"/healthz", "/readyz"})

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        open_paths: frozenset[str] = frozenset(),
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths
        self.open_prefixes = open_prefixes

    def _is_open(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in self.OPEN:
            return True
        page = path in self.open_paths or path.startswith(self.open_prefixes)
        return page and scope["method"] in ("GET", "HEAD")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._is_open(scope):
            # the header's bytes as sent, compared with the keys' bytes (never decoded and encoded again)
            given = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
            scheme, _, token = given.strip().partition(b" ")
            key = self.keys.match(token.strip()) if scheme.lower() == b"bearer" else None
            if key is None:
                detail = (
                    "this server needs an API key: send 'Authorization: Bearer <key>'"
                    if not token
                    else "the API key is not valid"
                )
                response = problem_response(
                    401, detail, "unauthorized", headers={"www-authenticate": 'Bearer realm="gradserve"'}
                )
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["key"] = key
        await self.app(scope, receive, send)


class ConnectionDroppedError(Exception):
    """The client did not read its answer in time, and its connection was dropped."""


class SendTimeout:
    """Drop the connection of a client that leaves a piece of its answer (or its start) unread
    for `timeout_s`.

    uvicorn holds a `send` back while the client's socket is full (its flow control); without a
    limit, a client that never reads would hold its answer, and what it pins, forever. Dropped
    means aborted (see `Abortable`). The exception raised through the app lets everything it
    held go on the way out, and is caught here, inside Starlette's error handling.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # a send can only wait while the connection's writing is paused (uvicorn's flow
        # control; nothing between here and uvicorn's send waits on anything else): timed then
        # only, for timing each piece would cost P1 more than any other feature (bench/RESULTS.md)
        paused = (scope.get("extensions") or {}).get(WRITE_PAUSED, _always)

        async def send_in_time(message: Message) -> None:
            if not paused():  # (an answer's start too: a pipelining client that stopped reading
                await send(message)  # holds the next answer's start, and its bytes in flight)
                return
            try:
                async with asyncio.timeout(self.timeout_s):
                    await send(message)
            except TimeoutError:
                raise ConnectionDroppedError from None

        try:
            await self.app(scope, receive, send_in_time)
        except ConnectionDroppedError:
            abort = (scope.get("extensions") or {}).get(ABORT)
            if abort is not None:
                await abort()
            # elsewhere the server closes the connection, the answer unfinished, when the app returns


#: the scope's extension that aborts the request's connection (see `Abortable`)
ABORT = "gradserve.abort"
#: the scope's extension that says whether the connection's writing is paused (see `Abortable`)
WRITE_PAUSED = "gradserve.write_paused"


def _always() -> bool:
    return True


class Abortable:
    """Give the app a way to abort a request's connection, as the scope's `gradserve.abort`
    extension, and to ask whether writing to it is paused (`gradserve.write_paused`), under
    uvicorn: its `send` is the bound method of the request's cycle, which holds the transport
    and the flow control. It must wrap everything, Starlette's error handling included (which
    wraps `send` in turn)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle: Any = getattr(send, "__self__", None)
        transport: Any = getattr(cycle, "transport", None)
        if scope["type"] == "http" and transport is not None:
            scope["extensions"] = {
                **(scope.get("extensions") or {}),
                ABORT: functools.partial(_abort, cycle),
                WRITE_PAUSED: functools.partial(_write_paused, cycle),
            }
        await self.app(scope, receive, send)


def _write_paused(cycle: Any) -> bool:
    flow = getattr(cycle, "flow", None)
    return True if flow is None else bool(flow.write_paused)


async def _abort(cycle: Any) -> None:
    """Abort the connection (closing it would wait, with the rest of the answer, for the client
    to read it), and let uvicorn learn it is lost (else it logs an unfinished answer as an error)."""
    cycle.transport.abort()
    for _ in range(100):  # (the loop calls connection_lost soon after)
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.001)


#: what an HTML page or an SVG may load unless it says otherwise (a page that needs more sends
#: its own policy, service.pages): its own server's scripts, styles and images, nothing else
DEFAULT_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'"
)
#: answers a browser renders as a document, scripts and all: they get a policy
_DOCUMENTS = (b"text/html", b"image/svg+xml")


class SecurityHeaders:
    """Every answer: `X-Content-Type-Options: nosniff` (a browser never runs an answer as another
    type than it says). An HTML page or an SVG: a Content-Security-Policy (its own, else
    DEFAULT_POLICY) with `frame-ancestors` (GRADSERVE_FRAME_ANCESTORS, default 'none': no other
    site may frame it). Only the start of an answer is touched: streamed answers pass through."""

    def __init__(self, app: ASGIApp, frame_ancestors: str) -> None:
        self.app = app
        self.frame_ancestors = f"frame-ancestors {frame_ancestors}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-content-type-options"] = "nosniff"
                media = headers.get("content-type", "").encode("latin-1").partition(b";")[0].strip().lower()
                if media in _DOCUMENTS:
                    policy = headers.get("content-security-policy") or DEFAULT_POLICY
                    if "frame-ancestors" not in policy:
                        policy = f"{policy}; {self.frame_ancestors}"
                    headers["content-security-policy"] = policy
            await send(message)

        await self.app(scope, receive, send_with_headers)
