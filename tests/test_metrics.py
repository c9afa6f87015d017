"""GET /metrics: the Prometheus text format, parsed with prometheus-client's own parser, moving
as requests are answered, workers replaced and computations stopped; and adding up across
several uvicorn processes (the multiprocess mode).

The live-server tests kill worker processes the server started (found as its children),
never anything else.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from service.launcher import Server
from service.settings import Settings
from service.transport.pool import CAUSES
from tests.bodies import chain_request
from tests.servers import Serve
from tests.support import asgi
from tests.test_workers import long_sgd, wait_for_workers, wait_until_computing

#: every family /metrics shows, and its type
#: the API key of the server under test
KEY = "metrics-test-key-0123"

FAMILIES = {
    "gradserve_requests": "counter",
    "gradserve_request_duration_seconds": "histogram",
    "gradserve_request_body_bytes": "histogram",
    "gradserve_response_body_bytes": "histogram",
    "gradserve_slots": "gauge",
    "gradserve_slots_in_use": "gauge",
    "gradserve_requests_waiting": "gauge",
    "gradserve_inflight_bytes": "gauge",
    "gradserve_workers_alive": "gauge",
    "gradserve_workers_started": "counter",
    "gradserve_workers_replaced": "counter",
    "gradserve_computations_stopped": "counter",
}


class Scrape:
    """One exposition, parsed."""

    def __init__(self, text: str) -> None:
        self.families: dict[str, Metric] = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        """The value of the sample named `sample` with these labels (0 when there is none yet:
        a labelled series appears once it is first counted)."""
        family = self.families[re.sub(r"_(total|count|sum|bucket)$", "", sample)]
        found = [s.value for s in family.samples if s.name == sample and s.labels == labels]
        assert len(found) <= 1
        return found[0] if found else 0.0


def scrape(url: str, key: str | None = None) -> Scrape:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(url + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def until(check: Callable[[], bool], within: float = 120.0) -> None:
    """Until `check` holds; `within` only guards against a hang (a loaded machine is slow)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


def post(url: str, path: str, body: bytes | str, content_type: str = "application/json") -> httpx.Response:
    return httpx.post(url + path, content=body, headers={"content-type": content_type}, timeout=120)


@contextlib.contextmanager
def send_and_keep_open(url: str, body: bytes) -> Iterator[None]:
    """POST /v1/sgd with its whole body over a raw socket, and hang up, unanswered, on leaving."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST /v1/sgd HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        yield


# ---------------------------------------------------------------- one process


@pytest.fixture(scope="module")
def server(serve_module: Serve) -> Server:
    """Two worker processes, nothing computed inline, a short deadline for long requests."""
    server = serve_module(
        {
            "GRADSERVE_MAX_CONCURRENT": "2",
            "GRADSERVE_INLINE_MS": "0",
            "GRADSERVE_QUEUE_TIMEOUT_S": "30",
            "GRADSERVE_TIMEOUT_S": "1",
            "GRADSERVE_API_KEY": KEY,
        }
    )
    wait_for_workers(server.pid, 2, set())
    return server


def test_every_metric_is_there_with_its_type(server: Server) -> None:
    families = scrape(server.url, KEY).families
    for name, kind in FAMILIES.items():
        assert families[name].type == kind, name
    assert scrape(server.url, KEY).value("gradserve_slots") == 2
    assert scrape(server.url, KEY).value("gradserve_workers_alive") == 2


def test_requests_are_counted_by_endpoint_and_status_with_their_times_and_sizes(server: Server) -> None:
    before = scrape(server.url, KEY)
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {KEY}"}, timeout=60) as good:
        ok = good.post("/v1/gradients", json=chain_request())
        ok2 = good.post("/v1/forward", json=chain_request())
        invalid = good.post("/v1/gradients", json={"network": {}})
        wrong_type = good.post("/v1/gradients", content=b"x", headers={"content-type": "text/plain"})
        info = good.get("/v1/info")
        missing = good.get("/no/such/path")
    refused = httpx.get(server.url + "/v1/info")  # no key
    assert [r.status_code for r in (ok, ok2, invalid, wrong_type, info, missing, refused)] == [
        200,
        200,
        422,
        415,
        200,
        404,
        401,
    ]
    after = scrape(server.url, KEY)

    def moved(sample: str, **labels: str) -> float:
        return after.value(sample, **labels) - before.value(sample, **labels)

    for endpoint, status, count in [
        ("/v1/gradients", "200", 1),
        ("/v1/forward", "200", 1),
        ("/v1/gradients", "422", 1),
        ("/v1/gradients", "415", 1),
        ("/v1/info", "200", 1),
        ("/v1/info", "401", 1),
        ("other", "404", 1),  # (a path the service does not serve makes no series of its own)
        ("/metrics", "200", 1),  # the scrape `before`
    ]:
        assert moved("gradserve_requests_total", endpoint=endpoint, status=status) == count, (
            endpoint,
            status,
        )
    assert moved("gradserve_request_duration_seconds_count", endpoint="/v1/gradients") == 3
    assert moved("gradserve_request_duration_seconds_sum", endpoint="/v1/gradients") > 0
    assert moved("gradserve_request_body_bytes_count", endpoint="/v1/gradients") == 3
    sent = len(ok.request.content) + len(invalid.request.content)  # (a 415's body is not read)
    assert moved("gradserve_request_body_bytes_sum", endpoint="/v1/gradients") == sent
    answered = len(ok.content) + len(invalid.content) + len(wrong_type.content)
    assert moved("gradserve_response_body_bytes_sum", endpoint="/v1/gradients") == answered
    assert moved("gradserve_response_body_bytes_sum", endpoint="/v1/forward") == len(ok2.content)
    # every request observed once in its histogram's buckets (+Inf holds them all)
    assert moved("gradserve_request_body_bytes_bucket", endpoint="/v1/forward", le="+Inf") == 1
    assert moved("gradserve_request_body_bytes_bucket", endpoint="/v1/forward", le="256.0") == 0


@pytest.mark.chaos
def test_the_deadline_counts_a_stopped_computation(server: Server) -> None:
    before = stopped(server.url, "deadline", KEY)
    response = httpx.post(
        server.url + "/v1/sgd",
        content=long_sgd(),
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert response.status_code == 503
    assert response.json()["type"] == "urn:gradserve:problem:deadline-exceeded"
    assert stopped(server.url, "deadline", KEY) == before + 1


@pytest.mark.chaos
def test_slots_waiting_hang_ups_and_a_killed_worker_are_counted(serve: Serve) -> None:
    server = serve(
        {
            "GRADSERVE_MAX_CONCURRENT": "1",
            "GRADSERVE_INLINE_MS": "0",
            "GRADSERVE_QUEUE_TIMEOUT_S": "30",
            "GRADSERVE_TIMEOUT_S": "60",
            "GRADSERVE_MAX_WORK": str(10 * Settings().max_work),  # (the sgd below computes for long)
        }
    )
    (first,) = wait_for_workers(server.pid, 1, set())
    before = scrape(server.url)
    body = long_sgd(5000)
    with ThreadPoolExecutor(1) as pool:
        computing = pool.submit(post, server.url, "/v1/sgd", body)
        wait_until_computing([first])
        with send_and_keep_open(server.url, body):  # it waits for the slot
            seen: list[Scrape] = []

            def one_waits() -> bool:
                seen.append(scrape(server.url))
                return seen[-1].value("gradserve_requests_waiting") == 1

            until(one_waits)
            assert seen[-1].value("gradserve_slots_in_use") == 1
            assert seen[-1].value("gradserve_inflight_bytes") >= 2 * len(body)
            # the worker computing is killed: its request fails (500 worker-lost), the other
            # one gets the slot and a fresh worker; its client hangs up while it computes
            os.kill(first, signal.SIGKILL)
            assert computing.result().status_code == 500
            (second,) = wait_for_workers(server.pid, 1, {first})
            started = before.value("gradserve_workers_started_total") + 1
            until(lambda: scrape(server.url).value("gradserve_workers_started_total") == started)
            wait_until_computing([second])  # (started: past its self-check, on the request)
    until(lambda: stopped(server.url, "client-gone") == 1)
    wait_for_workers(server.pid, 1, {first, second})  # the one computing was replaced
    until(lambda: scrape(server.url).value("gradserve_workers_started_total") == started + 1)
    after = scrape(server.url)

    def moved(sample: str, **labels: str) -> float:
        return after.value(sample, **labels) - before.value(sample, **labels)

    assert moved("gradserve_workers_replaced_total", cause="died") == 1
    assert moved("gradserve_workers_replaced_total", cause="cancelled") == 1
    assert moved("gradserve_workers_started_total") == 2
    assert moved("gradserve_requests_total", endpoint="/v1/sgd", status="500") == 1
    assert moved("gradserve_requests_total", endpoint="/v1/sgd", status="499") == 1
    assert after.value("gradserve_workers_alive") == 1
    assert after.value("gradserve_slots_in_use") == after.value("gradserve_requests_waiting") == 0
    assert after.value("gradserve_inflight_bytes") == 0


@pytest.mark.parametrize(
    ("setting", "cause"),
    [("GRADSERVE_WORKER_MAX_TASKS", "recycled"), ("GRADSERVE_WORKER_MAX_RSS_BYTES", "over-memory")],
)
def test_workers_recycled_or_over_memory_are_counted_by_cause(setting: str, cause: str, serve: Serve) -> None:
    """A worker replaced after 2 requests, or after each (a budget of 2 bytes of memory)."""
    server = serve({"GRADSERVE_MAX_CONCURRENT": "1", "GRADSERVE_INLINE_MS": "0", setting: "2"})
    wait_for_workers(server.pid, 1, set())
    before = scrape(server.url)
    for _ in range(4):
        assert post(server.url, "/v1/gradients", json.dumps(chain_request())).status_code == 200
    until(lambda: scrape(server.url).value("gradserve_workers_replaced_total", cause=cause) > 0)
    after = scrape(server.url)
    for other in set(CAUSES) - {cause}:
        assert after.value("gradserve_workers_replaced_total", cause=other) == 0
    assert before.value("gradserve_workers_replaced_total", cause=cause) == 0


def stopped(url: str, reason: str, key: str | None = None) -> float:
    return scrape(url, key).value("gradserve_computations_stopped_total", reason=reason)


def test_metrics_can_be_turned_off() -> None:
    on, off = (
        asgi(
            Settings(metrics=metrics),
            ("GET", "/metrics", {}),
            ("POST", "/v1/gradients", {"json": chain_request()}),
        )
        for metrics in (True, False)
    )
    assert on[0].status_code == 200
    assert "gradserve_requests" in {f.name for f in text_string_to_metric_families(on[0].text)}
    assert off[0].status_code == 404
    assert on[1].status_code == off[1].status_code == 200


# ---------------------------------------------------------------- several processes


@pytest.mark.slow
def test_two_uvicorn_processes_add_up(tmp_path: Path, serve: Serve) -> None:
    """Whichever process answers a scrape, it counts the requests both answered."""
    server = serve(
        {
            "GRADSERVE_WORKERS": "2",
            "GRADSERVE_ISOLATION": "thread",
            "GRADSERVE_MAX_CONCURRENT": "3",
            "TMPDIR": str(tmp_path),  # where the launcher makes the directory of the numbers
        }
    )
    (directory,) = glob.glob(str(tmp_path / "gradserve-metrics-*"))
    body = chain_request()

    def one(_: int) -> int:
        with httpx.Client(timeout=30) as http:  # a connection each: either process may take it
            return http.post(server.url + "/v1/gradients", json=body).status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(one, range(60))) == {200}
    # both processes answered some (each its own files, merged here one by one)
    per_process = {}
    for path in glob.glob(os.path.join(directory, "counter_*.db")):
        (family,) = [
            m for m in MultiProcessCollector.merge([path], accumulate=False) if m.name == "gradserve_requests"
        ]
        per_process[path] = sum(
            s.value for s in family.samples if s.labels.get("endpoint") == "/v1/gradients"
        )
    assert sorted(v > 0 for v in per_process.values()) == [True, True]
    assert sum(per_process.values()) == 60
    for _ in range(6):  # answered by one process or the other
        seen = scrape(server.url)
        assert seen.value("gradserve_requests_total", endpoint="/v1/gradients", status="200") == 60
        assert seen.value("gradserve_slots") == 2 * 3  # both processes' gauges, alive
    server.stop()
    assert not Path(directory).exists()  # removed when the server stopped
