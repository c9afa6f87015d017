"""Worker processes the server supervises itself: one pipe each, one job at a time.

`concurrent.futures.ProcessPoolExecutor` breaks as a whole: one worker killed (by the OOM
killer, or by hand) failed every request in flight and the next one too. Here each worker is
watched on its own: one that dies fails only the job it was computing, and a replacement is
started at once; a job whose caller gives up (its task is cancelled) has its worker killed and
replaced, so the slot is free again; and a worker is retired after `max_tasks` jobs, or as
soon as its resident memory is over `max_rss` bytes after one.

A job may send messages before its answer (`report`, called in the worker: one worker's two
ends are `service.transport.worker`): each is handed to the caller's `on_message` as it
arrives, in the thread that waits for the answer. Such a job, given up, is first asked to stop
at its next report (raising JobStopped there), so its worker lives on; it is killed only if it
has not stopped within STOP_WAIT_S.

Nothing here blocks the event loop: a job is sent and its answer read in a thread of the
loop's default executor (the answer may be large), and each worker's exit is noticed through
its sentinel, watched by the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from typing import Any

from service.problems import NotReadyError
from service.transport.worker import STOP, NotSentError, UnpicklableError, Worker, WorkerDiedError

log = logging.getLogger("gradserve")

#: what the counters count: workers started, and replaced by cause
CAUSES = ("died", "cancelled", "recycled", "over-memory", "out-of-memory")

#: seconds a retired worker gets to exit on its own before it is killed
RETIRE_GRACE_S = 2.0
#: seconds stop() waits for the workers to exit on SIGTERM before it kills them
STOP_GRACE_S = 0.5
#: seconds between attempts to start a worker when one failed to start
RESPAWN_DELAY_S = 1.0
#: seconds a job that reports its progress, given up, has to stop at its next report before
#: its worker is killed
STOP_WAIT_S = 0.5


class Pool:
    """`size` supervised worker processes; `call` runs a function in an idle one."""

    def __init__(
        self,
        size: int,
        *,
        max_tasks: int,
        max_rss: int,
        initializer: Callable[..., None],
        initargs: tuple[Any, ...] = (),
        check: Callable[[], bool],
    ) -> None:
        self.size, self.max_tasks, self.max_rss = size, max_tasks, max_rss
        self.ctx = multiprocessing.get_context("spawn")
        self.worker_args = (initializer, initargs, check)
        self.workers: set[Worker] = set()
        self.idle: deque[Worker] = deque()
        self.waiters: deque[asyncio.Future[Worker]] = deque()
        self.tasks: set[asyncio.Task[Any]] = set()  # replacements being started
        # Jobs are sent and answered in these threads: one per worker computing, one per worker
        # starting (more than `size` only while recycled workers overlap their successors).
        self.threads = ThreadPoolExecutor(2 * size + 2, thread_name_prefix="gradserve-pool")
        #: workers started, and replaced by cause (CAUSES), for operators
        self.counts: Counter[str] = Counter()
        self.stopped = False
        self.loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ starting workers

    async def start(self) -> bool:
        """Start every worker; whether each passed its self-check."""
        self.loop = asyncio.get_running_loop()
        verdicts = await asyncio.gather(*(self._spawn() for _ in range(self.size)), return_exceptions=True)
        for verdict in verdicts:
            if isinstance(verdict, BaseException):
                log.error("a compute worker failed to start: %r", verdict)
                self._replace(None)
        return all(v is True for v in verdicts)

    async def _spawn(self, replaces: Worker | None = None) -> bool:
        loop = asyncio.get_running_loop()
        w = Worker(self.ctx, self.worker_args)
        self.workers.add(w)
        future = loop.run_in_executor(self.threads, w.boot)
        try:
            ok = await asyncio.shield(future)
        except WorkerDiedError:
            self._close(w)
            raise
        except BaseException:  # cancelled (stopping): the thread may not have started it yet
            w.abandoned = True
            self._kill(w)
            future.add_done_callback(functools.partial(self._close_after, w))
            raise
        if self.stopped:
            self._kill(w)
            self._close(w)
            return ok
        if not ok:
            log.error("compute worker %s failed the engine's self-check", w.pid)
        self.counts["started"] += 1
        loop.add_reader(w.proc.sentinel, self._exited, w)
        self._put(w)
        if replaces is not None and replaces.serve_until_replaced:
            self._retire_when_idle(replaces)
        return ok

    def _replace(self, old: Worker | None) -> None:
        """Start a worker in `old`'s place (retrying until one starts), unless stopping."""
        if self.stopped or self.loop is None:
            return
        if old is not None:
            if old.replaced:
                return
            old.replaced = True

        async def keep_trying() -> None:
            while not self.stopped:
                try:
                    await self._spawn(replaces=old)
                    return
                except Exception as exc:
                    log.error("a compute worker failed to start (%r); trying again", exc)
                    await asyncio.sleep(RESPAWN_DELAY_S)

        task = self.loop.create_task(keep_trying())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ jobs

    async def call(
        self, fn: Callable[..., Any], *args: Any, on_message: Callable[[Any], None] | None = None
    ) -> Any:
        """`fn(*args)` in an idle worker, once there is one; its result, or its exception.
        What it `report`s on the way is handed to `on_message`, in a thread of the pool.

        Raises WorkerDiedError when the worker died computing it. Cancelling this stops the
        computation: the worker is killed and replaced."""
        loop = asyncio.get_running_loop()
        while True:
            w = await self._take()
            future = loop.run_in_executor(self.threads, w.exchange, (fn, args), on_message)
            try:
                kind, value, rss = await asyncio.shield(future)
            except UnpicklableError as exc:
                self._put(w)
                raise exc.error from None
            except NotSentError:  # it died idle, before its exit was noticed: try another
                self._died(w)
                continue
            except WorkerDiedError:
                self._died(w)
                raise
            except BaseException:  # cancelled (or this process could not run the thread)
                if on_message is not None and await self._stopped(w, future):
                    raise
                self._kill(w)
                self._lost(w, "cancelled")
                future.add_done_callback(functools.partial(self._close_after, w))
                raise
            # a MemoryError: the worker's memory is no longer to be trusted (nor its heap's size)
            self._done(w, rss, out_of_memory=kind == "error" and isinstance(value, MemoryError))
            if kind == "error":
                raise value
            return value

    async def _stopped(self, w: Worker, future: asyncio.Future[tuple[str, Any, int]]) -> bool:
        """Ask `w`'s job to stop at its next report; whether it did within STOP_WAIT_S (the
        worker is then free again)."""
        try:
            if not future.done():
                w.conn.send_bytes(STOP)
                await asyncio.wait({future}, timeout=STOP_WAIT_S)
        except (OSError, asyncio.CancelledError):  # gone, or cancelled again: kill it
            return False
        if not future.done() or future.cancelled() or future.exception() is not None:
            return False
        self._done(w, future.result()[2])
        return True

    async def _take(self) -> Worker:
        if self.stopped:
            raise _stopping()
        if self.idle:
            w = self.idle.popleft()
            w.state = "busy"
            return w
        waiter: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._put(waiter.result())  # handed one just as it was cancelled: hand it on
            raise

    def _put(self, w: Worker) -> None:
        """`w` is free: to the first waiter, or to the idle ones."""
        if w.retire_when_idle:
            self._retire(w)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                w.state = "busy"
                waiter.set_result(w)
                return
        w.state = "idle"
        self.idle.append(w)

    def _done(self, w: Worker, rss: int, out_of_memory: bool = False) -> None:
        """`w` answered a job: back to work, or replaced."""
        w.tasks += 1
        w.rss = rss
        if out_of_memory:
            self._lost(w, "out-of-memory", "a MemoryError")
            self._retire(w)
        elif self.max_rss and rss > self.max_rss:
            self._lost(w, "over-memory", f"resident memory {rss:,} bytes > {self.max_rss:,}")
            self._retire(w)
        elif w.tasks >= self.max_tasks and not w.replaced:
            # It keeps serving while its successor starts, so no request waits for the swap.
            w.serve_until_replaced = True
            self._lost(w, "recycled", f"served {w.tasks} requests")
            self._put(w)
        else:
            self._put(w)

    def _died(self, w: Worker) -> None:
        w.proc.join(0.1)  # (its pipe is at EOF: it is exiting, if not gone)
        self._lost(w, "died", f"exit code {w.proc.exitcode}")
        self._close(w)

    def _lost(self, w: Worker, cause: str, why: str = "") -> None:
        """Count and log `w`'s replacement, and start it (once per worker)."""
        if w.replaced or self.stopped:
            return
        self.counts[cause] += 1
        log.warning("replacing compute worker %s: %s%s", w.pid, cause, f" ({why})" if why else "")
        self._replace(w)

    def _retire_when_idle(self, w: Worker) -> None:
        """`w`'s successor is up: retire it now if idle, else once its job ends."""
        if w.state == "idle":
            self.idle.remove(w)
            self._retire(w)
        elif w.state == "busy":
            w.retire_when_idle = True

    def _retire(self, w: Worker) -> None:
        """Let `w` exit by closing its pipe; its sentinel reaps it (killed if it lingers)."""
        w.state = "retiring"
        with contextlib.suppress(OSError):
            w.conn.close()
        if self.loop is not None:
            self.loop.call_later(RETIRE_GRACE_S, self._kill_lingering, w)

    def _kill_lingering(self, w: Worker) -> None:
        if not w.closed and w.proc.exitcode is None:
            self._kill(w)

    @staticmethod
    def _kill(w: Worker) -> None:
        if w.proc.pid is not None and not w.closed:
            with contextlib.suppress(ProcessLookupError, ValueError):
                w.proc.kill()

    def _exited(self, w: Worker) -> None:
        """`w`'s process exited (its sentinel is readable)."""
        self._unwatch(w)
        self.workers.discard(w)
        if w.state == "idle":  # nobody was waiting on it: replace it here
            self.idle.remove(w)
            self._died(w)
        elif w.state == "retiring":
            self._close(w)
        # busy: the job's thread notices too, and `call` replaces and closes it

    def _unwatch(self, w: Worker) -> None:
        if self.loop is not None and not self.loop.is_closed() and not w.closed and w.proc.pid is not None:
            self.loop.remove_reader(w.proc.sentinel)

    def _close(self, w: Worker) -> None:
        self._unwatch(w)
        self.workers.discard(w)
        w.close()

    def _close_after(self, w: Worker, future: asyncio.Future[Any]) -> None:
        """Close `w` once the thread that was talking to it is done (`future`, ignored)."""
        if not future.cancelled():
            future.exception()
        self._close(w)

    # ------------------------------------------------------------ stopping

    def stop(self) -> None:
        """Stop every worker at once, computing or not: SIGTERM, then SIGKILL for those still
        there after STOP_GRACE_S. Returns within about that long."""
        self.stopped = True
        for task in self.tasks:
            task.cancel()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(_stopping())
        self.waiters.clear()
        workers = [w for w in self.workers if not w.closed and w.proc.pid is not None]
        for w in workers:
            self._unwatch(w)
            with contextlib.suppress(ProcessLookupError, ValueError):
                w.proc.terminate()  # the default action: it exits at once, mid-computation
        pending = {w.proc.sentinel: w for w in workers}
        deadline = time.monotonic() + STOP_GRACE_S
        while pending and time.monotonic() < deadline:
            for sentinel in wait(list(pending), timeout=max(0.0, deadline - time.monotonic())):
                pending.pop(sentinel)  # type: ignore[arg-type]  # (a sentinel: an int)
        for w in pending.values():
            self._kill(w)
        for w in workers:
            w.proc.join(0.5)  # reaped: killed, they are gone at once
            if w.state not in ("busy", "starting"):  # a thread may still hold its pipe: its task closes it
                w.close()
        self.idle.clear()
        self.threads.shutdown(wait=False)


def _stopping() -> NotReadyError:
    return NotReadyError("the server is stopping", headers={"retry-after": "1"})
