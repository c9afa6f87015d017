"""R: the service under faults and hostile clients, each against a fresh server on loopback.

- R1 `/healthz` while eight clients post a small request whose answer is tens of MB;
- R2 the server's growth (itself and its workers) while thirty clients post that request and
  never read the answer;
- R3 the peak extra memory of a hostile 32 MiB body (millions of tiny unit objects);
- R4 how long SIGTERM takes to end the server with long requests in flight, and what they got;
- R5 the framing walk bomb: /healthz and the server's size while two clients post it;
- R6 stalled bodies: small requests while five connections hold large unfinished bodies;
- R7 the server's size after rounds of clients that never read, back at idle or not.

Every load here is bounded in count and time and sent only to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import rss_kib
from service.launcher import Server, start_server
from service.settings import Settings

QUIET = {"GRADSERVE_LOG_LEVEL": "warning"}
#: R2's bytes held at once (GRADSERVE_MAX_INFLIGHT_BYTES): under the 30 answers' ~240 MB, so that
#: the figure shows whether the server's growth follows this bound or the number of clients
R2_INFLIGHT = 32 * 2**20


def huge_answer_body(width: int = 999_997, batch: int = 1) -> bytes:
    """A few hundred bytes asking /v1/forward for every value of a layer of `width` units."""
    return json.dumps(
        {
            "network": {
                "units": [
                    {"id": "x", "role": "input"},
                    {"id": "h", "size": width},
                    {"id": "o", "role": "output"},
                ],
                "weights": [],
            },
            "samples": {"inputs": {"x": [0.0] * batch}},
        }
    ).encode()


def hostile_body(target: int = 32 * 2**20) -> bytes:
    """Just under `target` bytes of unit objects as small as they come."""
    head, tail = b'{"network":{"units":[', b'],"weights":[]},"samples":{"inputs":{}}}'
    item = b'{"id":"a"},'
    count = (target - len(head) - len(tail)) // len(item)
    return head + item * (count - 1) + item[:-1] + tail


def long_sgd_body(width: int = 200, batch: int = 256, epochs: int = 8000) -> bytes:
    """An SGD request that computes for longer than the grace period (given a max_work to allow it)."""
    return json.dumps(
        {
            "network": {
                "units": [
                    {"id": "x", "role": "input", "size": width},
                    {"id": "h", "size": width},
                    {"id": "o", "role": "output", "size": 1},
                ],
                "weights": [
                    {"source": "x", "target": "h", "value": [[0.01] * width] * width},
                    {"source": "h", "target": "o", "value": [[0.01]] * width},
                ],
            },
            "samples": {"inputs": {"x": [[0.5] * width] * batch}, "targets": {"o": [0.25] * batch}},
            "learning_rate": 0.01,
            "epochs": epochs,
        }
    ).encode()


def _post(url: str, body: bytes, timeout: float = 120) -> int:
    try:
        return httpx.post(
            url, content=body, headers={"content-type": "application/json"}, timeout=timeout
        ).status_code
    except httpx.TransportError:
        return 0  # the connection failed or was dropped


def healthz_p99(server: Server, seconds: float = 6.0, clients: int = 8) -> tuple[float, dict[int, int]]:
    """R1: /healthz's p99 (ms) while `clients` post the huge-answer request back to back."""
    url, body = server.url + "/v1/forward", huge_answer_body()
    stop = time.monotonic() + seconds
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def load() -> None:
        while time.monotonic() < stop:
            status = _post(url, body)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=load) for _ in range(clients)]
    for t in threads:
        t.start()
    latencies = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while time.monotonic() < stop:
            start = time.perf_counter()
            http.get("/healthz")
            latencies.append(time.perf_counter() - start)
            time.sleep(0.02)
    for t in threads:
        t.join()
    latencies.sort()
    return latencies[int(0.99 * (len(latencies) - 1))] * 1e3, statuses


def non_reading_growth(server: Server, clients: int = 30, seconds: float = 6.0) -> tuple[float, float]:
    """R2: the growth (MiB) of the server process, and of it with its workers, while `clients`
    post the huge-answer request and never read."""
    idle_server, idle_all = rss_kib(server.pid, children=False), rss_kib(server.pid)
    host, port = server.url.removeprefix("http://").split(":")
    body = huge_answer_body()
    head = (
        f"POST /v1/forward HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    socks = []
    try:
        for _ in range(clients):
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(head + body)
            socks.append(sock)
        peak_server, peak_all, stop = idle_server, idle_all, time.monotonic() + seconds
        while time.monotonic() < stop:
            peak_server = max(peak_server, rss_kib(server.pid, children=False))
            peak_all = max(peak_all, rss_kib(server.pid))
            time.sleep(0.1)
    finally:
        for sock in socks:
            sock.close()
    return (peak_server - idle_server) / 1024, (peak_all - idle_all) / 1024


def hostile_peak(server: Server) -> tuple[float, int]:
    """R3: the peak extra memory of server and workers over the body's size, and the status."""
    body = hostile_body()
    idle = rss_kib(server.pid)
    status = _post(server.url + "/v1/forward", body)
    return (rss_kib(server.pid, "VmHWM") - idle) * 1024 / len(body), status


@dataclass
class Termination:
    """What SIGTERM did to a server computing long requests: when it was signalled and exited
    (monotonic seconds; inf: it did not), what each request got and when, and its log."""

    grace: float
    signalled: float
    exited: float
    answers: list[tuple[float, httpx.Response | Exception]]
    log: str

    @property
    def seconds(self) -> float:
        return self.exited - self.signalled

    @property
    def statuses(self) -> list[int]:
        """Each request's status (0: its connection failed or was dropped), sorted."""
        return sorted(a.status_code if isinstance(a, httpx.Response) else 0 for _, a in self.answers)


def sigterm_under_load(grace_s: float, requests: int = 2, epochs: int = 8000) -> Termination:
    """SIGTERM to a fresh server with `grace_s` of grace while `requests` long SGD requests
    compute: R4, and the scenario the tests of shutdown assert on."""
    server = start_server(
        {
            **QUIET,
            "GRADSERVE_SHUTDOWN_GRACE_S": str(grace_s),
            "GRADSERVE_MAX_CONCURRENT": str(requests),
            "GRADSERVE_TIMEOUT_S": "120",
            "GRADSERVE_MAX_WORK": str(10**13),
        }
    )
    answers: list[tuple[float, httpx.Response | Exception]] = []
    body = long_sgd_body(epochs=epochs)

    def ask() -> None:
        try:
            response = httpx.post(
                server.url + "/v1/sgd", content=body, headers={"content-type": "application/json"}, timeout=60
            )
            answers.append((time.monotonic(), response))
        except httpx.HTTPError as exc:
            answers.append((time.monotonic(), exc))

    threads = [threading.Thread(target=ask) for _ in range(requests)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)  # all of them are computing
        signalled = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # (a late exit is reported as inf)
            server.proc.wait(timeout=grace_s + 30)
        exited = time.monotonic() if server.proc.poll() is not None else math.inf
        for t in threads:
            t.join(timeout=30)
    finally:
        server.stop()
    return Termination(grace_s, signalled, exited, answers, server.output())


def walk_bomb(depth: int = 1000, width: int = 20_000) -> bytes:
    """A binary body's JSON document (61 KiB): a list `depth` deep holding `width` empty lists."""
    inner = b",".join([b"[]"] * width)
    return b'{"binary_data_size":1,"a":' + b"[" * depth + inner + b"]" * depth + b"}"


def _children(pid: int) -> list[int]:
    tasks = os.listdir(f"/proc/{pid}/task")
    return [int(c) for t in tasks for c in open(f"/proc/{pid}/task/{t}/children").read().split()]


def _bystanders(server: Server, stop: float) -> tuple[list[float], dict[int, int]]:
    """/healthz's latencies (ms) and a ~400-byte gradients request's statuses until `stop`."""
    small = json.dumps(
        {
            "network": {
                "units": [{"id": "x", "role": "input", "size": 2}, {"id": "o", "role": "output"}],
                "weights": [{"source": "x", "target": "o", "value": [[0.5], [-0.25]]}],
            },
            "samples": {"inputs": {"x": [[1.0, 2.0], [0.5, 0.25]]}, "targets": {"o": [0.0, 1.0]}},
        }
    ).encode()
    latencies, statuses = [], {}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while time.monotonic() < stop:
            start = time.perf_counter()
            http.get("/healthz")
            latencies.append((time.perf_counter() - start) * 1e3)
            status = _post(server.url + "/v1/gradients", small)
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(0.02)
    return sorted(latencies), statuses


def _quantile(latencies: list[float], q: float) -> float:
    return latencies[int(q * (len(latencies) - 1))]


def walk_bomb_attack(server: Server, attackers: int = 2, seconds: float = 6.0) -> dict[str, float]:
    """R5: /healthz p50 and p99 (ms) while `attackers` post the walk bomb back to back; the
    server's growth and its workers' largest peak (MiB)."""
    document = walk_bomb()
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(document)),
    }
    idle, peak = rss_kib(server.pid, children=False), 0
    stop = time.monotonic() + seconds

    def attack() -> None:
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                http.post(server.url + "/v1/forward", content=document, headers=headers)

    def watch() -> None:
        nonlocal peak
        while time.monotonic() < stop:
            peak = max(peak, rss_kib(server.pid, children=False))
            time.sleep(0.05)

    threads = [threading.Thread(target=attack) for _ in range(attackers)] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    latencies, _ = _bystanders(server, stop)
    for t in threads:
        t.join()
    worker_peak = max((rss_kib(pid, "VmHWM") for pid in _children(server.pid)), default=0)
    return {
        "p50": _quantile(latencies, 0.5),
        "p99": _quantile(latencies, 0.99),
        "growth": (peak - idle) / 1024,
        "worker_peak": worker_peak / 1024,
    }


def stalled_bodies(server: Server, inflight: int, seconds: float = 5.0) -> dict[str, Any]:
    """R6: five connections send large bodies to 100 bytes short of `inflight` (the server's
    max_inflight_bytes) and stall; /healthz p50 and p99 (ms) and small requests' statuses."""
    host, port = server.url.removeprefix("http://").split(":")
    each = (inflight - 100) // 5
    head = (
        "POST /v1/gradients HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {each + 100}\r\n\r\n"
    ).encode()
    socks = []
    try:
        for _ in range(5):
            sock = socket.create_connection((host, int(port)), timeout=5)
            with contextlib.suppress(OSError):  # (refused: answered 503, maybe closed)
                sock.sendall(head + b" " * each)
            socks.append(sock)
        latencies, statuses = _bystanders(server, time.monotonic() + seconds)
    finally:
        for sock in socks:
            sock.close()
    return {"p50": _quantile(latencies, 0.5), "p99": _quantile(latencies, 0.99), "small": statuses}


def memory_after(server: Server, rounds: int = 3, settle_s: float = 10.0) -> dict[str, float]:
    """R7: the server's size (MiB, its workers not included) idle, at the top of `rounds` of 30
    clients that never read ~8 MB answers, and `settle_s` after the last."""
    idle = top = rss_kib(server.pid, children=False)
    for _ in range(rounds):
        non_reading_growth(server, clients=30, seconds=4.0)
        top = max(top, rss_kib(server.pid, children=False))
    time.sleep(settle_s)
    return {"idle": idle / 1024, "top": top / 1024, "after": rss_kib(server.pid, children=False) / 1024}


def run() -> dict[str, Any]:
    results: dict[str, Any] = {}
    server = start_server(QUIET)
    try:
        results["R1"] = healthz_p99(server)
    finally:
        server.stop()
    server = start_server({**QUIET, "GRADSERVE_MAX_INFLIGHT_BYTES": str(R2_INFLIGHT)})
    try:
        results["R2"] = non_reading_growth(server)
    finally:
        server.stop()
    server = start_server(QUIET)
    try:
        results["R3"] = hostile_peak(server)
    finally:
        server.stop()
    results["R4"] = sigterm_under_load(Settings.model_fields["shutdown_grace_s"].default)
    results.update(edge())
    return results


def edge(command: list[str] | None = None) -> dict[str, Any]:
    """R5-R7 against fresh servers (`command`: another revision's, for a before and after)."""
    results: dict[str, Any] = {}
    server = start_server({**QUIET, "GRADSERVE_MAX_CONCURRENT": "2"}, command)
    try:
        results["R5"] = walk_bomb_attack(server)
    finally:
        server.stop()
    inflight = 128 * 2**20
    server = start_server({**QUIET, "GRADSERVE_BODY_TIMEOUT_S": "60"}, command)
    try:
        results["R6"] = stalled_bodies(server, inflight)
    finally:
        server.stop()
    server = start_server(QUIET, command)
    try:
        results["R7"] = memory_after(server)
    finally:
        server.stop()
    return results


def report(results: dict[str, Any]) -> None:
    p99, statuses = results["R1"]
    print("\nR reliability: faults and hostile clients, each against a fresh server")
    answered = ", ".join(f"{n} x {s or 'dropped'}" for s, n in sorted(statuses.items()))
    print(f"  R1 /healthz p99, 8 clients asking for ~8 MB answers    {p99:8.1f} ms   ({answered})")
    server, everything = results["R2"]
    print(
        f"  R2 growth, 30 clients that never read: the server       {server:8.1f} MiB   "
        f"(with its workers {everything:.1f} MiB; max_inflight_bytes {R2_INFLIGHT / 2**20:.0f} MiB)"
    )
    ratio, status = results["R3"]
    print(f"  R3 peak memory of a hostile 32 MiB body / its size     {ratio:8.2f}x    (answered {status})")
    report_edge(results)
    term: Termination = results["R4"]
    got = ", ".join(str(s or "dropped") for s in term.statuses)
    print(
        f"  R4 SIGTERM to exit, 2 long requests in flight          {term.seconds:8.2f} s    "
        f"(grace {term.grace:g} s; they got {got})"
    )


def report_edge(results: dict[str, Any]) -> None:
    r5, r6, r7 = results["R5"], results["R6"], results["R7"]
    print(
        f"  R5 /healthz p50 / p99, 2 clients posting the walk bomb  {r5['p50']:6.1f} / {r5['p99']:.1f} ms "
        f"(server +{r5['growth']:.0f} MiB, a worker's peak {r5['worker_peak']:.0f} MiB)"
    )
    small = ", ".join(f"{n} x {s or 'dropped'}" for s, n in sorted(r6["small"].items()))
    print(
        f"  R6 /healthz p50 / p99, 5 stalled large bodies          {r6['p50']:6.1f} / {r6['p99']:.1f} ms "
        f"(small requests: {small})"
    )
    print(
        f"  R7 the server after 3 rounds of 30 non-readers         {r7['after']:6.0f} MiB   "
        f"(idle {r7['idle']:.0f} MiB, at the top {r7['top']:.0f} MiB, 10 s after the last)"
    )
