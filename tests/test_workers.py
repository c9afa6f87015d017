"""Supervised worker processes: a worker that dies, is given up, grows too large or is stopped
costs at most the one request it was computing, and is replaced.

The live-server tests kill worker processes the server started (found as its children),
never anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import client
from client.arrays import encode
from service.launcher import Server
from service.problems import WorkerLostError
from service.settings import Settings
from service.transport import executors
from tests import seed
from tests.servers import Serve

LIMITS = Settings().limits()
#: for a computation that is stopped, not finished: long_sgd(10_000), some 50 s on an idle core,
#: under a deadline that does not stop it first
LONG = Settings(max_work=10**13, timeout_s=600).limits()


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


def wait_until_computing(pids: list[int], within: float = 120.0) -> None:
    """Until every one of `pids` is using the CPU (each has a request); `within`: a hang guard."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = [cpu_ticks(p) for p in pids]
        time.sleep(0.3)
        if all(cpu_ticks(p) > b for p, b in zip(pids, before, strict=True)):
            return
    raise AssertionError(f"workers {pids} did not all start computing in {within} s")


def wait_for_workers(pid: int, count: int, avoid: set[int], within: float = 120.0) -> list[int]:
    """Until process `pid` has `count` workers, none of them in `avoid`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = worker_pids(pid)
        if len(pids) == count and not avoid & set(pids):
            return pids
        time.sleep(0.1)
    raise AssertionError(f"no {count} fresh workers in {within} s: {worker_pids(pid)}")


@pytest.fixture
def two_workers(serve: Serve) -> Server:
    """A server with two workers and nothing computed inline, so every request goes to one."""
    server = serve(
        {
            "GRADSERVE_MAX_CONCURRENT": "2",
            "GRADSERVE_INLINE_MS": "0",
            "GRADSERVE_QUEUE_TIMEOUT_S": "30",
            "GRADSERVE_TIMEOUT_S": "120",
        }
    )
    wait_for_workers(server.pid, 2, set())
    return server


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
def test_a_worker_over_its_memory_budget_is_replaced_after_its_request(serve: Serve) -> None:
    server = serve(
        {
            "GRADSERVE_MAX_CONCURRENT": "1",
            "GRADSERVE_INLINE_MS": "0",
            "GRADSERVE_QUEUE_TIMEOUT_S": "30",
            "GRADSERVE_WORKER_MAX_RSS_BYTES": "1",  # every worker is over it after a request
        }
    )
    (first,) = wait_for_workers(server.pid, 1, set())
    seen = {first}
    for _ in range(3):
        assert post(server.url, long_sgd(epochs=2)).status_code == 200
        seen |= set(wait_for_workers(server.pid, 1, seen))
    assert len(seen) == 4  # a fresh worker after each request
    assert server.output().count("over-memory") == 3


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
    async def test(executor: executors.ProcessExecutor) -> tuple[bool, int, int]:
        (pid,) = worker_pids(os.getpid())
        task = asyncio.ensure_future(executor.run("sgd", long_sgd(10_000), LONG))
        await asyncio.to_thread(wait_until_computing, [pid])
        cancelled = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # (a guard only: a worker that finished its computation would stay in the pool)
        while pid in worker_pids(os.getpid()) and time.monotonic() - cancelled < 60:
            await asyncio.sleep(0.02)
        gone = pid not in worker_pids(os.getpid())
        after = await asyncio.wait_for(executor.run("gradients", short_request(), LIMITS), 60)
        return gone, after.status, executor.counts["cancelled"]

    gone, status, cancelled = run_executor(test)
    assert gone, "the worker computing the cancelled request is still there"
    assert cancelled == 1
    assert status == 200
    assert "cancelled" in [r.getMessage().rsplit(": ", 1)[-1] for r in caplog.records]


@pytest.mark.chaos
def test_stop_does_not_wait_for_a_running_computation() -> None:
    async def test(executor: executors.ProcessExecutor) -> tuple[float, BaseException | None, list[int]]:
        pids = worker_pids(os.getpid())
        task = asyncio.ensure_future(executor.run("sgd", long_sgd(10_000), LONG))
        await asyncio.to_thread(wait_until_computing, pids)
        began = time.monotonic()
        executor.stop()
        took = time.monotonic() - began
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        return took, outcome if isinstance(outcome, BaseException) else None, left

    took, outcome, left = run_executor(test)
    assert took < 60  # not the ~50 s its computation would take (a generous bound)
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
