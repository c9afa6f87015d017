"""The server process's own memory: given back to the system once an attack (or any burst of
large bodies and answers) is over, and its size, for /metrics.

The compute workers keep freed memory for their next request (`tune_for_requests`: their
tables are reused, and they are recycled past GRADSERVE_WORKER_MAX_RSS_BYTES). The server
must not: what it allocates comes in bursts that clients decide (bodies, answers waiting for
clients that do not read, request heads), and memory it kept after one would stay its size
for good, with no worker recycling to give it back.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from pathlib import Path

from service.transport.executors import collect_less_often, tune_for_requests

#: every buffer over this many bytes (a large body, an answer waiting for its client) gets a
#: mapping of its own, unmapped when it is freed; glibc's default raises its threshold as large
#: buffers are freed (up to 32 MiB), after which they stay in its heaps. Not lower: a buffer
#: mapped afresh is faulted in page by page, and at 128 KiB every MiB-sized body and answer of an
#: ordinary request was (P2's round trip took 11 ms more: bench/RESULTS.md); smaller buffers come
#: from the heaps, which `trimming` hands back after a burst
MMAP_THRESHOLD = 4 * 1024 * 1024
#: seconds between two looks at the server's size
TRIM_EVERY_S = 2.0
#: the server's size over its idle size (the least seen) past which freed memory is handed back
TRIM_OVER_BYTES = 16 * 1024 * 1024

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc (musl, macOS): their allocators are left as they are


def tune_server(computes: bool) -> None:
    """Set up the server process: small computations run in it (GRADSERVE_INLINE_MS), so the
    collector runs as in the workers; but large buffers go back to the system when freed.
    Unless it `computes` every request itself (GRADSERVE_ISOLATION=thread): then it is tuned
    as the workers are, for speed (there is no worker to recycle)."""
    if computes:
        tune_for_requests()
        return
    collect_less_often()
    libc = _libc()
    if libc is not None:
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)  # (set: no longer raised as buffers are freed)
        libc.mallopt(m_trim_threshold, MMAP_THRESHOLD)


def rss_bytes() -> int:
    """This process's resident memory."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0  # no /proc: nothing to report


def trim() -> None:
    """Hand the allocator's free memory back to the system: the top of each heap and the free
    pages within them (small objects freed in bulk stay in the heaps' middles otherwise)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


async def trimming() -> None:
    """Every TRIM_EVERY_S, trim once the server is TRIM_OVER_BYTES over its idle size, until
    cancelled; in a thread, off the event loop (a trim walks the heaps)."""
    idle = rss_bytes()
    while True:
        await asyncio.sleep(TRIM_EVERY_S)
        size = rss_bytes()
        idle = min(idle, size)
        if size - idle > TRIM_OVER_BYTES:
            await asyncio.to_thread(trim)
