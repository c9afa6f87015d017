"""Worker faults below the app: the multiprocessing resource tracker killed, shared memory
unlinked under the server, and computations that run out of memory. Only the server's own
processes are signalled or limited, by pid."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import client
from client.arrays import encode
from service.pipeline import dispatch
from service.settings import Settings
from service.transport import executors
from service.transport.shared import SharedBody
from tests.servers import Serve
from tests.support import asgi, one_layer_body, open_segments
from tests.test_workers import LIMITS, long_sgd, post, run_executor, short_request, wait_for_workers

JSON = {"content-type": "application/json"}


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
def test_a_killed_resource_tracker_costs_no_shared_memory_and_no_clean_shutdown(serve: Serve) -> None:
    """Workers attached the server's pooled segments as if they owned them: with the server's
    resource tracker killed, each started a tracker of its own, which unlinked those segments
    when the worker was replaced; large requests then failed (a 500, FileNotFoundError), and
    so did the shutdown. A worker now only maps them, and a segment gone is made again."""
    server = serve({"GRADSERVE_MAX_CONCURRENT": "2", "GRADSERVE_INLINE_MS": "0"})
    body, headers = large_body(), {"content-type": "application/json"}

    def large_requests(n: int) -> list[int]:
        with httpx.Client(timeout=120) as http:  # one after another: they take turns on the workers
            return [
                http.post(server.url + "/v1/gradients", content=body, headers=headers).status_code
                for _ in range(n)
            ]

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
    server.stop()
    log = server.output()
    assert "Application shutdown failed" not in log
    assert "FileNotFoundError" not in log
    assert "KeyError" not in log
    assert "unexpected error" not in log


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
def test_a_worker_out_of_memory_answers_503_and_is_replaced(serve: Serve) -> None:
    """Under an address-space limit a computation meets a MemoryError, not the OOM killer: it
    was a 500 `internal`, logged as a bug, and the worker (its heap in any state) was kept."""
    server = serve(
        {
            "GRADSERVE_MAX_CONCURRENT": "1",
            "GRADSERVE_INLINE_MS": "0",
            "GRADSERVE_MAX_ACTIVATION_ELEMENTS": "100000000",
        }
    )
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
    server.stop()
    log = server.output()
    assert f"replacing compute worker {worker}: out-of-memory" in log
    assert "unexpected error" not in log


@pytest.mark.chaos
def test_the_server_process_out_of_memory_answers_503_and_serves_on(serve: Serve) -> None:
    """Computed in the server process (GRADSERVE_ISOLATION=thread, or inline): the same 503."""
    server = serve({"GRADSERVE_ISOLATION": "thread", "GRADSERVE_MAX_ACTIVATION_ELEMENTS": "100000000"})
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
    server.stop()
    assert "unexpected error" not in server.output()


def test_an_inline_computation_out_of_memory_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*_: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(dispatch, "handle_inline", out_of_memory)
    (answer,) = asgi(Settings(), ("POST", "/v1/gradients", {"content": short_request(), "headers": JSON}))
    assert_out_of_memory(answer)
