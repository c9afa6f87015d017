"""GET /metrics: the service's numbers in the Prometheus text format (prometheus-client).

What requests do is counted as each one ends (`RecordMetrics`, a pure ASGI middleware); what
the server holds (slots, requests waiting, bytes in flight, worker processes) is sampled every
SAMPLE_EVERY_S by each process, and once more by the one that answers a scrape.

With several uvicorn processes (`--workers N`), `python -m service` points
PROMETHEUS_MULTIPROC_DIR at a fresh directory (see `multiprocess_dir`): each process writes its
numbers there, and a scrape, whichever process answers it, adds them all up: counters and
histograms over every process that ever served, gauges over the processes alive. A process
that exits takes its gauges out (`mark_process_dead`); those of one killed outright are taken
out at the next scrape.

GRADSERVE_METRICS=false serves no /metrics and counts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import shutil
import tempfile
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http import memory
from service.http.runtime import Runtime
from service.problems import PROBLEM_TYPE, DeadlineExceededError, OutOfMemoryError
from service.transport.executors import ProcessExecutor
from service.transport.pool import CAUSES

#: the environment variable of prometheus-client's multiprocess mode
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: seconds between two samples of what the server holds
SAMPLE_EVERY_S = 1.0

#: the `status` of a request whose client went away before it was answered (nginx's 499)
CLIENT_GONE = "499"

#: the `endpoint` of a path the service does not serve
OTHER = "other"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = tuple(float(4**k) for k in range(4, 15))  # 256 B .. 256 MiB

STOPPED_REASONS = ("deadline", "client-gone", "out-of-memory")

#: the 503 problems that stop a computation, by their type: its reason
STOPPED_BY = {
    PROBLEM_TYPE + DeadlineExceededError.slug: "deadline",
    PROBLEM_TYPE + OutOfMemoryError.slug: "out-of-memory",
}


class Metrics:
    """The metrics of one app, in a registry of their own (several apps may share a process)."""

    def __init__(self, paths: Iterable[str], prefixes: Iterable[str], compute_paths: Iterable[str]) -> None:
        self.compute_paths = frozenset(compute_paths)
        self.paths = frozenset(paths) | self.compute_paths
        self.prefixes = tuple(prefixes)
        self.registry = registry = CollectorRegistry()
        if not multiprocess():
            ProcessCollector(registry=registry)
        self.requests = Counter(
            "gradserve_requests",
            "Requests answered, by endpoint and status (499: the client went away first)",
            ["endpoint", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "gradserve_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.body_bytes = Histogram(
            "gradserve_request_body_bytes",
            "Bytes of request bodies received, by endpoint",
            ["endpoint"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.answer_bytes = Histogram(
            "gradserve_response_body_bytes",
            "Bytes of answers sent, by endpoint",
            ["endpoint"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.slots = self._gauge("gradserve_slots", "Computation slots (GRADSERVE_MAX_CONCURRENT)")
        self.slots_in_use = self._gauge("gradserve_slots_in_use", "Computation slots taken")
        self.waiting = self._gauge("gradserve_requests_waiting", "Requests waiting for a computation slot")
        self.inflight = self._gauge(
            "gradserve_inflight_bytes",
            "Bytes of request bodies and unsent answers held (against GRADSERVE_MAX_INFLIGHT_BYTES)",
        )
        self.server_rss = self._gauge(
            "gradserve_server_rss_bytes",
            "Resident memory of the server process (with several, their sum), its compute workers "
            "not included: it returns to near its idle size once bodies and answers are let go",
        )
        self.workers_alive = self._gauge("gradserve_workers_alive", "Compute worker processes alive")
        self.workers_started = Counter(
            "gradserve_workers_started", "Compute worker processes started", registry=registry
        )
        self.workers_replaced = Counter(
            "gradserve_workers_replaced",
            "Compute worker processes replaced, by cause: died, cancelled (its request was given up), "
            "recycled (GRADSERVE_WORKER_MAX_TASKS), over-memory (GRADSERVE_WORKER_MAX_RSS_BYTES), "
            "out-of-memory (a MemoryError computing a request)",
            ["cause"],
            registry=registry,
        )
        self.stopped = Counter(
            "gradserve_computations_stopped",
            "Computations stopped: at the deadline (GRADSERVE_TIMEOUT_S), because the client "
            "went away after sending its request (stopped, or given up while waiting for a slot), "
            "or out of memory (a 503 out-of-memory)",
            ["reason"],
            registry=registry,
        )
        for cause in CAUSES:
            self.workers_replaced.labels(cause)
        for reason in STOPPED_REASONS:
            self.stopped.labels(reason)
        self._counted: Tally[str] = Tally()  # the pool's counts already added to the counters
        self._series: dict[tuple[str, str], tuple[Counter, Histogram, Histogram, Histogram]] = {}

    def _gauge(self, name: str, documentation: str) -> Gauge:
        # livesum: with several processes, the sum over those alive
        return Gauge(name, documentation, multiprocess_mode="livesum", registry=self.registry)

    def endpoint(self, path: str) -> str:
        """A request's `endpoint` label: its path when the service serves it, the prefix of a
        page's files, or "other" (so that scanners cannot make up series)."""
        if path in self.paths:
            return path
        for prefix in self.prefixes:
            if path.startswith(prefix):
                return prefix
        return OTHER

    def record(
        self, endpoint: str, status: str, seconds: float, received: int, sent: int, stopped: str | None
    ) -> None:
        counted = self._series.get((endpoint, status))
        if counted is None:  # (a series' children looked up once: `labels` takes a lock each time)
            counted = self._series[endpoint, status] = (
                self.requests.labels(endpoint, status),
                self.duration.labels(endpoint),
                self.body_bytes.labels(endpoint),
                self.answer_bytes.labels(endpoint),
            )
        requests, duration, body_bytes, answer_bytes = counted
        requests.inc()
        duration.observe(seconds)
        body_bytes.observe(received)
        answer_bytes.observe(sent)
        if stopped is not None:
            self.stopped.labels(stopped).inc()

    def sample(self, runtime: Runtime) -> None:
        """Set the gauges from a running app, and add the pool's new counts to the counters."""
        slots = runtime.slots
        self.slots.set(slots.size)
        self.slots_in_use.set(slots.taken)
        self.waiting.set(slots.waiting)
        self.inflight.set(runtime.inflight.held)
        self.server_rss.set(memory.rss_bytes())
        executor = runtime.executor
        if not isinstance(executor, ProcessExecutor):
            return
        self.workers_alive.set(len(executor.pool.workers))
        counts = executor.counts
        for name in ("started", *CAUSES):
            new = counts[name] - self._counted[name]
            if new > 0:
                self._counted[name] += new
                counter = self.workers_started if name == "started" else self.workers_replaced.labels(name)
                counter.inc(new)

    async def sampling(self, runtime: Runtime) -> None:
        """Sample every SAMPLE_EVERY_S, until cancelled."""
        while True:
            self.sample(runtime)
            await asyncio.sleep(SAMPLE_EVERY_S)

    def exposition(self) -> bytes:
        """Every metric, in the text format: this process's, or all processes' in multiprocess mode."""
        path = multiprocess()
        if path is None:
            return generate_latest(self.registry)
        forget_dead_processes(path)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def exiting(self) -> None:
        """This process is about to exit: its gauges no longer count."""
        path = multiprocess()
        if path is not None:
            mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def multiprocess() -> str | None:
    """The directory of prometheus-client's multiprocess mode, when it is on."""
    return os.environ.get(MULTIPROC_DIR) or None


_LIVE_GAUGE = re.compile(r"gauge_live\w*?_(\d+)\.db$")


def forget_dead_processes(path: str) -> None:
    """Take the gauges of processes that are gone (killed before they could say so) out."""
    files = glob.glob(os.path.join(path, "gauge_live*.db"))
    pids = {int(m.group(1)) for f in files if (m := _LIVE_GAUGE.search(f))}
    for pid in pids:
        try:
            os.kill(pid, 0)  # (signal 0: nothing is sent; only whether the process is there)
        except ProcessLookupError:
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # there, someone else's


@contextlib.contextmanager
def multiprocess_dir(workers: int) -> Iterator[None]:
    """For `workers` > 1 uvicorn processes: PROMETHEUS_MULTIPROC_DIR, a fresh directory removed
    afterwards (set before any of them starts, and imports prometheus-client). Left alone when
    the operator set it."""
    if workers <= 1 or multiprocess() is not None:
        yield
        return
    path = tempfile.mkdtemp(prefix="gradserve-metrics-")
    os.environ[MULTIPROC_DIR] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_DIR, None)
        shutil.rmtree(path, ignore_errors=True)


class RecordMetrics:
    """Count each request as it ends: its endpoint and status, its time, the bytes of its body
    and of its answer; and a computation stopped at the deadline or by its client going away."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, received, sent = 0, 0, 0
        body_done = gone = False
        problem: bytes | None = None  # the first piece of a 503 problem, to tell a deadline
        streaming = finished = False  # an event stream (POST /v1/sgd's), and whether it ended

        async def counting_receive() -> Message:
            nonlocal received, body_done, gone
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
            elif message["type"] == "http.disconnect" and (not status or (streaming and not finished)):
                gone = True
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent, problem, streaming, finished
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 503:
                    problem = b""
                streaming = (
                    dict(message.get("headers", ()))
                    .get(b"content-type", b"")
                    .startswith(b"text/event-stream")
                )
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                sent += len(body)
                finished = not message.get("more_body", False)
                if problem == b"":
                    problem = bytes(body)
                elif streaming and body.startswith(STREAMED_ERROR):  # a problem after it began
                    problem = bytes(body[len(STREAMED_ERROR) :])
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            endpoint = self.metrics.endpoint(scope["path"])
            stopped = _stopped_by(problem) if problem else None
            if stopped is None and gone and (not status or streaming) and body_done:
                stopped = "client-gone" if endpoint in self.metrics.compute_paths else None
            self.metrics.record(
                endpoint,
                str(status) if status else CLIENT_GONE,
                time.perf_counter() - start,
                received,
                sent,
                stopped,
            )


#: how a streamed answer's problem begins (service.http.events)
STREAMED_ERROR = b"event: error\ndata: "


def _stopped_by(problem: bytes) -> str | None:
    """The reason a 503 problem stopped its computation (STOPPED_BY), if it is one of those."""
    try:
        kind = orjson.loads(problem).get("type", "")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return STOPPED_BY.get(kind) if isinstance(kind, str) else None


def mount(
    app: FastAPI, routers: Iterable[APIRouter], prefixes: Iterable[str], compute_paths: Iterable[str]
) -> Metrics:
    """GET /metrics (behind the API key like every path but the health checks), and the metrics
    it shows; once the app's other routes are there (theirs and the `routers`' paths, those of
    `compute_paths` and the `prefixes` of files are the `endpoint` labels)."""

    @app.get("/metrics", include_in_schema=False)
    async def exposition(request: Request) -> Response:
        metrics.sample(Runtime.of(request.scope))
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    routes = [*app.routes, *(route for router in routers for route in router.routes)]
    paths = [path for route in routes if "{" not in (path := getattr(route, "path", "{"))]
    metrics = Metrics(paths, prefixes, compute_paths)
    return metrics
