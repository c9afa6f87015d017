"""A graceful shutdown: new compute requests refused on SIGTERM, the rest drained before the grace ends."""

from __future__ import annotations

import asyncio
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from service.problems import (
    ShuttingDownError,
)


class Shutdown:
    """SIGTERM (or SIGINT) as the compute routes see it.

    uvicorn, told to stop, closes its listeners, waits up to its grace period for the requests
    in flight, then cancels what is left (whose clients got a plain-text 500) and only then
    runs the lifespan's shutdown. So the signal is caught here too: from then on a new compute
    request is a 503 `shutting-down`, and `DRAIN_MARGIN_S` before the grace ends, every
    request still waiting for its body, a slot or its computation is cancelled (which stops
    the computation) and answered 503 `shutting-down` with Retry-After, while uvicorn still
    sends answers.
    """

    #: the drain comes this long before the grace ends, so its answers go out within the grace
    DRAIN_MARGIN_S = 1.0

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.started = False  # a signal came: no new compute requests
        self.draining = False  # the grace is (nearly) over: nothing more is computed
        self.tasks: set[asyncio.Task[Any]] = set()  # the compute requests not yet answered

    def problem(self) -> ShuttingDownError:
        return ShuttingDownError(
            "the server is shutting down; try again (another replica, or this one once restarted)",
            headers={"retry-after": "1", "connection": "close"},
        )

    def refuse_new(self) -> None:
        if self.started:
            raise self.problem()

    def begin(self) -> None:
        """The signal came: refuse new compute requests, and drain at the end of the grace."""
        if not self.started:
            self.started = True
            asyncio.get_running_loop().call_later(max(0.0, self.grace_s - self.DRAIN_MARGIN_S), self.drain)

    def drain(self) -> None:
        """Cancel every compute request not yet answered: each is answered 503."""
        self.started = self.draining = True
        for task in self.tasks:
            task.cancel()

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """While inside, SIGTERM and SIGINT also `begin` the shutdown, before the handlers
        already installed (uvicorn's) run. Only signals that already have a Python handler are
        chained, so a process where SIGTERM would kill is left as it is."""
        loop = asyncio.get_running_loop()
        chained: dict[int, Callable[[int, FrameType | None], Any]] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous = signal.getsignal(sig)
                if callable(previous):
                    chained[sig] = previous
                    signal.signal(sig, functools.partial(_chain, loop, self.begin, previous))
        try:
            yield
        finally:
            for number, handler in chained.items():
                signal.signal(number, handler)


def _chain(
    loop: asyncio.AbstractEventLoop,
    begin: Callable[[], None],
    previous: Callable[[int, FrameType | None], Any],
    sig: int,
    frame: FrameType | None,
) -> None:
    loop.call_soon_threadsafe(begin)
    previous(sig, frame)
