"""From a request to its computation: inline or in a worker process, bodies and answers over
shared memory, the pool's setup, a worker that dies."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import service.transport.shared
from service.pipeline import dispatch
from service.settings import Settings
from service.transport import executors
from service.transport.shared import SegmentPool, SharedBody, handle_shared
from service.transport.worker import WorkerDiedError
from tests.bodies import chain_request, heavy_request
from tests.servers import Serve
from tests.support import asgi

JSON = {"content-type": "application/json"}

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- inline, or in a worker


def test_small_computations_are_answered_inline_and_large_ones_are_handed_on() -> None:
    limits = Settings().limits()
    tiny = json.dumps(chain_request()).encode()
    assert dispatch.handle_inline("gradients", tiny, limits, 1.0) == dispatch.handle(
        "gradients", tiny, limits
    )
    assert dispatch.handle_inline("sgd", json.dumps(heavy_request(epochs=20)).encode(), limits, 1.0) is None
    # many minibatches cost a pass over the levels each, however few their samples
    many = {**chain_request(), "learning_rate": 0.1, "epochs": 100, "batch_size": 1}
    many["samples"] = {"inputs": {"x": [1.5] * 50}, "targets": {"o": [0.25] * 50}}
    assert dispatch.handle_inline("sgd", json.dumps(many).encode(), limits, 1.0) is None
    # a graph too large even to compile inline (2,550 weights: ~2.5 ms; two levels, so its
    # passes would be cheap) is handed on before it is compiled
    ins, hidden = [f"i{k}" for k in range(50)], [f"h{k}" for k in range(50)]
    pairs = [*((a, b) for a in ins for b in hidden), *((b, "o") for b in hidden)]
    units = [*({"id": u, "role": "input"} for u in ins), *({"id": u} for u in hidden)]
    wide = {
        "network": {
            "units": [*units, {"id": "o", "role": "output"}],
            "weights": {
                "source": [a for a, _ in pairs],
                "target": [b for _, b in pairs],
                "value": [0.01] * len(pairs),
            },
        },
        "samples": {"inputs": {u: [1.0] for u in ins}, "targets": {"o": [0.0]}},
    }
    body = json.dumps(wide).encode()
    assert len(body) < 64 * 1024
    assert dispatch.handle("gradients", body, limits).status == 200
    assert dispatch.handle_inline("gradients", body, limits, 1.0) is None
    # a budget of 0 inlines nothing; endpoints whose cost prepare cannot foresee never are
    assert dispatch.handle_inline("gradients", tiny, limits, 0.0) is None
    assert dispatch.handle_inline("explain", tiny, limits, 1e9) is None


def test_a_request_over_a_limit_is_refused_inline_as_in_a_worker() -> None:
    limits = Settings(max_work=10).limits()
    tiny = json.dumps(chain_request()).encode()
    refused = dispatch.handle_inline("gradients", tiny, limits, 1.0)
    assert refused is not None
    assert refused.status == 413
    assert refused == dispatch.handle("gradients", tiny, limits)


@pytest.mark.parametrize("path", ["/v1/forward", "/v1/gradients", "/v1/sgd"])
def test_inline_and_worker_answers_are_the_same_bytes(path: str) -> None:
    body = {"json": chain_request(learning_rate=0.5, epochs=3) if path == "/v1/sgd" else chain_request()}
    isolated = Settings(isolation="process", max_concurrent=1)
    (inline,) = asgi(isolated, ("POST", path, body))
    (handed_on,) = asgi(isolated.model_copy(update={"inline_ms": 0.0}), ("POST", path, body))
    assert inline.status_code == handed_on.status_code == 200
    assert inline.content == handed_on.content


def test_an_answer_comes_back_over_a_shared_body_when_it_fits() -> None:
    limits = Settings().limits()
    batch = {"inputs": {"x": [1.5] * 300}, "targets": {"o": [0.25] * 300}}
    for request, fits in [(chain_request(include_units=False), True), (chain_request(samples=batch), False)]:
        body = json.dumps(request).encode()
        shared = SegmentPool(keep_bytes=0).body(len(body))
        assert shared is not None
        try:
            shared.write(body)
            reply = handle_shared("gradients", shared.shm.name, shared.size, limits)
            expected = dispatch.handle("gradients", body, limits)
            if fits:
                assert reply.in_shared == len(expected.content) <= shared.shm.size
                assert bytes(shared.view[: reply.in_shared]) == expected.content
            else:  # the answer (every unit's values for 300 samples) is longer than the segment
                assert len(expected.content) > shared.shm.size
                assert reply == expected  # it takes the pipe
        finally:
            shared.release()


def room(segments: SegmentPool, size: int) -> SharedBody:
    body = segments.body(size)
    assert body is not None
    return body


def test_large_bodies_reuse_kept_segments_within_a_bound() -> None:
    assert [SegmentPool.size_class(n) for n in (1, 4096, 4097, 3_000_000, 2_950_000)] == [
        4096,
        4096,
        8192,
        3_145_728,
        3_145_728,  # steps of 4 KiB, ..., 256 KiB from 2 MiB to 4 MiB
    ]
    segments = SegmentPool(keep_bytes=6 << 20)
    first = room(segments, 3_000_000)
    name = first.shm.name
    first.write(b"x" * 3_000_000)
    with pytest.raises(ValueError, match="longer than its Content-Length"):
        first.write(b"x")  # the segment has room, the declared body has not
    first.release()
    again = room(segments, 2_950_000)
    assert again.shm.name == name  # the same class of size: the kept segment, already mapped
    other = room(segments, 3_500_000)  # in flight at once: a second segment
    assert other.shm.name != name
    again.release()
    other.release()  # over keep_bytes with the first kept: unlinked
    assert [s.name for s in segments.idle] == [name]
    assert os.path.exists(f"/dev/shm/{name.lstrip('/')}")
    assert not os.path.exists(f"/dev/shm/{other.shm.name.lstrip('/')}")
    segments.close()
    assert not os.path.exists(f"/dev/shm/{name.lstrip('/')}")


def test_with_no_room_in_dev_shm_a_large_body_is_read_into_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing into tmpfs pages there is no room for kills the process (SIGBUS): each chunk's
    range is reserved before it is written, and when that fails nothing is written, the kept
    segments are dropped to make room, and at worst what arrived is read into memory and the
    body takes the pipe."""
    segments = SegmentPool(keep_bytes=8 << 20)
    kept = room(segments, 3_000_000)
    kept.release()

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    arriving = room(segments, 5_000_000)  # mapped, nothing reserved: nothing to refuse yet
    with pytest.raises(OSError, match="No space"):
        arriving.write(b"x" * 1000)
    assert arriving.size == 0
    assert segments.make_room()
    assert segments.idle == []  # what was kept was dropped to make room
    arriving.release()
    segments.close()

    body = json.dumps({**chain_request(), "pad": "x" * (2 << 20)}).encode()
    isolated = Settings(isolation="process", max_concurrent=1)
    (answer,) = asgi(isolated, ("POST", "/v1/gradients", {"content": body, "headers": JSON}))
    assert answer.status_code == 422  # read into memory: the unknown field "pad", named
    assert "pad" in answer.json()["detail"]

    def no_shm(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory: '/dev/shm'")

    monkeypatch.setattr(service.transport.shared, "SharedMemory", no_shm)
    assert segments.body(5_000_000) is None  # no /dev/shm at all: the pipe too
    (answer,) = asgi(isolated, ("POST", "/v1/gradients", {"content": body, "headers": JSON}))
    assert answer.status_code == 422  # through the pipe: the unknown field "pad", named
    assert "pad" in answer.json()["detail"]


@pytest.mark.slow
def test_a_server_with_a_small_dev_shm_survives_large_bodies_at_once() -> None:
    """Docker's and deploy/kubernetes' /dev/shm is 64 MiB; here 12 MiB, and four clients post
    6 MB bodies at once. Before segments reserved their memory, the first write past the room
    there was killed the server with SIGBUS."""
    shell = f"mount -t tmpfs -o size=12m tmpfs /dev/shm && exec {sys.executable} -m tests.small_shm"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs unshare -m (root) to give the server a small /dev/shm")
    run = subprocess.run(
        ["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["body_bytes"] > 6_000_000
    assert result["alive"]
    assert result["statuses"] == [200] * 20


def test_a_segment_a_worker_may_still_use_is_never_handed_on() -> None:
    """A request given up while its worker computes (cancelled) leaves the worker writing its
    answer into the segment: kept for the next body, that answer would land in another request."""

    async def go() -> tuple[str, list[str]]:
        executor = executors.ProcessExecutor(1, 10)
        try:
            assert executor.segments is not None
            body = room(executor.segments, 2 << 20)
            body.write(json.dumps(chain_request()).encode())
            task = asyncio.ensure_future(executor.run("gradients", body, Settings().limits()))
            await asyncio.sleep(0)  # handed to the pool
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            body.release()
            return body.shm.name, [s.name for s in executor.segments.idle]
        finally:
            executor.stop()

    name, idle = asyncio.run(go())
    assert name not in idle
    assert not os.path.exists(f"/dev/shm/{name.lstrip('/')}")


def test_workers_are_set_up_for_requests() -> None:
    async def go() -> tuple[Any, Any]:
        executor = executors.ProcessExecutor(1, 10)
        try:
            assert await executor.start()
            return await executor.pool.call(gc.get_threshold), await executor.pool.call(os.nice, 0)
        finally:
            executor.stop()

    threshold, niceness = asyncio.run(go())
    # the cyclic GC runs less often (tune_for_requests), at a lower priority than the server
    assert threshold == (10_000, 10, 10)
    assert niceness >= 5


def test_the_worker_pool_leaves_the_environment_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers inherit their BLAS thread counts from the environment; a leftover count would
    # follow every process started later (a pool of one once left two threads to each worker
    # of the next server: 6 answers in 8 s instead of 51).
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    pool = executors.ProcessExecutor(1, 10)
    assert os.environ["OPENBLAS_NUM_THREADS"] == str(os.cpu_count())
    assert os.environ["OMP_NUM_THREADS"] == "3"  # the operator's choice stands
    pool.stop()
    assert "OPENBLAS_NUM_THREADS" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "3"


# ---------------------------------------------------------------- a worker that dies


def test_a_dead_worker_costs_one_request_and_the_pool_comes_back() -> None:
    import os

    from service.transport.executors import ProcessExecutor

    async def go() -> tuple[int, int, int]:
        executor = ProcessExecutor(size=1, max_tasks=100)
        try:
            assert await executor.start()
            limits = Settings().limits()
            body = json.dumps(chain_request()).encode()
            try:  # the worker dies while computing, as if killed for its memory
                await executor.pool.call(os._exit, 1)
                lost = 0
            except WorkerDiedError:
                lost = 500
            after = await executor.run("gradients", body, limits)
            return lost, after.status, len(after.content)
        finally:
            executor.stop()

    lost, status, size = asyncio.run(go())
    assert lost == 500
    assert status == 200
    assert size > 0


def test_workers_die_with_a_server_killed_outright(serve: Serve) -> None:
    server = serve()
    # (workers are started from the server's threads: each thread lists its own children)
    children = [
        int(p)
        for task in Path(f"/proc/{server.pid}/task").iterdir()
        for p in (task / "children").read_text().split()
    ]
    assert children, "the server has no worker processes"
    server.proc.kill()
    server.proc.wait()
    deadline = time.monotonic() + 60  # (a guard: they go as soon as they see the server gone)
    while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.2)
    alive = [
        c
        for c in children
        if Path(f"/proc/{c}").exists() and "zombie" not in Path(f"/proc/{c}/status").read_text()
    ]
    states = {c: Path(f"/proc/{c}/cmdline").read_text()[:80] for c in alive}
    assert alive == [], states
