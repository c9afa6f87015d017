"""Bytes in flight both ways: a body read within its limits and held as it arrives, an answer
held until it has gone out in pieces (and evicted when its client stops reading), both against
one limit (`Inflight`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from service.http.middleware import ConnectionDroppedError
from service.pipeline.dispatch import Reply
from service.problems import (
    BodyTooLargeError,
    LimitExceededError,
    OverloadedError,
    RequestTimeoutError,
)
from service.settings import Limits
from service.transport.executors import Executor
from service.transport.shared import ReceivedBody, SharedBody

#: a body of at most this many bytes may take the in-flight budget's reserve (Inflight): the
#: small requests, a 400-byte gradients request as much as the largest that may run inline
SMALL_BODY_BYTES = 64 * 1024

#: answers go out in pieces of this size, so that uvicorn's flow control holds the next piece
#: back until the client has read the last: a client that does not read holds one piece in the
#: transport, never a copy of the whole answer
SEND_CHUNK = 256 * 1024

#: a piece of an answer not taken by its client within this long counts as stalled
STALLED_AFTER_S = 0.1


class ClientGoneError(Exception):
    """The client disconnected before it was answered: there is no one to answer."""


class Inflight:
    """The bytes of request bodies (counted as they arrive, while they wait and compute) and of
    answers not yet sent, held at once, against a limit: bodies are read before a computation
    slot is free, and answers wait for their clients to read them, so without one, many
    clients posting large bodies, or not reading large answers, could fill the server's memory."""

    def __init__(self, limit: int, reserve: int = 0) -> None:
        self.limit, self.held = limit, 0
        # The reserve is headroom for small requests, a rule rather than a race: the bytes of a
        # body still arriving, whatever its size, may take the held bytes only up to `limit -
        # reserve`; only a small body (at most SMALL_BODY_BYTES) whose last bytes are here may
        # take the reserve. So clients uploading slowly, or stalling just before their end, hold
        # at most `limit - reserve` however many they are, and a small request that arrives
        # whole is served until its own kind fills the reserve. (A minimum rate or a share per
        # connection would also cut off honest slow links and honest large bodies.)
        self.reserve = min(reserve, limit // 2)
        self._freed = asyncio.Event()
        self._stalled: dict[asyncio.Event, int] = {}  # answers whose clients stopped reading: their bytes

    def bound(self, size: int, whole: bool = True) -> int:
        """What may be held at once when a body of `size` bytes (so far) takes its next bytes,
        `whole` when they are its last."""
        return self.limit if whole and size <= SMALL_BODY_BYTES else self.limit - self.reserve

    def could_fit(self, size: int) -> None:
        """A 413 for a body larger than all that may be held at once: waiting would not help."""
        if size > self.bound(size):
            reserved = (
                f" less the {self.reserve:,} bytes kept for small bodies (GRADSERVE_INFLIGHT_RESERVE_BYTES)"
                if self.reserve and size > SMALL_BODY_BYTES
                else ""
            )
            raise LimitExceededError(
                f"the body is {size:,} bytes, over max_inflight_bytes = {self.limit:,}{reserved}, the "
                "bytes of bodies the server holds at once (set by GRADSERVE_MAX_INFLIGHT_BYTES)"
            )

    def take(self, size: int, body: int = 0, whole: bool = True) -> None:
        """Hold `size` more bytes of a body (`body` bytes of it arrived so far, these included;
        `whole` when they are its last), or a 503 when that would pass its bound even once the
        answers of clients that stopped reading are evicted (they pay for the room)."""
        bound = self.bound(body, whole)
        if self.held + size > bound and self.held + size - self._evict(self.held + size - bound) > bound:
            kept = (
                f" ({self.reserve:,} of them kept for bodies of at most {SMALL_BODY_BYTES:,} bytes "
                "that have arrived whole, GRADSERVE_INFLIGHT_RESERVE_BYTES)"
                if bound < self.limit
                else ""
            )
            raise OverloadedError(
                f"the server holds {self.held:,} bytes of requests and answers and this body would "
                f"pass max_inflight_bytes = {self.limit:,}{kept} (set by GRADSERVE_MAX_INFLIGHT_BYTES); "
                "try again shortly",
                headers={"retry-after": "1"},
            )
        self.held += size

    def hold(self, size: int) -> None:
        """Hold an answer's bytes, even past the limit: they exist already, and sending them is
        how they go (bodies arriving meanwhile find the limit passed, and get a 503)."""
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size
        self._freed.set()

    def _evict(self, needed: int) -> int:
        """Evict the answers stalled longest until `needed` bytes are on their way back (or none
        are left); the bytes they will give back."""
        freed = 0
        while freed < needed and self._stalled:
            oldest, size = next(iter(self._stalled.items()))
            oldest.set()
            self.unstalled(oldest)
            freed += size
        return freed

    async def room(self) -> None:
        """Once what is held is within the limit: a computation starts only then, so that answers
        waiting for clients that do not read them do not pile up. While it is not, the answer
        whose client has stalled longest is evicted (its connection dropped): clients that do not
        read pay for the room, not the clients waiting behind them."""
        while self.held > self.limit:
            self._evict(1)
            self._freed.clear()
            await self._freed.wait()

    def stalled(self, size: int) -> asyncio.Event:
        """An answer of `size` bytes whose client stopped reading: the event is set when it is
        to be evicted."""
        evicted = asyncio.Event()
        self._stalled[evicted] = size
        self._freed.set()  # a computation waiting for room may evict it
        return evicted

    def unstalled(self, evicted: asyncio.Event) -> None:
        self._stalled.pop(evicted, None)


@asynccontextmanager
async def receive_body(
    scope: Scope, receive: Receive, limits: Limits, executor: Executor, inflight: Inflight
) -> AsyncIterator[ReceivedBody]:
    """The request body, refused with 413 as soon as it passes the size limit, with 408 if it
    has not all arrived within `body_timeout_s`, and held against the in-flight limit as it
    arrives (503 when that is full) until the request is answered.

    A large one with a Content-Length goes into shared memory for a worker process, each chunk's
    room reserved as it arrives; when /dev/shm has no room left, what has arrived is copied out
    and the rest is read in here.
    """
    limit = limits.max_body_bytes
    declared = Headers(scope=scope).get("content-length", "")
    digits = declared.lstrip("0") or "0"  # (leading zeros are legal, and int() refuses 4,300 digits)
    length = (int(digits) if len(digits) <= 20 else 10**20) if declared.isdigit() else None
    if length is not None:
        if length > limit:
            raise BodyTooLargeError(_too_large(length, limit))
        inflight.could_fit(length)
    held = 0
    shared = None
    if length is not None and length >= SharedBody.MIN_SIZE and executor.segments is not None:
        shared = executor.segments.body(length)
    try:
        chunks, size = [], 0
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                async for chunk, last in _chunks(receive):
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLargeError(_too_large(size, limit, at_least=True))
                    inflight.could_fit(size)
                    inflight.take(len(chunk), size, whole=last)
                    held += len(chunk)
                    if shared is not None and _written(shared, chunk, executor):
                        continue
                    if shared is not None:  # no room in /dev/shm: read the body in here
                        chunks.append(shared.to_memory())
                        shared = None
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the body had not all arrived after {limits.body_timeout_s:g} s "
                f"({size:,} of {f'{length:,}' if length is not None else 'an unknown number of'} "
                "bytes; GRADSERVE_BODY_TIMEOUT_S)",
                headers={"connection": "close"},
            ) from None
        if shared is not None:
            yield shared
        else:
            yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        if shared is not None:
            shared.release()
        inflight.give(held)


def _written(shared: SharedBody, chunk: bytes, executor: Executor) -> bool:
    """Whether `chunk` went into shared memory (after dropping idle segments if need be)."""
    for _ in range(2):
        try:
            shared.write(chunk)
            return True
        except OSError:  # ENOSPC: /dev/shm is full
            if executor.segments is None or not executor.segments.make_room():
                return False
    return False


async def _chunks(receive: Receive) -> AsyncIterator[tuple[bytes, bool]]:
    """A body's chunks as they arrive, each with whether it is the last."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        last = not message.get("more_body", False)
        yield message.get("body", b""), last
        if last:
            return


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (
        f"the body is {'over ' if at_least else ''}{size:,} bytes, over the limit "
        f"max_body_bytes = {limit:,} (set by GRADSERVE_MAX_BODY_BYTES)"
    )


async def disconnected(receive: Receive) -> None:
    """Once the client has hung up (after the whole body has been read, the next thing
    `receive` says is http.disconnect: when the client goes, or once the answer has been sent)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_reply(reply: Reply, send: Send, inflight: Inflight) -> None:
    """Send an answer, its bytes held against the in-flight limit until they have gone."""
    content = reply.content
    headers = [
        (b"content-type", reply.media_type.encode()),
        (b"content-length", str(len(content)).encode()),
        *((k.encode(), v.encode()) for k, v in reply.headers.items()),
    ]
    inflight.hold(len(content))
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if len(content) <= SEND_CHUNK:
            await send({"type": "http.response.body", "body": content})
            return
        for at in range(0, len(content), SEND_CHUNK):
            end = at + SEND_CHUNK
            more = end < len(content)
            piece = {"type": "http.response.body", "body": content[at:end], "more_body": more}
            await send_piece(send, piece, inflight, len(content))
    finally:
        inflight.give(len(content))


async def send_piece(send: Send, message: dict[str, Any], inflight: Inflight, size: int) -> None:
    """Send one piece of an answer of `size` bytes; while its client does not read, the answer
    may be evicted (its connection dropped) to make room for bodies and computations."""
    sending = asyncio.ensure_future(send(message))
    done, _ = await asyncio.wait({sending}, timeout=STALLED_AFTER_S)
    if done:
        return sending.result()
    evicted = inflight.stalled(size)
    waiting = asyncio.ensure_future(evicted.wait())
    try:
        await asyncio.wait({sending, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if sending.done():
            return sending.result()
        raise ConnectionDroppedError  # (the connection is aborted; its bytes are let go)
    finally:
        inflight.unstalled(evicted)
        waiting.cancel()
        sending.cancel()
