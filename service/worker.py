"""Where computations run.

`handle` does a compute request's whole job, from the body's bytes to the answer's bytes:
validate, compute, serialise. By default it runs in a pool of worker processes, so neither
parsing (pydantic holds the GIL while it builds a large body: ~200 ms for 32 MiB of nested
lists) nor NumPy ever stalls the server's event loop; a worker that dies takes one request
with it, not the server; and recycled workers hand their memory back. With
GRADSERVE_ISOLATION=thread it runs in the server's own threads instead (for embedding and
debugging).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.shared_memory import SharedMemory
from typing import Any, NamedTuple, Protocol, TypeVar

import anyio.to_thread
import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from service import compute, costs, explain, gradcheck, render, requests, selfcheck, wire
from service.arrays import dumps
from service.errors import ProblemError, WorkerLostError, schema_problem
from service.pool import Pool, WorkerDiedError
from service.render import Document
from service.settings import Limits, Settings

log = logging.getLogger("gradserve")

M = TypeVar("M", bound=BaseModel)


class Reply(NamedTuple):
    """An answer, ready to send: what crosses back from a worker."""

    status: int
    content: bytes
    media_type: str
    headers: dict[str, str]
    in_shared: int = 0  # > 0: the content is the first `in_shared` bytes of the body's shared memory


def parse(model: type[M], body: bytes) -> M:
    """Validate a body straight from its bytes; NaN and Infinity never get in."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise schema_problem(exc.errors(include_input=False, include_url=False), model) from None


ENDPOINTS: dict[str, tuple[type[BaseModel], Callable[[Any, Limits], dict[str, Any] | Document]]] = {
    "forward": (wire.ForwardRequest, compute.forward),
    "gradients": (wire.GradientsRequest, compute.gradients),
    "sgd": (wire.SgdRequest, compute.sgd),
    "explain": (wire.ExplainRequest, explain.explain),
    "check": (wire.CheckRequest, gradcheck.check),
    "render": (wire.RenderRequest, functools.partial(render.render, fmt="svg")),
    "render.dot": (wire.RenderRequest, functools.partial(render.render, fmt="dot")),
    "render.layout": (wire.RenderRequest, functools.partial(render.render, fmt="layout")),
    "render.layout.vertical": (
        wire.RenderRequest,
        functools.partial(render.render, fmt="layout", vertical=True),
    ),
}


def handle(endpoint: str, body: bytes, limits: Limits) -> Reply:
    """One compute request, from the body's bytes to the answer's bytes."""
    reply = _handle(endpoint, body, limits, None)
    assert reply is not None  # only a budget hands a request on
    return reply


def _handle(endpoint: str, body: bytes, limits: Limits, budget_ms: float | None) -> Reply | None:
    """`handle`; with a budget, None (handed on) as soon as its estimate is over `budget_ms`."""
    model, run = ENDPOINTS[endpoint]
    try:
        counts = costs.BodyCounts.of(body)
        if budget_ms is not None and counts.parse_ns() / 1e6 > budget_ms:
            return None  # even parsing it would hold the event loop too long
        costs.check_body(endpoint, body, counts, limits)
        request = parse(model, body)
        cost = costs.estimate(endpoint, request, limits, counts)
        costs.admit(endpoint, request, cost, limits)
        if budget_ms is not None and cost.ms > budget_ms:
            return None
        # Every endpoint runs under the time limit and without NumPy's floating-point warnings:
        # overflow is reported afterwards, by name (a 422 naming the unit or weight); the
        # warnings would only repeat it, or, where warnings are errors, turn it into a 500.
        with (
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
            requests.time_limit(limits.timeout_s),
        ):
            result = run(request, limits)
        if isinstance(result, Document):
            return Reply(200, result.content, result.media_type, {})
        encoding: wire.ArrayEncoding = getattr(request, "array_encoding", "list")
        return Reply(200, dumps(result, encoding), "application/json", {})
    except ProblemError as exc:
        return problem_reply(exc)


def problem_reply(exc: ProblemError) -> Reply:
    return Reply(exc.status, orjson.dumps(exc.body()), "application/problem+json", exc.headers)


#: endpoints that may be computed on the server's event loop, when their estimate is small
INLINE = frozenset({"forward", "gradients", "sgd"})


def handle_inline(endpoint: str, body: bytes, limits: Limits, budget_ms: float) -> Reply | None:
    """`handle`, on the calling thread, if the whole request (parse, computation, answer) is
    estimated to take under `budget_ms`; else None, having spent only a scan of the bytes, or
    their parse and the estimate.

    The chain x -> j -> k -> o takes ~0.2 ms to answer; the hop to a worker process and back cost more
    than that, and tiny requests are most requests.
    """
    if endpoint not in INLINE or budget_ms <= 0:
        return None
    return _handle(endpoint, body, limits, budget_ms)


def handle_shared(endpoint: str, name: str, size: int, limits: Limits) -> Reply:
    """`handle` for a body the server wrote into shared memory; an answer that fits goes back
    the same way, over the body (a 2.9 MB answer took ~3 ms pickled through the pool's pipe,
    and the server's GIL while it was unpickled)."""
    shm = SharedMemory(name=name)
    try:
        buf = shm.buf
        assert buf is not None  # None only once closed
        reply = handle(endpoint, bytes(buf[:size]), limits)
        if len(reply.content) > shm.size:
            return reply
        try:  # only the body's own bytes were reserved by the server
            reserve(shm, 0, len(reply.content))
        except OSError:
            return reply
        buf[: len(reply.content)] = reply.content
        return reply._replace(content=b"", in_shared=len(reply.content))
    finally:
        shm.close()


class Segments:
    """Shared memory segments for large bodies, their memory reserved, kept between requests.

    A fresh segment costs a page fault per 4 KiB the first time it is written: filling a new
    5 MB one took ~5 ms, a kept one ~0.5. Idle segments are kept up to `keep_bytes` in all
    (sizes come in classes, so a body finds one of its class); the rest are unlinked.
    A body is read only up to its own length, so what an earlier one left behind is never seen.

    /dev/shm is often small (64 MiB in Docker and in deploy/kubernetes), and a write into a
    page it has no room for kills the writer with SIGBUS. So every range is reserved
    (posix_fallocate, which says ENOSPC instead) before it is written: a body's as its bytes
    arrive (see `SharedBody.write`), never as its Content-Length declares, so a client that
    declares 32 MiB and sends one byte holds one page of /dev/shm, not 32 MiB.
    """

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self.idle: list[SharedMemory] = []
        self.closed = False

    @staticmethod
    def size_class(size: int) -> int:
        """`size` rounded up to a step of at most an eighth of it (so little is reserved in vain)."""
        step = 1 << max(size.bit_length() - 4, 12)
        return -(-max(size, 1) // step) * step

    def body(self, size: int) -> SharedBody | None:
        """A segment mapped for a body of `size` bytes (none of it reserved yet), or None when
        there is no /dev/shm."""
        want = self.size_class(size)
        for k, shm in enumerate(self.idle):
            if shm.size == want:
                return SharedBody(self.idle.pop(k), size, self)
        try:
            return SharedBody(SharedMemory(create=True, size=want), size, self)
        except OSError:  # no /dev/shm at all, or no descriptors left
            return None

    def make_room(self) -> bool:
        """Drop the idle segments, if any, so that a body arriving finds room; say whether any were."""
        dropped = bool(self.idle)
        self._drop_idle()
        return dropped

    def give_back(self, shm: SharedMemory) -> None:
        if not self.closed and sum(s.size for s in self.idle) + shm.size <= self.keep_bytes:
            self.idle.append(shm)
        else:
            _unlink(shm)

    def close(self) -> None:
        """Unlink what is kept, and from now on whatever is given back (a request that ends
        after the shutdown)."""
        self.closed = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        while self.idle:
            _unlink(self.idle.pop())


def reserve(shm: SharedMemory, start: int, length: int) -> None:
    """Reserve `length` bytes of `shm` from `start` in /dev/shm: OSError (ENOSPC) where a write
    would instead die of SIGBUS."""
    if length > 0:
        os.posix_fallocate(shm._fd, start, length)  # type: ignore[attr-defined]  # (its descriptor)


def _unlink(shm: SharedMemory) -> None:
    shm.close()
    shm.unlink()


def shm_bytes() -> int:
    """The size of /dev/shm (0 where there is none)."""
    try:
        fs = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return fs.f_blocks * fs.f_frsize


class SharedBody:
    """A large body written once, as it arrives, into shared memory that a worker reads.

    Sent through the pool's pipe instead, a 32 MiB body is copied three times more in the
    server process (joined, pickled, written), and those copies held its event loop: under
    eight clients posting such bodies, /healthz's p99 was 135-195 ms.
    """

    #: smaller bodies go through the pipe: shared memory costs a few system calls
    MIN_SIZE = 1 << 20

    def __init__(self, shm: SharedMemory, size: int, segments: Segments) -> None:
        self.shm, self.segments = shm, segments
        self.declared = size  # the segment may be larger
        self.size = 0
        self.lent = False  # a worker may be using it: never handed on to another body then

    @property
    def view(self) -> memoryview:
        buf = self.shm.buf
        assert buf is not None  # None only once closed
        return buf

    def write(self, chunk: bytes) -> None:
        """Append a chunk, its range of /dev/shm reserved first: OSError (ENOSPC) when there is
        no room for it, and then nothing is written."""
        end = self.size + len(chunk)
        if end > self.declared:
            raise ValueError("the body is longer than its Content-Length")
        if chunk:
            reserve(self.shm, self.size, len(chunk))
        self.view[self.size : end] = chunk
        self.size = end

    def to_memory(self) -> bytes:
        """What has arrived, copied out; the segment is given back."""
        data = bytes(self.view[: self.size])
        self.release()
        return data

    def release(self) -> None:
        if self.lent:  # (a request given up while its worker computes: that worker may still write here)
            _unlink(self.shm)
        else:
            self.segments.give_back(self.shm)


Body = bytes | SharedBody


class Executor(Protocol):
    segments: Segments | None  # where large bodies go for the workers; None: kept as bytes

    async def run(self, endpoint: str, body: Body, limits: Limits) -> Reply:
        """`handle` the request away from the event loop.

        Cancelling run() stops the computation (ThreadExecutor's excepted: see there), so a
        request given up frees its slot. A worker that dies fails only the request it was
        computing, with WorkerLostError.
        """
        ...

    async def start(self) -> bool:
        """Start, and say whether the engine passes its self-check where it will run."""
        ...

    def stop(self) -> None: ...


class ThreadExecutor:
    """Compute in the server's own worker threads.

    A thread cannot be stopped: cancelling run() waits until the computation ends, which the
    engine's own deadline (`engine.time_limit`, GRADSERVE_TIMEOUT_S) bounds.
    """

    segments: Segments | None = None

    async def run(self, endpoint: str, body: Body, limits: Limits) -> Reply:
        data = bytes(body.view[: body.size]) if isinstance(body, SharedBody) else body
        return await anyio.to_thread.run_sync(handle, endpoint, data, limits)

    async def start(self) -> bool:
        return await anyio.to_thread.run_sync(selfcheck.passes)

    def stop(self) -> None:
        pass


def tune_for_requests() -> None:
    """Set up a process that computes requests (the workers, the server, the bench) for them."""
    _keep_freed_memory()
    # A request builds tens of thousands of objects (a model per weight, the plan, the answer)
    # and drops them together at its end. At the default gen-0 threshold of 700 allocations the
    # cyclic collector ran all through a request, traversing them while they were alive: 23 ms
    # of the sparse bench's 74. Garbage in cycles is rare here (tracebacks); it is collected
    # later, not never.
    gc.set_threshold(10_000, 10, 10)


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for the next request instead of handing it back at once.

    Nothing is cached between requests, so each one allocates its value tables afresh. By
    default glibc serves every allocation over 128 KiB with a new mmap and unmaps it when it is
    freed, so each request paid page faults for memory the last one had just returned: the MLP
    bench's forward-backward took 10-12 ms instead of 5.7 ms. Tables up to 32 MiB now come from
    the heap, which keeps up to 256 MiB free for reuse; a worker's memory stays bounded by its
    largest request, and workers are recycled (GRADSERVE_WORKER_MAX_TASKS).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (musl, macOS): leave their allocators as they are
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)


def _start_worker(server: int) -> None:
    """Yield the CPU to the server process, so it keeps answering; and die with it."""
    os.nice(5)
    tune_for_requests()

    def watch() -> None:
        # A worker blocked on its queue would outlive a server killed outright (SIGKILL, the
        # OOM killer), holding its memory forever; so each one watches its parent.
        # The server's pid comes from the server itself: one that died while this worker was
        # still starting is noticed too.
        while os.getppid() == server:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="gradserve-parent-watch", daemon=True).start()


#: idle shared memory kept for the next large bodies (a 64 MiB body's segment, or several smaller)
KEEP_SEGMENT_BYTES = 64 << 20


class ProcessExecutor:
    """Compute in `size` supervised worker processes (service.pool): each replaced when it
    dies, when the request it computes is given up, after `max_tasks` requests, or when its
    resident memory is over `max_rss` bytes after one (0: no budget)."""

    BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

    def __init__(self, size: int, max_tasks: int, max_rss: int = 0) -> None:
        self.size, self.max_tasks = size, max_tasks
        # Workers inherit the environment when they start. Left alone, each would run a BLAS
        # pool as large as the machine: two workers on two cores took 14 s for what one thread
        # each does in 0.5 s. So the cores are shared out, unless the operator said otherwise.
        # (Set in this process's environment, which workers started later inherit too; and
        # taken out again on stop, so an embedding process is left as it was found.)
        share = str(max(1, (os.cpu_count() or 1) // size))
        self.set_here = [name for name in self.BLAS_THREADS if name not in os.environ]
        for name in self.set_here:
            os.environ[name] = share
        self.pool = Pool(
            size,
            max_tasks=max_tasks,
            max_rss=max_rss,
            initializer=_start_worker,
            initargs=(os.getpid(),),
            check=selfcheck.passes,
        )
        # at most a quarter of /dev/shm is kept idle, so bodies in flight find room
        self.segments: Segments | None = Segments(keep_bytes=min(KEEP_SEGMENT_BYTES, shm_bytes() // 4))

    @property
    def counts(self) -> Counter[str]:
        """Workers started, and replaced by cause: died, cancelled, recycled, over-memory."""
        return self.pool.counts

    async def run(self, endpoint: str, body: Body, limits: Limits) -> Reply:
        try:
            if isinstance(body, SharedBody):
                body.lent = True
                reply: Reply = await self.pool.call(handle_shared, endpoint, body.shm.name, body.size, limits)
                # The worker is done with it. Not so if this was cancelled: the worker is killed
                # then, but it may have been writing, so the segment is never handed on.
                body.lent = False
                if reply.in_shared:
                    return reply._replace(content=bytes(body.view[: reply.in_shared]), in_shared=0)
                return reply
            answer: Reply = await self.pool.call(handle, endpoint, body, limits)
            return answer
        except WorkerDiedError:
            raise WorkerLostError(
                "the worker computing this request died (most likely out of memory); "
                "ask for less work, or try again"
            ) from None

    async def start(self) -> bool:
        return await self.pool.start()

    def stop(self) -> None:
        self.pool.stop()
        if self.segments is not None:
            self.segments.close()
        for name in self.set_here:
            os.environ.pop(name, None)


def make_executor(settings: Settings) -> Executor:
    if settings.isolation == "thread":
        return ThreadExecutor()
    return ProcessExecutor(settings.max_concurrent, settings.worker_max_tasks, settings.worker_max_rss_bytes)
