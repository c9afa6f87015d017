"""When to retry and how long to wait: small pure functions."""

from __future__ import annotations

import email.utils
import random
import time

from client._constants import INITIAL_RETRY_DELAY, MAX_RETRY_AFTER, MAX_RETRY_DELAY


def should_retry(status: int, problem_type: str = "") -> bool:
    """Retry overload and server errors, never another 4xx, nor a computation that ran out of
    time (it would only run out of time again)."""
    if problem_type.endswith(":deadline-exceeded"):
        return False
    return status == 429 or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), if it is usable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds < 0 or seconds > MAX_RETRY_AFTER:  # NaN, past, or absurd
        return None
    return seconds


def retry_delay(attempt: int, retry_after: float | None = None, rand: float | None = None) -> float:
    """The wait before retry number `attempt` (0-based): the server's word, else backoff with jitter."""
    if retry_after is not None:
        return retry_after
    ceiling = min(MAX_RETRY_DELAY, INITIAL_RETRY_DELAY * 2.0**attempt)
    jitter = random.random() if rand is None else rand
    return ceiling * (0.5 + 0.5 * jitter)  # between half and all of the ceiling
