"""Progress of a long computation, as events for a streamed answer (`POST /v1/sgd` with
`Accept: text/event-stream`).

A computation reports `(name, data)` pairs to a `Report` function that the transport supplies
(in a worker process, one that writes to the server's pipe): first `START` once the request
has been validated and admitted (the server answers with the stream's headers only then, so
everything refused before is a plain problem+json answer), then `PROGRESS` events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

#: the computation has passed every check and begun: the stream may start
START = "start"
#: an epoch has ended: {"epoch", "epochs", "steps", "loss"}
PROGRESS = "progress"

Report = Callable[[str, Any], None]

#: progress events are passed on at most this often; in between, only the latest is kept
INTERVAL_S = 0.1


class Throttle:
    """Pass on progress events as they come until they come faster than one per INTERVAL_S;
    then the latest one each time INTERVAL_S has passed (checked as events come), and the
    last one held back when `flush` is called (at the end)."""

    def __init__(
        self, report: Report, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.report, self.interval_s, self.clock = report, interval_s, clock  # (tests drive the clock)
        self.last = -math.inf
        self.held: dict[str, Any] | None = None

    def __call__(self, data: dict[str, Any]) -> None:
        now = self.clock()
        if now - self.last >= self.interval_s:
            self.last, self.held = now, None
            self.report(PROGRESS, data)
        else:
            self.held = data

    def flush(self) -> None:
        if self.held is not None:
            self.report(PROGRESS, self.held)
            self.held = None
