"""Admission to compute: one of the computation slots (`Slots`), taken once one is free and the
bytes held in flight (service.http.inflight) are within their limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from service.http.inflight import Inflight
from service.problems import OverloadedError
from service.settings import Settings


class Slots(asyncio.Semaphore):
    """The `size` computation slots, counting the requests that hold one and those waiting."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size, self.taken, self.waiting = size, 0, 0

    async def acquire(self) -> Literal[True]:
        self.waiting += 1
        try:
            await super().acquire()
        finally:
            self.waiting -= 1
        self.taken += 1
        return True

    def release(self) -> None:
        self.taken -= 1
        super().release()


@asynccontextmanager
async def computation_slot(
    slots: asyncio.Semaphore, inflight: Inflight, settings: Settings
) -> AsyncIterator[None]:
    """One of the `max_concurrent` computation slots, once one is free and the bytes held are
    within max_inflight_bytes (a 503 if not soon). A slot taken is given back whatever ends
    the wait or the computation: a timeout, a hang-up, the shutdown's drain."""
    try:
        async with asyncio.timeout(settings.queue_timeout_s):
            await slots.acquire()
    except TimeoutError:
        raise _overloaded(f"all {settings.max_concurrent} computation slots stayed busy", settings) from None
    try:
        try:
            async with asyncio.timeout(settings.queue_timeout_s):
                await inflight.room()
        except TimeoutError:
            raise _overloaded(
                f"answers not yet read held over max_inflight_bytes = {inflight.limit:,}", settings
            ) from None
        yield
    finally:
        slots.release()


def _overloaded(busy: str, settings: Settings) -> OverloadedError:
    return OverloadedError(
        f"{busy} for {settings.queue_timeout_s:g} s (GRADSERVE_MAX_CONCURRENT, "
        "GRADSERVE_MAX_INFLIGHT_BYTES, GRADSERVE_QUEUE_TIMEOUT_S); try again shortly",
        headers={"retry-after": "1"},
    )
