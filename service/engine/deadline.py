"""A time limit on the passes, checked cooperatively once per level and per step."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from service.engine.errors import DeadlineExceeded

_deadline: ContextVar[tuple[float, float]] = ContextVar("gradserve_deadline", default=(math.inf, math.inf))


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Let the passes below run for at most `seconds`."""
    token = _deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def checkpoint() -> None:
    """Raise DeadlineExceeded once the time limit has passed, so the caller's worker is freed."""
    at, seconds = _deadline.get()
    if time.monotonic() > at:
        raise DeadlineExceeded(seconds)
