"""Supervised worker processes: a worker that dies, is given up, grows too large or is stopped
costs at most the one request it was computing, and is replaced.

The live-server tests kill worker processes the server started (found as its children),
never anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import resource
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import client
from client.arrays import encode
from service.endpoints import dispatch
from service.errors import WorkerLostError
from service.launcher import Server, start_server
from service.settings import Settings
from service.transport import executors
from service.transport.shared import SharedBody
from tests import seed
from tests.support import asgi, one_layer_body

LIMITS = Settings().limits()
JSON = {"content-type": "application/json"}


def long_sgd(epochs: int = 1000) -> bytes:
    """A /v1/sgd body that computes for seconds (a 200-200 MLP, batch 256: ~5 ms an epoch
    on an idle core), within the default limits."""
    rng = np.random.default_rng(0)
    net = client.mlp([200, 200, 1], seed=0).model_dump(exclude_unset=True)
    samples = {
        "inputs": {"input": encode(rng.normal(size=(256, 200)))},
        "targets": {"output": encode(rng.normal(size=(256, 1)))},
    }
    return json.dumps({"network": net, "samples": samples, "learning_rate": 0.001, "epochs": epochs}).encode()


def short_request() -> bytes:
    case = seed.chain()
    return json.dumps({"network": case.network, "samples": case.samples}).encode()


def worker_pids(pid: int) -> list[int]:
    """The compute workers among the children of process `pid` (not its resource tracker)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    found = []
    for child in children:
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if b"spawn_main" in command and state != "Z":
                found.append(child)
    return sorted(found)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until_computing(pids: list[int], within: float = 20.0) -> None:
    """Until every one of `pids` is using the CPU (each has a request)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = [cpu_ticks(p) for p in pids]
        time.sleep(0.3)
        if all(cpu_ticks(p) > b for p, b in zip(pids, before, strict=True)):
            return
    raise AssertionError(f"workers {pids} did not all start computing in {within} s")


def wait_for_workers(pid: int, count: int, avoid: set[int], within: float = 30.0) -> list[int]:
    """Until process `pid` has `count` workers, none of them in `avoid`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = worker_pids(pid)
        if len(pids) == count and not avoid & set(pids):
            return pids
        time.sleep(0.1)
    raise AssertionError(f"no {count} fresh workers in {within} s: {worker_pids(pid)}")


@pytest.fixture
def two_workers() -> Iterator[Server]:
    """A server with two workers and nothing computed inline, so every request goes to one."""
    server = start_server(
        {
            "GRADSERVE_MAX_CONCURRENT": "2",
            "GRADSERVE_INLINE_MS": "0",
            "GRADSERVE_QUEUE_TIMEOUT_S": "30",
            "GRADSERVE_TIMEOUT_S": "120",
        }
    )
    try:
        wait_for_workers(server.pid, 2, set())
        yield server
    finally:
        server.stop()


def post(url: str, body: bytes) -> httpx.Response:
    with httpx.Client(timeout=120) as http:
        return http.post(url + "/v1/sgd", content=body, headers={"content-type": "application/json"})


@pytest.mark.chaos
def test_a_killed_worker_fails_only_its_own_request(two_workers: Server) -> None:
    url = two_workers.url
    pids = worker_pids(two_workers.pid)
    with ThreadPoolExecutor(2) as threads:
        answers = [threads.submit(post, url, long_sgd(epochs=500)) for _ in range(2)]
        wait_until_computing(pids)
        os.kill(pids[0], signal.SIGKILL)
        responses = [a.result(timeout=120) for a in answers]
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 500], [r.text[:300] for r in responses]
    (lost,) = [r for r in responses if r.status_code == 500]
    assert lost.headers["content-type"] == "application/problem+json"
    assert lost.json()["type"].endswith(":worker-lost")
    assert post(url, long_sgd(epochs=5)).status_code == 200
    assert "replacing compute worker" in two_workers.output()


@pytest.mark.chaos
def test_a_killed_idle_worker_fails_no_later_request(two_workers: Server) -> None:
    url = two_workers.url
    pids = worker_pids(two_workers.pid)
    os.kill(pids[0], signal.SIGKILL)
    with ThreadPoolExecutor(2) as threads:  # two at once: one would meet the dead worker
        answers = list(threads.map(lambda _: post(url, long_sgd(epochs=5)), range(4)))
    assert [r.status_code for r in answers] == [200] * 4, [r.text[:300] for r in answers]
    wait_for_workers(two_workers.pid, 2, {pids[0]})  # replaced
    assert post(url, long_sgd(epochs=5)).status_code == 200


@pytest.mark.chaos
def test_a_worker_over_its_memory_budget_is_replaced_after_its_request() -> None:
    server = start_server(
        {
            "GRADSERVE_MAX_CONCURRENT": "1",
            "GRADSERVE_INLINE_MS": "0",
            "GRADSERVE_QUEUE_TIMEOUT_S": "30",
            "GRADSERVE_WORKER_MAX_RSS_BYTES": "1",  # every worker is over it after a request
        }
    )
    try:
        (first,) = wait_for_workers(server.pid, 1, set())
        seen = {first}
        for _ in range(3):
            assert post(server.url, long_sgd(epochs=2)).status_code == 200
            seen |= set(wait_for_workers(server.pid, 1, seen))
        assert len(seen) == 4  # a fresh worker after each request
        assert server.output().count("over-memory") == 3
    finally:
        server.stop()


# ---------------------------------------------------------------- the executor, driven directly


def run_executor(test: Any, size: int = 1, max_tasks: int = 100) -> Any:
    """`await test(executor)` with a started ProcessExecutor, stopped afterwards."""

    async def go() -> Any:
        executor = executors.ProcessExecutor(size, max_tasks)
        try:
            assert await executor.start()
            return await test(executor)
        finally:
            executor.stop()

    return asyncio.run(go())


@pytest.mark.chaos
def test_cancelling_run_stops_the_computation_and_frees_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    async def test(executor: executors.ProcessExecutor) -> tuple[float, bool, int]:
        (pid,) = worker_pids(os.getpid())
        task = asyncio.ensure_future(executor.run("sgd", long_sgd(), LIMITS))
        await asyncio.to_thread(wait_until_computing, [pid])
        cancelled = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while pid in worker_pids(os.getpid()) and time.monotonic() - cancelled < 5:
            await asyncio.sleep(0.02)
        stopped_after = time.monotonic() - cancelled
        gone = pid not in worker_pids(os.getpid())
        after = await asyncio.wait_for(executor.run("gradients", short_request(), LIMITS), 60)
        return stopped_after, gone, after.status

    stopped_after, gone, status = run_executor(test)
    assert gone, "the worker computing the cancelled request is still there"
    assert stopped_after < 1.5
    assert status == 200
    assert "cancelled" in [r.getMessage().rsplit(": ", 1)[-1] for r in caplog.records]


@pytest.mark.chaos
def test_stop_does_not_wait_for_a_running_computation() -> None:
    async def test(executor: executors.ProcessExecutor) -> tuple[float, BaseException | None, list[int]]:
        pids = worker_pids(os.getpid())
        task = asyncio.ensure_future(executor.run("sgd", long_sgd(), LIMITS))
        await asyncio.to_thread(wait_until_computing, pids)
        began = time.monotonic()
        executor.stop()
        took = time.monotonic() - began
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        return took, outcome if isinstance(outcome, BaseException) else None, left

    took, outcome, left = run_executor(test)
    assert took < 1.5
    assert isinstance(outcome, WorkerLostError)
    assert left == []


def test_workers_are_recycled_after_max_tasks_without_failing_a_request() -> None:
    async def test(executor: executors.ProcessExecutor) -> tuple[list[int], list[int], Any]:
        # The recycled worker serves on while its successor starts, then hands over.
        statuses, pids = [], [await executor.pool.call(os.getpid)]
        deadline = time.monotonic() + 60
        while len(set(pids)) == 1 and time.monotonic() < deadline:
            statuses.append((await executor.run("gradients", short_request(), LIMITS)).status)
            pids.append(await executor.pool.call(os.getpid))
            await asyncio.sleep(0.05)
        return statuses, pids, executor.counts

    statuses, pids, counts = run_executor(test, max_tasks=4)
    assert set(statuses) == {200}
    assert len(set(pids)) == 2  # replaced
    assert counts["recycled"] == 1
    assert counts["died"] == counts["cancelled"] == counts["over-memory"] == 0
    assert Path(f"/proc/{pids[0]}").exists() is False  # the recycled one exited


def test_an_exception_in_a_worker_reaches_the_caller_and_keeps_the_worker() -> None:
    async def test(executor: executors.ProcessExecutor) -> tuple[int, int, Any]:
        before = await executor.pool.call(os.getpid)
        with pytest.raises(ZeroDivisionError):
            await executor.pool.call(divmod, 1, 0)
        # a job that cannot be sent never leaves; pickle's own error for a local function
        # (AttributeError up to Python 3.13, PicklingError from 3.14) reaches the caller
        with pytest.raises((AttributeError, pickle.PicklingError), match="pickle local object"):
            await executor.pool.call(lambda: 0)
        return before, await executor.pool.call(os.getpid), executor.counts

    before, after, counts = run_executor(test)
    assert before == after
    assert counts["started"] == 1


# ---------------------------------------------------------------- the resource tracker


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie counts: it runs no more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def kill_and_wait(pids: list[int], within: float = 30.0) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + within
    while not all(map(gone, pids)):
        assert time.monotonic() < deadline, pids
        time.sleep(0.05)


def trackers(pid: int) -> list[int]:
    """The resource trackers among the children of process `pid`."""
    found = []
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            if b"resource_tracker" in Path(f"/proc/{child}/cmdline").read_bytes() and not gone(child):
                found.append(child)
    return found


def large_body() -> bytes:
    """A /v1/gradients body over 1 MiB with its Content-Length: it reaches a worker through
    shared memory (a pooled segment, kept for the next such body)."""
    body = one_layer_body(width=50, batch=3000)
    assert len(body) > SharedBody.MIN_SIZE
    return body


@pytest.mark.chaos
def test_a_killed_resource_tracker_costs_no_shared_memory_and_no_clean_shutdown() -> None:
    """Workers attached the server's pooled segments as if they owned them: with the server's
    resource tracker killed, each started a tracker of its own, which unlinked those segments
    when the worker was replaced; large requests then failed (a 500, FileNotFoundError), and
    so did the shutdown. A worker now only maps them, and a segment gone is made again."""
    server = start_server({"GRADSERVE_MAX_CONCURRENT": "2", "GRADSERVE_INLINE_MS": "0"})
    body, headers = large_body(), {"content-type": "application/json"}

    def large_requests(n: int) -> list[int]:
        with httpx.Client(timeout=120) as http:  # one after another: they take turns on the workers
            return [
                http.post(server.url + "/v1/gradients", content=body, headers=headers).status_code
                for _ in range(n)
            ]

    try:
        first = wait_for_workers(server.pid, 2, set())
        assert large_requests(2) == [200, 200]
        (tracker,) = trackers(server.pid)  # the spawn context's: a child of the server
        kill_and_wait([tracker])
        assert large_requests(4) == [200] * 4  # each worker has attached the pooled segment since
        for victim in first:  # replaced one after the other; and whatever they started with them
            theirs = children_of(victim)
            kill_and_wait([victim, *theirs])
            wait_for_workers(server.pid, 2, {victim})
            assert large_requests(4) == [200] * 4
        for segment in Path("/dev/shm").glob("psm_*"):  # an operator's clean-up, or a rogue process
            with contextlib.suppress(OSError):
                if segment.stat().st_uid == os.getuid() and segment.name in open_segments(server.pid):
                    segment.unlink()
        assert large_requests(3) == [200] * 3
    finally:
        server.stop()
    log = server.output()
    assert "Application shutdown failed" not in log
    assert "FileNotFoundError" not in log
    assert "KeyError" not in log
    assert "unexpected error" not in log


def open_segments(pid: int) -> set[str]:
    """The names of the shared memory segments process `pid` has open."""
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("/dev/shm/"):
                names.add(target.removeprefix("/dev/shm/").removesuffix(" (deleted)"))
    return names


@pytest.mark.chaos
def test_a_body_whose_segment_was_unlinked_under_it_goes_by_pipe(caplog: pytest.LogCaptureFixture) -> None:
    body = large_body()

    async def test(executor: executors.ProcessExecutor) -> tuple[int, bool]:
        assert executor.segments is not None
        shared = executor.segments.body(len(body))
        assert shared is not None
        shared.write(body)
        Path(
            "/dev/shm", shared.shm.name.lstrip("/")
        ).unlink()  # after it was written, before a worker reads it
        reply = await executor.run("gradients", shared, LIMITS)
        shared.release()
        return reply.status, any(s is shared.shm for s in executor.segments.idle)

    with caplog.at_level(logging.ERROR, logger="gradserve"):
        status, kept = run_executor(test)
    assert status == 200
    assert not kept  # a segment gone is never handed to another body
    assert "sent by pipe instead" in caplog.text


# ---------------------------------------------------------------- out of memory


def wide_gradients(batch: int = 50_000, width: int = 1000) -> bytes:
    """A /v1/gradients body of 1 MB whose hidden layer's values alone take batch x width x 8 =
    400 MB: admitted under GRADSERVE_MAX_ACTIVATION_ELEMENTS=1e8, and the answer small."""
    rng = np.random.default_rng(0)
    net = client.mlp([1, width, 1], seed=0).model_dump(exclude_unset=True)
    samples = {
        "inputs": {"input": encode(rng.normal(size=(batch, 1)))},
        "targets": {"output": encode(rng.normal(size=(batch, 1)))},
    }
    return json.dumps({"network": net, "samples": samples, "include_units": False}).encode()


def limit_address_space(pid: int, headroom: int) -> None:
    """Let process `pid` map at most `headroom` bytes more than it does now (`prlimit --as`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            now = int(line.split()[1]) * 1024
    resource.prlimit(pid, resource.RLIMIT_AS, (now + headroom, resource.RLIM_INFINITY))


def metric(url: str, name: str, label: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{") and label in line:
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{{label}}} not found")


def assert_out_of_memory(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text[:300]
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:gradserve:problem:out-of-memory"
    assert answer.headers["retry-after"] == "1"


@pytest.mark.chaos
def test_a_worker_out_of_memory_answers_503_and_is_replaced() -> None:
    """Under an address-space limit a computation meets a MemoryError, not the OOM killer: it
    was a 500 `internal`, logged as a bug, and the worker (its heap in any state) was kept."""
    server = start_server(
        {
            "GRADSERVE_MAX_CONCURRENT": "1",
            "GRADSERVE_INLINE_MS": "0",
            "GRADSERVE_MAX_ACTIVATION_ELEMENTS": "100000000",
        }
    )
    try:
        (worker,) = wait_for_workers(server.pid, 1, set())
        limit_address_space(worker, 96 << 20)
        answer = httpx.post(
            server.url + "/v1/gradients",
            content=wide_gradients(),
            headers={"content-type": "application/json"},
            timeout=120,
        )
        assert_out_of_memory(answer)
        wait_for_workers(server.pid, 1, {worker})  # retired, and a fresh one in its place
        assert post(server.url, long_sgd(epochs=2)).status_code == 200
        assert metric(server.url, "gradserve_workers_replaced_total", 'cause="out-of-memory"') == 1
        assert metric(server.url, "gradserve_computations_stopped_total", 'reason="out-of-memory"') == 1
    finally:
        server.stop()
    log = server.output()
    assert f"replacing compute worker {worker}: out-of-memory" in log
    assert "unexpected error" not in log


@pytest.mark.chaos
def test_the_server_process_out_of_memory_answers_503_and_serves_on() -> None:
    """Computed in the server process (GRADSERVE_ISOLATION=thread, or inline): the same 503."""
    server = start_server({"GRADSERVE_ISOLATION": "thread", "GRADSERVE_MAX_ACTIVATION_ELEMENTS": "100000000"})
    try:
        limit_address_space(server.pid, 256 << 20)
        answer = httpx.post(
            server.url + "/v1/gradients",
            content=wide_gradients(),
            headers={"content-type": "application/json"},
            timeout=120,
        )
        assert_out_of_memory(answer)
        assert post(server.url, long_sgd(epochs=2)).status_code == 200
        assert metric(server.url, "gradserve_computations_stopped_total", 'reason="out-of-memory"') == 1
    finally:
        server.stop()
    assert "unexpected error" not in server.output()


def test_an_inline_computation_out_of_memory_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*_: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(dispatch, "handle_inline", out_of_memory)
    (answer,) = asgi(Settings(), ("POST", "/v1/gradients", {"content": short_request(), "headers": JSON}))
    assert_out_of_memory(answer)
