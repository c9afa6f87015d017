"""The service under pressure: admission past max concurrent, deadlines, SIGTERM with a
request in flight, and (slow) health under heavy load and memory over many large requests."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.settings import Settings
from tests.bodies import chain_request, heavy_request
from tests.servers import Serve
from tests.support import asgi, hammer, one_layer_body, open_segments
from tests.test_metrics import scrape, until

# ---------------------------------------------------------------- admission and deadlines


def test_past_max_concurrent_a_request_gets_503_with_retry_after() -> None:
    # (the deadline only guards a hang: on a loaded machine the computation that got the slot
    # may take far longer than its 30 s default)
    settings = Settings(max_concurrent=1, queue_timeout_s=0.05, timeout_s=600)
    slow = ("POST", "/v1/sgd", {"json": heavy_request(epochs=150)})
    responses = asgi(settings, slow, slow, slow)
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200
    assert 503 in statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["type"].endswith("overloaded")
    assert "GRADSERVE_MAX_CONCURRENT" in busy.json()["detail"]


def test_a_computation_past_its_deadline_stops_with_503_and_frees_its_slot() -> None:
    # the late one would take some 100 s (estimated), the next waits as long as it must
    settings = Settings(max_concurrent=1, timeout_s=0.2, queue_timeout_s=600, max_work=10**13)
    started = time.monotonic()
    late, after = asgi(
        settings,
        ("POST", "/v1/sgd", {"json": heavy_request(epochs=10_000, batch=512)}),
        ("POST", "/v1/gradients", {"json": chain_request()}),
    )
    assert late.status_code == 503
    assert late.json()["type"].endswith("deadline-exceeded")
    assert "timeout_s = 0.2 s" in late.json()["detail"]
    assert after.status_code == 200
    assert time.monotonic() - started < 60  # stopped, not run to its end (a generous bound)


# ---------------------------------------------------------------- shutdown


def test_sigterm_lets_a_request_in_flight_finish(serve: Serve) -> None:
    # (the grace and the deadline only guard a hang: a loaded machine is slow)
    server = serve({"GRADSERVE_SHUTDOWN_GRACE_S": "300", "GRADSERVE_TIMEOUT_S": "300"})
    proc, url = server.proc, server.url
    result: dict[str, Any] = {}

    def post() -> None:
        result["response"] = httpx.post(url + "/v1/sgd", json=heavy_request(epochs=400), timeout=300)

    worker = threading.Thread(target=post)
    worker.start()
    until(lambda: scrape(url).value("gradserve_slots_in_use") == 1)  # the request is computing
    proc.send_signal(signal.SIGTERM)
    worker.join(timeout=300)
    assert result["response"].status_code == 200
    assert proc.wait(timeout=120) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done
    assert "Finished server process" in server.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)


# ---------------------------------------------------------------- load and memory (slow)


def largest_list_body() -> bytes:
    """A gradients request just under the default 32 MiB, its arrays as nested lists."""
    rng = np.random.default_rng(0)
    rows = 3900
    return json.dumps(
        {
            "network": {
                "units": [{"id": "x", "role": "input", "size": 400}, {"id": "o", "role": "output"}],
                "weights": [{"source": "x", "target": "o", "value": rng.normal(size=(400, 1)).tolist()}],
            },
            "samples": {
                "inputs": {"x": rng.normal(size=(rows, 400)).tolist()},
                "targets": {"o": [0.0] * rows},
            },
            "include_units": False,
        }
    ).encode()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["long computations", "largest bodies"])
def test_healthz_stays_responsive_while_eight_clients_post_heavy_requests(kind: str, serve: Serve) -> None:
    # (the deadline only guards a hang: on a loaded machine a computation may take minutes)
    server = serve({"GRADSERVE_QUEUE_TIMEOUT_S": "1", "GRADSERVE_TIMEOUT_S": "600"})
    url = server.url
    if kind == "long computations":
        path, heavy = "/v1/sgd", json.dumps(heavy_request(epochs=200)).encode()
    else:
        path, heavy = "/v1/gradients", largest_list_body()
        assert 30 * 2**20 < len(heavy) <= 32 * 2**20
    latencies: list[float] = []
    # The eight clients are processes of their own, at a lower priority, as if on other
    # machines: threads here would hold this process's GIL and time themselves, not the server.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(8, mp_context=spawn, initializer=os.nice, initargs=(10,)) as pool:
        futures = [pool.submit(hammer, url + path, heavy, 8.0) for _ in range(8)]
        time.sleep(1.5)
        with httpx.Client(timeout=10) as http:
            stop = time.monotonic() + 6
            while time.monotonic() < stop:
                start = time.perf_counter()
                assert http.get(url + "/healthz").status_code == 200
                latencies.append(time.perf_counter() - start)
                time.sleep(0.02)
        statuses = [status for future in futures for status in future.result()]
    p99 = statistics.quantiles(latencies, n=100)[98]
    ok, busy = sum(s == 200 for s, _, _ in statuses), sum(s == 503 for s, _, _ in statuses)
    probes = f"{len(latencies)} probes, max {max(latencies) * 1000:.1f} ms"
    print(f"healthz p99 {p99 * 1000:.1f} ms over {probes}; heavy requests: {ok} 200, {busy} 503")
    # Every probe was answered 200 within the client's 10 s (a hang guard); how fast is the
    # machine's business, not this test's: a p99 bound failed whenever others shared the cores.
    # The figure on an idle machine is `python -m bench`'s (bench/RESULTS.md).
    # every refusal is "overloaded, come back in a second"
    answers = set(statuses)
    assert answers <= {(200, None, None), (503, "1", "urn:gradserve:problem:overloaded")}, answers
    assert ok


def rss_kib(pid: int) -> int:
    """The resident memory of a process and all its children (the server and its workers)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += rss_kib(int(child))
    return total


@pytest.mark.slow
def test_memory_stays_flat_over_200_max_size_requests(serve: Serve) -> None:
    limit = 4 * 1024 * 1024
    server = serve({"GRADSERVE_MAX_BODY_BYTES": str(limit)})
    body = one_layer_body(400, (limit - 4096) // (400 * 11))
    assert limit * 0.9 < len(body) <= limit
    with httpx.Client(timeout=60) as http:
        for k in range(200):
            r = http.post(
                server.url + "/v1/gradients", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 200, r.text
            if k == 9:
                early = rss_kib(server.pid)
        late = rss_kib(server.pid)
        held = open_segments(server.pid, children=True)  # (other servers may run beside it)
    server.stop()
    print(f"RSS {early} KiB after 10 requests of {len(body):,} bytes, {late} KiB after 200")
    assert late <= 2 * early, f"RSS {early} KiB after 10 requests, {late} KiB after 200"
    assert held, "no body went through shared memory: the test tests nothing"
    assert not held & set(os.listdir("/dev/shm"))  # none of its shared memory left behind
