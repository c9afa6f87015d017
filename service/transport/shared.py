"""Shared memory for large bodies: written once as they arrive, read by a worker process."""

from __future__ import annotations

import _posixshmem  # type: ignore[import-not-found]  # (what SharedMemory opens segments with)
import contextlib
import mmap
import os
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from service.convert.progress import Report
from service.pipeline.dispatch import Reply, handle_in_pieces
from service.settings import Limits


def handle_shared(
    endpoint: str,
    name: str,
    size: int,
    limits: Limits,
    framed: int | None = None,
    report: Report | None = None,
) -> Reply:
    """`handle` for a body the server wrote into shared memory; an answer that fits goes back
    the same way, over the body (a 2.9 MB answer took ~3 ms pickled through the pipe, and the
    server's GIL while it was unpickled). A binary body's arrays are read where they lie, and a
    binary answer's sections are written there one after another, never joined first."""
    shm = Attached(name)
    try:
        return _answer_in(shm, endpoint, size, limits, framed, report)
    finally:
        with contextlib.suppress(BufferError):  # a view outlived the request (a bug's traceback)
            shm.close()


class SegmentGoneError(Exception):
    """The body's segment is no longer in /dev/shm (something unlinked it): the server sends
    the body through the pipe instead."""


class Attached:
    """A worker's mapping of a segment the server made; the server's alone to unlink.

    `SharedMemory(name=...)` would register the segment with the resource tracker, as if the
    worker owned it (Python 3.11 has no `track=False`): with the server's tracker killed, each
    worker starts a tracker of its own, which unlinks every segment the worker ever attached
    when the worker exits, taking the server's pooled segments with it (its large requests then
    failed, and its shutdown). And a mapping that fails (ENOMEM under a memory limit) made
    `SharedMemory` unlink the segment itself. Attached only maps it."""

    def __init__(self, name: str) -> None:
        try:
            self._fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        except FileNotFoundError:
            raise SegmentGoneError(name) from None
        try:
            self.size = os.fstat(self._fd).st_size
            self._mmap = mmap.mmap(self._fd, self.size)
        except BaseException:
            os.close(self._fd)
            raise
        self.buf: memoryview | None = memoryview(self._mmap)

    def close(self) -> None:
        if self.buf is not None:
            self.buf.release()  # (BufferError while a view of it is alive)
            self.buf = None
        self._mmap.close()
        os.close(self._fd)


def _answer_in(
    shm: Attached, endpoint: str, size: int, limits: Limits, framed: int | None, report: Report | None
) -> Reply:
    """The request's reply, its answer in `shm` when it fits: no view of `shm` outlives this call."""
    buf = shm.buf
    assert buf is not None  # None only once closed
    with buf[:size] as body:
        given = body if framed is not None else bytes(body)
        reply = (
            handle_in_pieces(endpoint, given, limits, framed)
            if report is None
            else handle_in_pieces(endpoint, given, limits, framed, report)
        )
    pieces: tuple[bytes | memoryview, ...] = (reply.content, *reply.sections)
    total = sum(map(len, pieces))
    if total > shm.size:
        return reply.joined()
    try:  # only the body's own bytes were reserved by the server
        reserve(shm, 0, total)
    except OSError:
        return reply.joined()
    # an answer's array may be a view of the body (an input's z is the input): copied before
    # anything is written over the body
    pieces = tuple(bytes(p) if _overlaps(p, buf) else p for p in pieces)
    at = 0
    for piece in pieces:
        buf[at : at + len(piece)] = piece
        at += len(piece)
    return reply._replace(content=b"", in_shared=total, sections=())


def _overlaps(piece: bytes | memoryview, buf: memoryview) -> bool:
    if not isinstance(piece, memoryview) or not len(piece):
        return False
    return bool(np.may_share_memory(np.frombuffer(piece, np.uint8), np.frombuffer(buf, np.uint8)))


class SegmentPool:
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
        self.idle = [shm for shm in self.idle if _kept(shm)]
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
        if not _kept(shm):
            return
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


def reserve(shm: SharedMemory | Attached, start: int, length: int) -> None:
    """Reserve `length` bytes of `shm` from `start` in /dev/shm: OSError (ENOSPC) where a write
    would instead die of SIGBUS."""
    if length > 0:
        os.posix_fallocate(shm._fd, start, length)  # type: ignore[union-attr]  # (its descriptor)


def _kept(shm: SharedMemory) -> bool:
    """Whether `shm` is still in /dev/shm; if not (unlinked by something else), it is closed."""
    if os.fstat(shm._fd).st_nlink > 0:  # type: ignore[attr-defined]  # (its descriptor)
        return True
    with contextlib.suppress(BufferError):
        shm.close()
    return False


def _unlink(shm: SharedMemory) -> None:
    """Close and unlink `shm`, which may be gone already (that is no failure, at shutdown or
    ever). It is registered again first: a resource tracker started after the first one was
    killed never heard of it, and would print a KeyError for its unregistering."""
    shm.close()
    resource_tracker.register(shm._name, "shared_memory")  # type: ignore[attr-defined]  # (its name)
    try:
        shm.unlink()
    except FileNotFoundError:
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]


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

    def __init__(self, shm: SharedMemory, size: int, segments: SegmentPool) -> None:
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

    def joined(self) -> bytes:
        """What has arrived, copied out (the segment kept): for the pipe."""
        return bytes(self.view[: self.size])


#: a request body as the server received it: in memory, or in shared memory for a worker
ReceivedBody = bytes | SharedBody
