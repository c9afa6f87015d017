"""What each feature on P1's path costs: the seed's chain posted to the app in this process,
through the real ASGI stack (no socket, no HTTP parser), with one feature taken out at a time.

`python -m bench.stack`. Each variant is timed in alternating rounds (a loaded machine slows them
alike), its per-request CPU time the least of its rounds; "cost" is full - variant. The socket's
share (uvicorn, httptools, the edge protocol, the kernel) is measured apart, over loopback, as
server CPU per request (`python -m bench.p1`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import uvloop
from fastapi import FastAPI
from starlette.types import ASGIApp, Message

from bench import bare
from bench.throughput import CHAIN
from service import wire
from service.http import app as http_app
from service.http import metrics as prometheus
from service.http.middleware import WRITE_PAUSED, RequestContext, SendTimeout
from service.settings import Settings

BODY = wire.GradientsRequest.model_validate(CHAIN).model_dump_json(exclude_unset=True).encode()


def _scope(app: ASGIApp) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/gradients",
        "raw_path": b"/v1/gradients",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
        "app": app,
        # as uvicorn's flow control says of a client that reads (service.http.middleware.Abortable)
        "extensions": {WRITE_PAUSED: _not_paused},
    }


def _not_paused() -> bool:
    return False


async def _one(app: ASGIApp) -> int:
    status = 0
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            await asyncio.sleep(3600)  # (the disconnect watcher's wait: never reached inline)
        received = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(app), receive, send)
    return status


def _gradserve(settings: Settings, without: tuple[type, ...] = (), outer: bool = True) -> FastAPI:
    """The real app, with the middleware of the classes in `without` left out; without the
    outer pair (Abortable and SecurityHeaders) when not `outer`."""
    app = http_app.create_app(settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls not in without]
    if not outer:
        app.build_middleware_stack = lambda: FastAPI.build_middleware_stack(app)  # type: ignore[method-assign]
    return app


async def _per_request_us(app: ASGIApp, n: int) -> float:
    start = time.thread_time()
    for _ in range(n):
        await _one(app)
        await asyncio.sleep(0)  # a turn of the loop between requests, as when served
    return (time.thread_time() - start) / n * 1e6


async def _measure(variants: dict[str, FastAPI], n: int, rounds: int) -> dict[str, list[float]]:
    async with contextlib.AsyncExitStack() as started:
        for app in variants.values():  # each started (its executor, ready) as when served
            await started.enter_async_context(app.router.lifespan_context(app))
            status = await _one(app)
            assert status == 200, status
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, app in variants.items():
                times[name].append(await _per_request_us(app, n))
    return times


def variants(settings: Settings) -> dict[str, Callable[[], FastAPI]]:
    quiet = settings.model_copy(update={"metrics": False})
    return {
        "gradserve, every feature": lambda: _gradserve(settings),
        "- metrics (RecordMetrics, GRADSERVE_METRICS)": lambda: _gradserve(quiet),
        "- request ids and access log (RequestContext)": lambda: _gradserve(settings, (RequestContext,)),
        "- send timeout (SendTimeout)": lambda: _gradserve(settings, (SendTimeout,)),
        "- security headers, abort (outer pair)": lambda: _gradserve(settings, outer=False),
        "- all four": lambda: _gradserve(quiet, (RequestContext, SendTimeout), outer=False),
        "bare FastAPI endpoint (validation only)": lambda: bare.app,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stack")
    parser.add_argument("-n", type=int, default=2000, help="requests per round and variant")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(isolation="thread", log_level="warning")
    apps = {name: make() for name, make in variants(settings).items()}
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the server's loop
    times = asyncio.run(_measure(apps, args.n, args.rounds))
    full = min(times["gradserve, every feature"])
    print(f"P1 in process: the chain through the ASGI stack, {args.n} x {args.rounds} rounds, us per request")
    for name, samples in times.items():
        median = min(samples)
        cost = "" if name.startswith(("gradserve", "bare")) else f"  cost {full - median:6.1f} us"
        print(f"  {name:<48} {median:7.1f} ({min(samples):.1f}-{max(samples):.1f}){cost}")
    _ = prometheus  # (the metrics are the app's own: GRADSERVE_METRICS=false takes them out)


if __name__ == "__main__":
    main()
