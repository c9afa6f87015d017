"""The connection's edge, below the app: uvicorn's httptools protocol with bounds of its own.

uvicorn's `HttpToolsProtocol` feeds whatever arrives to its parser with no bound on a request's
head (httptools joins a header's pieces in memory: one connection sent 150 MiB of header lines
and the server kept them), arms no timer before a request's head is complete (silent
connections and connections with half a head stayed open for good), and accepts connections
until the process has no descriptor left (then a dead worker could not be replaced, and
/healthz failed). Its `limit_concurrency` does not help: it is checked only once a head is
complete, so silent connections never meet it, and it counts requests with connections. So
this protocol adds, for each connection:

- a bound on a request's head, `max_header_bytes` and `max_headers`: past either, a 431
  `header-too-large` and the connection closed, the parser and what it held let go;
- a deadline for the head, `header_timeout_s` from the connection's opening or the previous
  answer's end, however slowly the head trickles in: past it the connection is closed (an idle
  keep-alive connection is still closed after uvicorn's `timeout_keep_alive`, 5 s);
- a bound on the connections of the process, `max_connections` (at most what the open-file
  limit leaves, `settings.connection_room`): a new connection past it closes the one that has
  waited longest for a head with no request of its own in progress, or, when every connection
  has a request in progress, is itself answered 503 `overloaded` and closed.

h11 (uvicorn's other parser) bounds a head (`h11_max_incomplete_event_size`) but has neither
the deadline nor the connection bound, and serves small requests slower (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from service.problems import HeadTooLargeError, OverloadedError, ProblemError
from service.settings import get_settings

log = logging.getLogger("gradserve")


class _RefusedError(Exception):
    """Raised in a parser callback to stop the parser; the answer is `EdgeProtocol.refusal`."""


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded head, a head deadline and a connection bound."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_head, self.max_headers = settings.max_header_bytes, settings.max_headers
        self.head_timeout, self.max_connections = settings.header_timeout_s, settings.max_connections
        #: armed while the connection waits for a head with no request of its own in progress
        self.head_deadline: asyncio.TimerHandle | None = None
        self.waiting_since = 0.0
        self.in_head = False  # the parser is inside a request's head
        self.head_began_in_this_read = False
        self.head_read = 0  # bytes read inside the head, from the read after the one it began in
        self.unproductive = 0  # bytes read since the parser last made progress (data_received)
        self.refusal: ProblemError | None = None
        #: a refusal waiting for the answers of the requests before it on the connection
        self.queued_refusal: ProblemError | None = None

    # ------------------------------------------------------------ the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        crowded = len(self.connections) >= self.max_connections
        super().connection_made(transport)
        self._wait_for_head()
        if crowded and not self._evict_the_longest_waiting():
            log.warning("a connection refused: %d open, GRADSERVE_MAX_CONNECTIONS", len(self.connections))
            self._answer(
                OverloadedError(
                    f"the server holds {self.max_connections:,} connections (GRADSERVE_MAX_CONNECTIONS), "
                    "each with a request in progress; try again",
                    headers={"retry-after": "1"},
                )
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _evict_the_longest_waiting(self) -> bool:
        """Close the connection that has waited longest for a head (self aside); whether there was one."""
        waiting = [
            c
            for c in self.connections
            if isinstance(c, EdgeProtocol) and c is not self and c.head_deadline is not None
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.waiting_since)
        oldest._stop_waiting()
        self.connections.discard(oldest)  # counted out now; its descriptor goes within this turn
        oldest.transport.close()
        return True

    # ------------------------------------------------------------ the head's deadline

    def _wait_for_head(self) -> None:
        self._stop_waiting()
        self.waiting_since = self.loop.time()
        self.head_deadline = self.loop.call_later(self.head_timeout, self._head_too_late)

    def _stop_waiting(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_too_late(self) -> None:
        self.head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _after_response(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer exactly when no pipelined request is waiting
        if self.timeout_keep_alive_task is not None and not self.transport.is_closing():
            self._wait_for_head()

    # ------------------------------------------------------------ the head's size

    def data_received(self, data: bytes) -> None:
        if self.queued_refusal is not None:
            # the parser stopped at the refused head: what follows is dropped, and read (not
            # left unread, which would make the close a reset that loses the answers)
            return
        # Bytes that make no progress (no message begun, no head or message ended, no body
        # byte) are bound like a head's: a chunked body's trailers are header lines after the
        # head, which the parser joins in memory just the same.
        self.unproductive += len(data)
        super().data_received(data)
        if not self.in_head and self.unproductive > self.max_head and not self.transport.is_closing():
            log.warning("a connection closed: %d bytes with no progress (trailers?)", self.unproductive)
            self._stop_waiting()
            self.transport.close()
            self.headers, self.url = [], b""
            return
        if self.in_head and not self.transport.is_closing():
            # every byte of a read after the one the head began in is the head's
            if self.head_began_in_this_read:
                self.head_began_in_this_read = False
            else:
                self.head_read += len(data)
            if self.head_read > self.max_head:
                self._answer(self._head_too_large())

    def on_message_begin(self) -> None:
        self.unproductive = 0
        super().on_message_begin()
        self.in_head = self.head_began_in_this_read = True
        self.head_read = 0

    def on_body(self, body: bytes) -> None:
        self.unproductive = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.unproductive = 0
        super().on_message_complete()

    def on_headers_complete(self) -> None:
        self.unproductive = 0
        # (counted once here, not per header: the reads above bound what a head can hold
        # before it is complete to one read past the bound)
        self.in_head = False
        self._stop_waiting()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head or len(self.headers) > self.max_headers:
            self.refusal = self._head_too_large()
            raise _RefusedError  # httptools stops and raises; uvicorn then calls send_400_response
        super().on_headers_complete()

    def _head_too_large(self) -> HeadTooLargeError:
        return HeadTooLargeError(
            f"a request's head may have at most {self.max_head:,} bytes (GRADSERVE_MAX_HEADER_BYTES) "
            f"in at most {self.max_headers:,} header lines (GRADSERVE_MAX_HEADERS)"
        )

    def send_400_response(self, msg: str) -> None:
        if self.refusal is None:
            super().send_400_response(msg)
        else:
            log.warning("a request head over its bound: 431")
            self._answer(self.refusal)

    # ------------------------------------------------------------ answering here

    def _answer(self, problem: ProblemError) -> None:
        """Answer `problem` as problem+json and close the connection, keeping nothing of it;
        after the answers of the requests before it on this connection, if they are still being
        computed (a pipelining client takes answers in order: the refusal must not pass them)."""
        self._stop_waiting()
        self.in_head = False
        self.unproductive = 0  # (the refused head's bytes are answered here)
        self.headers, self.url = [], b""
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            self.queued_refusal = problem  # (what arrives meanwhile is read and dropped: data_received)
            return
        self._write_refusal(problem)

    def on_response_complete(self) -> None:
        if self.queued_refusal is not None and not self.pipeline:
            problem, self.queued_refusal = self.queued_refusal, None
            self.server_state.total_requests += 1
            self._write_refusal(problem)
            return
        self._after_response()

    def _write_refusal(self, problem: ProblemError) -> None:
        body = json.dumps(problem.body()).encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            *((name.encode(), value.encode()) for name, value in problem.headers.items()),
            (b"connection", b"close"),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(STATUS_LINE[problem.status] + head + b"\r\n" + body)
        self.transport.close()
