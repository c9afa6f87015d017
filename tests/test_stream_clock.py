"""The stream's timing, decided by the test and not by the machine's speed: the heartbeat in
each silence (epochs held by the test until the app has sent one) and the progress throttle
(driven by a clock the test sets)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from service.convert import progress as progress_module
from service.http.app import create_app
from service.settings import Settings
from tests.bodies import chain_request
from tests.test_stream import STREAM, events


def test_long_epochs_get_heartbeats_between_their_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat goes out in each silence longer than GRADSERVE_STREAM_HEARTBEAT_S, through the
    app's own stream route. The epochs are made long by the test, not by the machine's speed:
    each epoch's report waits until the app has sent a heartbeat since the previous progress event
    (an epoch of fixed work may take less than a heartbeat on a fast machine; a loaded one may
    stall the loop past a whole epoch), so the order below is what the code decided."""
    sent: list[str] = []  # what the app sent of the stream, in order: "heartbeat" or "progress"
    changed = threading.Condition()

    def silence_after(progress: int) -> bool:
        """Whether a heartbeat went out after the `progress`-th progress event was sent."""
        kinds = [k for k in sent if k in ("heartbeat", "progress")]
        at = [i for i, k in enumerate(kinds) if k == "progress"]
        if len(at) < progress:
            return False
        return "heartbeat" in kinds[at[progress - 1] + 1 if progress else 0 :]

    class LongEpochs(progress_module.Throttle):
        def __init__(self, report: progress_module.Report) -> None:
            super().__init__(report, interval_s=0.0)  # every epoch's event passed on

        def __call__(self, data: dict[str, Any]) -> None:
            with changed:  # (a generous bound: the relay's first heartbeat is due in 0.01 s)
                changed.wait_for(lambda: silence_after(data["epoch"]), timeout=30)
            super().__call__(data)

    monkeypatch.setattr(progress_module, "Throttle", LongEpochs)
    settings = Settings(inline_ms=0, isolation="thread", stream_heartbeat_s=0.01)

    async def go() -> None:
        app = create_app(settings)

        async def watched(scope: Any, receive: Any, send: Any) -> None:
            async def sending(message: dict[str, Any]) -> None:
                body = message.get("body", b"")
                kind = (
                    "heartbeat"
                    if body == b": heartbeat\n\n"
                    else "progress"
                    if b"event: progress" in body
                    else ""
                )
                with changed:
                    sent.append(kind)
                    changed.notify_all()
                await send(message)

            await app(scope, receive, sending)

        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=watched)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gradserve", timeout=60
            ) as http:
                body = chain_request(learning_rate=0.1, epochs=3)
                response = await http.post("/v1/sgd", json=body, headers=STREAM)
        assert response.status_code == 200
        names = [name for name, _ in events(iter(response.text.splitlines()))]
        assert names[-1] == "result"
        at = [i for i, name in enumerate(names) if name == "progress"]
        assert len(at) == 3
        # a heartbeat while the first epoch ran, and while each later one did
        for start, end in zip([0, *at], at, strict=False):
            assert "" in names[start:end], names

    asyncio.run(go())


def test_the_throttle_passes_the_latest_event_once_its_interval_has_passed() -> None:
    """Driven by a clock the test sets: which events pass is decided by the times alone."""
    now, passed = [0.0], []
    throttle = progress_module.Throttle(lambda name, data: passed.append((name, data)), 0.1, lambda: now[0])
    for t, epoch in [(0.0, 0), (0.05, 1), (0.09, 2), (0.1, 3), (0.15, 4), (0.25, 5), (0.3, 6), (0.31, 7)]:
        now[0] = t
        throttle({"epoch": epoch})
    assert [data["epoch"] for _, data in passed] == [0, 3, 5]  # the first, then each 0.1 s on
    throttle.flush()
    throttle.flush()  # (the held one once)
    assert [data["epoch"] for _, data in passed] == [0, 3, 5, 7]  # and the last one held back
    assert {name for name, _ in passed} == {progress_module.PROGRESS}
