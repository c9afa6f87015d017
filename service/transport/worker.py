"""One compute worker: the loop its process runs (`serve`, and `report` for the job running
there) and the server's handle on it (`Worker`: start it, hand it a job, close it).
`service.transport.pool` supervises a set of them.

Over the pipe, the worker says ("ready", its self-check's verdict, rss) once; then for each
job, sent as (fn, args) pickled, it answers ("ok", result, rss) or ("error", exception, rss),
after any ("message", message, 0) the job reports on the way. The only thing the server sends
during a job is STOP, once the job's caller has given it up.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any, Literal

#: what the server sends a worker whose job is given up (the only thing it sends during a job)
STOP = b"stop"


class WorkerDiedError(Exception):
    """The worker computing a job exited before it answered."""


class JobStopped(Exception):  # noqa: N818 (a condition, like DeadlineExceeded)
    """Raised in a worker by `report` once the job's caller has given it up."""


class NotSentError(Exception):
    """The worker had already exited when the job was to be sent: the job never reached it."""


class UnpicklableError(Exception):
    """The job could not be pickled (`error` says why); the worker never saw it."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def resident_bytes() -> int:
    """This process's resident memory (0 where /proc is not there to say)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


#: in a worker: its end of the pipe to the server, for `report`
_parent: Connection | None = None


def report(*message: Any) -> None:
    """In a worker, during a job: send `message` to the job's caller (its `on_message`) now,
    before the job's answer."""
    assert _parent is not None, "report() is for a job running in a pool's worker"
    if _parent.poll():  # STOP: the job is given up
        _parent.recv_bytes()
        raise JobStopped
    _parent.send_bytes(ForkingPickler.dumps(("message", message, 0)))


def serve(
    conn: Connection, initializer: Callable[..., None], initargs: tuple[Any, ...], check: Callable[[], bool]
) -> None:
    """A worker's life: set up, self-check, then answer jobs until the pipe closes."""
    global _parent
    _parent = conn
    # The server decides when its workers stop: Ctrl-C in a terminal reaches the whole group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer(*initargs)
    try:
        ok = bool(check())
    except Exception:
        ok = False
    conn.send(("ready", ok, resident_bytes()))
    while True:
        try:
            job = conn.recv_bytes()
        except EOFError:  # the server closed the pipe (retired), or died
            return
        if job == STOP:  # (it came as the job it was meant for ended anyway)
            continue
        try:
            fn, args = ForkingPickler.loads(job)
            outcome: tuple[str, Any] = ("ok", fn(*args))
        except BaseException as exc:  # handed to the caller, as the code run in-process would raise it
            outcome = ("error", exc)
        try:
            data = ForkingPickler.dumps((*outcome, resident_bytes()))
        except Exception as exc:  # an answer or exception that cannot cross: say so instead
            said = exc if isinstance(exc, MemoryError) else RuntimeError(f"unpicklable result: {exc!r}")
            data = ForkingPickler.dumps(("error", said, resident_bytes()))
        conn.send_bytes(data)


State = Literal["starting", "idle", "busy", "retiring", "gone"]


class Worker:
    """One worker process (running `serve` with `args`) and the parent's end of its pipe."""

    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc: BaseProcess = ctx.Process(
            target=serve, args=(child, *args), name="gradserve-worker", daemon=True
        )
        self._child = child
        self.state: State = "starting"
        self.tasks = 0
        self.rss = 0
        self.replaced = False  # a replacement has been asked for (never twice for one worker)
        self.serve_until_replaced = False  # recycled: it keeps serving while its successor starts
        self.retire_when_idle = False  # its successor is up: retire it as soon as its job ends
        self.abandoned = False  # given up while starting
        self.closed = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def boot(self) -> bool:
        """Start the process and wait for its ready message; the self-check's verdict.

        Runs in a thread: starting a process and importing NumPy in it take a while."""
        self.proc.start()
        self._child.close()  # the child holds its end now; ours would hide its exit
        if self.abandoned:  # (set by the loop, which kills it itself once it has a pid)
            self.proc.kill()
        ready = self._receive()
        return bool(ready[1])

    def exchange(
        self, job: tuple[Callable[..., Any], tuple[Any, ...]], on_message: Callable[[Any], None] | None = None
    ) -> tuple[str, Any, int]:
        """Send a job and wait for its answer, handing the messages it sends first to
        `on_message`. Runs in a thread (a body sent through the pipe may be large, and so may
        an answer)."""
        try:
            data = ForkingPickler.dumps(job)
        except Exception as exc:
            raise UnpicklableError(exc) from None
        if wait([self.proc.sentinel], 0):
            raise NotSentError
        try:
            self.conn.send_bytes(data)
        except OSError:  # the pipe is broken: the worker exited just now
            raise NotSentError from None
        outcome: tuple[str, Any, int] = self._receive()
        while outcome[0] == "message":
            if on_message is not None:
                on_message(outcome[1])
            outcome = self._receive()
        return outcome

    def _receive(self) -> Any:
        try:
            # A worker that exits leaves its pipe at EOF; the sentinel covers one that is gone
            # while something else still holds its end.
            wait([self.conn, self.proc.sentinel])
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        raise WorkerDiedError

    def close(self) -> None:
        """Reap the process (killing it if it lingers) and close the pipe; no thread may still
        be using either."""
        if self.closed:
            return
        self.closed = True
        self.state = "gone"
        if self.proc.pid is not None:  # (started)
            self.proc.join(0.5)
            if self.proc.exitcode is None:
                self.proc.kill()
                self.proc.join(1.0)
            if self.proc.exitcode is not None:
                self.proc.close()
        self.conn.close()
        self._child.close()
