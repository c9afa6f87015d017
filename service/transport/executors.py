"""Where computations run.

`service.pipeline.dispatch.handle` does a compute request's whole job, from the body's
bytes to the answer's bytes: validate, compute, serialise. By default it runs in a pool of
worker processes, so neither parsing (pydantic holds the GIL while it builds a large body)
nor NumPy ever stalls the server's event loop; a worker that dies takes one request with
it, not the server; and recycled workers hand their memory back. With
GRADSERVE_ISOLATION=thread it runs in the server's own threads instead (for embedding and
debugging).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import anyio.to_thread

from service.convert.progress import Report
from service.endpoints import selfcheck
from service.pipeline.dispatch import Reply, handle
from service.problems import OutOfMemoryError, WorkerLostError
from service.settings import Limits, Settings
from service.transport.pool import Pool
from service.transport.shared import (
    ReceivedBody,
    SegmentGoneError,
    SegmentPool,
    SharedBody,
    handle_shared,
    shm_bytes,
)
from service.transport.worker import WorkerDiedError
from service.transport.worker import report as pool_report

log = logging.getLogger("gradserve")


class Executor(Protocol):
    segments: SegmentPool | None  # where large bodies go for the workers; None: kept as bytes

    async def run(
        self,
        endpoint: str,
        body: ReceivedBody,
        limits: Limits,
        framed: int | None = None,
        report: Report | None = None,
    ) -> Reply:
        """`handle` the request (`framed`: a binary body, see `handle`) away from the event loop;
        with `report`, what the computation reports of its progress is passed to it on the
        event loop, as it comes.

        Cancelling run() stops the computation (ThreadExecutor's excepted: see there), so a
        request given up frees its slot. A worker that dies fails only the request it was
        computing, with WorkerLostError.
        """
        ...

    async def start(self) -> bool:
        """Start, and say whether the engine passes its self-check where it will run."""
        ...

    def stop(self) -> None: ...


class _GivenUpError(Exception):
    """Raised in a computation's thread at its next report once its request was given up."""


class ThreadExecutor:
    """Compute in the server's own worker threads.

    A thread cannot be stopped: cancelling run() waits until the computation ends, which the
    engine's own deadline (`engine.time_limit`, GRADSERVE_TIMEOUT_S) bounds; one that reports
    its progress is stopped at its next report.
    """

    segments: SegmentPool | None = None

    async def run(
        self,
        endpoint: str,
        body: ReceivedBody,
        limits: Limits,
        framed: int | None = None,
        report: Report | None = None,
    ) -> Reply:
        data = bytes(body.view[: body.size]) if isinstance(body, SharedBody) else body
        try:
            return await self._run(endpoint, data, limits, framed, report)
        except MemoryError:
            raise OutOfMemoryError from None

    @staticmethod
    async def _run(
        endpoint: str, data: bytes, limits: Limits, framed: int | None, report: Report | None
    ) -> Reply:
        if report is None:
            return await anyio.to_thread.run_sync(handle, endpoint, data, limits, framed)
        loop, given_up = asyncio.get_running_loop(), threading.Event()

        def in_thread(*message: Any) -> None:
            if given_up.is_set():
                raise _GivenUpError
            loop.call_soon_threadsafe(report, *message)

        done = loop.run_in_executor(None, handle, endpoint, data, limits, framed, in_thread)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            given_up.set()
            await asyncio.wait({done})  # (until its next report)
            if not done.cancelled():
                done.exception()  # (_GivenUpError, most likely: nobody wants it)
            raise

    async def start(self) -> bool:
        return await anyio.to_thread.run_sync(selfcheck.passes)

    def stop(self) -> None:
        pass


def tune_for_requests() -> None:
    """Set up a process that computes requests (the workers, the bench) for them. Not the
    server: it keeps no freed memory (service.http.memory), only collects less often."""
    _keep_freed_memory()
    collect_less_often()


def collect_less_often() -> None:
    """The cyclic collector's threshold for processes that compute requests."""
    # A request builds tens of thousands of objects (a model per weight, the plan, the answer)
    # and drops them together at its end; at the default gen-0 threshold the cyclic collector
    # runs all through a request, traversing them while they are alive. Garbage in cycles is
    # rare here (tracebacks): it is collected later, not never.
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
    """Compute in `size` supervised worker processes (service.transport.pool): each replaced when it
    dies, when the request it computes is given up, after `max_tasks` requests, or when its
    resident memory is over `max_rss` bytes after one (0: no budget)."""

    BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

    def __init__(self, size: int, max_tasks: int, max_rss: int = 0) -> None:
        self.size, self.max_tasks = size, max_tasks
        # Workers inherit the environment when they start. Left alone, each would run a BLAS
        # pool as large as the machine, and the pools would fight over the cores. So the cores
        # are shared out, unless the operator said otherwise.
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
        self.segments: SegmentPool | None = SegmentPool(keep_bytes=min(KEEP_SEGMENT_BYTES, shm_bytes() // 4))

    @property
    def counts(self) -> Counter[str]:
        """Workers started, and replaced by cause (service.transport.pool.CAUSES)."""
        return self.pool.counts

    async def run(
        self,
        endpoint: str,
        body: ReceivedBody,
        limits: Limits,
        framed: int | None = None,
        report: Report | None = None,
    ) -> Reply:
        on_message: Callable[[Any], None] | None = None
        fn, shared_fn = handle, handle_shared
        if report is not None:  # the worker's reports come through its pipe, and on to the loop
            loop = asyncio.get_running_loop()

            def on_message(message: Any) -> None:
                loop.call_soon_threadsafe(report, *message)

            fn = functools.partial(handle, report=pool_report)
            shared_fn = functools.partial(handle_shared, report=pool_report)
        try:
            if isinstance(body, SharedBody):
                body.lent = True
                try:
                    reply: Reply = await self.pool.call(
                        shared_fn, endpoint, body.shm.name, body.size, limits, framed, on_message=on_message
                    )
                except SegmentGoneError:  # unlinked by something else: this process still maps it
                    log.error("a body's shared memory was unlinked by another process; sent by pipe instead")
                    body.lent = False
                    piped: Reply = await self.pool.call(
                        fn, endpoint, body.joined(), limits, framed, on_message=on_message
                    )
                    return piped
                # The worker is done with it. Not so if this was cancelled: the worker is killed
                # then, but it may have been writing, so the segment is never handed on.
                body.lent = False
                if reply.in_shared:
                    return reply._replace(content=bytes(body.view[: reply.in_shared]), in_shared=0)
                return reply
            answer: Reply = await self.pool.call(fn, endpoint, body, limits, framed, on_message=on_message)
            return answer
        except MemoryError:  # (its worker is replaced: Pool.call)
            raise OutOfMemoryError from None
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
