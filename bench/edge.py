"""E: attacks below the app, each against a fresh server on loopback, with bystanders.

- E1 a header flood: one connection sends 1 KiB header lines, up to 150 MiB or until the server
  closes it: what it got, and the server process's growth at the peak and 3 s after;
- E2 slowloris: 20 silent connections and 20 trickling a head a byte a second: how many are
  still open after 15 s;
- E3 out of descriptors: the server under `prlimit --nofile=64:64`, 70 idle connections, then
  a worker killed: whether it is replaced, and whether /healthz answers;
- E4 SIGTERM with a long SGD request in flight, with 1 and 2 uvicorn processes: what a new
  request gets during the grace, and how soon;
- E5 (this tree only) the CPU time per request of uvicorn's httptools protocol, of
  `service.http.edge`'s, and of h11's, in process, for a small request: what the bounds cost.

E0 is no attack at all, for comparison. Bystanders throughout E0-E3: /healthz every 50 ms on
a new connection (its p99; a failure counts as infinitely slow) and a 400-byte gradients
request every 0.5 s (its statuses).

`python -m bench.edge` measures this tree; `--tree /work/main` the server of another checkout.
Every load is bounded in count and time and sent only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import rss_kib
from bench.reliability import long_sgd_body
from service.launcher import Server, start_server
from service.wire import CHAIN_EXAMPLE

QUIET = {"GRADSERVE_LOG_LEVEL": "warning"}
JSON = {"content-type": "application/json"}
#: the chain x -> j -> k -> o: a gradients request of about 400 bytes
SMALL = json.dumps(CHAIN_EXAMPLE).encode()
MIB = 2**20


def command(tree: Path | None, *args: str) -> list[str]:
    """`python -m service` of `tree` (its own venv, run from it), or of this process."""
    if tree is None:
        return [sys.executable, "-m", "service", *args]
    return ["env", "-C", str(tree), str(tree / ".venv/bin/python"), "-m", "service", *args]


def launch(env: dict[str, str], cmd: list[str], attempts: int = 3) -> Server:
    """`start_server`, tried again when a loaded machine took it past the launcher's patience."""
    for attempt in range(attempts):
        try:
            return start_server(env, cmd)
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


@dataclass
class Bystanders:
    healthz: list[float] = field(default_factory=list)  # seconds each; inf: no 200
    gradients: list[int] = field(default_factory=list)  # statuses; 0: no answer

    def p99_ms(self) -> float:
        ordered = sorted(self.healthz)
        return 1000 * ordered[math.ceil(0.99 * len(ordered)) - 1] if ordered else math.inf


@contextlib.contextmanager
def bystanders(url: str) -> Iterator[Bystanders]:
    """/healthz every 50 ms and a small gradients request every 0.5 s, each on a new connection."""
    seen, done = Bystanders(), threading.Event()

    def healthz() -> None:
        while not done.is_set():
            start = time.perf_counter()
            try:
                ok = httpx.get(url + "/healthz", timeout=10).status_code == 200
            except httpx.TransportError:
                ok = False
            seen.healthz.append(time.perf_counter() - start if ok else math.inf)
            done.wait(0.05)

    def gradients() -> None:
        while not done.is_set():
            try:
                status = httpx.post(
                    url + "/v1/gradients", content=SMALL, headers=JSON, timeout=30
                ).status_code
            except httpx.TransportError:
                status = 0
            seen.gradients.append(status)
            done.wait(0.5)

    threads = [threading.Thread(target=healthz), threading.Thread(target=gradients)]
    for t in threads:
        t.start()
    try:
        yield seen
    finally:
        done.set()
        for t in threads:
            t.join()


def no_attack(server: Server, seconds: float = 10.0) -> dict[str, Any]:
    """E0: the bystanders alone, for the machine's own p99."""
    time.sleep(seconds)
    return {}


def header_flood(server: Server, total: int = 150 * MIB) -> dict[str, Any]:
    """E1: 1 KiB header lines on one connection, up to `total` bytes."""
    idle = rss_kib(server.pid, children=False)
    peak, sent, chunk = idle, 0, (b"x-flood: " + b"a" * 1013 + b"\r\n") * 256
    with socket.create_connection(address(server)) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
                if sent % (8 * MIB) == 0:
                    peak = max(peak, rss_kib(server.pid, children=False))
        except OSError:
            pass  # the server closed it
        sock.settimeout(5)
        try:
            answer = sock.recv(4096).split(b"\r\n", 1)[0].decode()
        except OSError as exc:
            answer = type(exc).__name__
    peak = max(peak, rss_kib(server.pid, children=False))
    time.sleep(3)
    kept = rss_kib(server.pid, children=False) - idle
    return {
        "sent_mib": sent / MIB,
        "answer": answer,
        "peak_mib": (peak - idle) / 1024,
        "kept_mib": kept / 1024,
    }


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds `sock` open (what it sent, if anything, read and dropped)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


def slowloris(server: Server, silent: int = 20, partial: int = 20, seconds: float = 15.0) -> dict[str, Any]:
    """E2: how many of `silent` + `partial` connections are open after `seconds`."""
    socks = [socket.create_connection(address(server)) for _ in range(silent + partial)]
    try:
        for sock in socks[silent:]:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            for sock in socks[silent:]:
                with contextlib.suppress(OSError):
                    sock.send(b"x")
            time.sleep(1)
        return {"open": sum(is_open(sock) for sock in socks), "of": len(socks), "after_s": seconds}
    finally:
        for sock in socks:
            sock.close()


def worker_pids(server: Server) -> set[int]:
    tasks = Path(f"/proc/{server.pid}/task").iterdir()  # (the pool starts workers from threads)
    children = {int(pid) for task in tasks for pid in (task / "children").read_text().split()}
    return {p for p in children if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()}


def out_of_descriptors(server: Server, connections: int = 70, wait_s: float = 20.0) -> dict[str, Any]:
    """E3: `connections` idle ones, then a worker killed: replaced within `wait_s`? /healthz?"""
    socks = []
    try:
        for _ in range(connections):
            with contextlib.suppress(OSError):
                socks.append(socket.create_connection(address(server), timeout=5))
        before = worker_pids(server)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        stop, replaced = time.monotonic() + wait_s, False
        while not replaced and time.monotonic() < stop:
            now = worker_pids(server)
            replaced = victim not in now and len(now) >= len(before)
            time.sleep(0.2)
        try:
            healthz = httpx.get(server.url + "/healthz", timeout=10).status_code
        except httpx.TransportError as exc:
            healthz = type(exc).__name__
        return {"replaced": replaced, "healthz": healthz}
    finally:
        for sock in socks:
            sock.close()


def drain(tree: Path | None, processes: int, grace_s: int = 10) -> dict[str, Any]:
    """E4: SIGTERM with a long SGD in flight; then a new request: what it got, in how long."""
    env = {**QUIET, "GRADSERVE_SHUTDOWN_GRACE_S": str(grace_s), "GRADSERVE_MAX_WORK": str(10**14)}
    env |= {"GRADSERVE_TIMEOUT_S": "600", "GRADSERVE_MAX_CONCURRENT": "1"}  # (one worker each starts sooner)
    server = launch(env, command(tree, "--workers", str(processes)))
    long: dict[str, Any] = {}

    def ask() -> None:
        try:
            r = httpx.post(server.url + "/v1/sgd", content=long_sgd_body(), headers=JSON, timeout=120)
            long["status"] = r.status_code
        except httpx.TransportError as exc:
            long["status"] = type(exc).__name__
        long["at"] = time.monotonic()

    thread = threading.Thread(target=ask)
    thread.start()
    try:
        time.sleep(2)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1)  # (uvicorn's supervisor looks at its signals every 0.5 s)
        with httpx.Client(timeout=60) as http:  # (made before the clock starts: it loads certificates)
            start = time.monotonic()
            try:
                r = http.post(server.url + "/v1/gradients", content=SMALL, headers=JSON)
                answer: Any = (r.status_code, r.headers.get("content-type"))
            except httpx.TransportError as exc:
                answer = type(exc).__name__
            took = time.monotonic() - start
        thread.join()
        return {"answer": answer, "seconds": took, "before_the_long_one": start + took < long["at"], **long}
    finally:
        server.stop()


async def _trivial_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})


class _Transport(asyncio.Transport):
    """Counts what is written; reads nothing."""

    written, closing = 0, False

    def write(self, data: Any) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def protocol_cost(requests: int = 5000, rounds: int = 5) -> dict[str, float]:
    """E5: CPU microseconds per request of each HTTP protocol, in this process: the 400-byte
    gradients request (as httpx sends it) fed again and again on one keep-alive connection and
    answered by a trivial app; the median of `rounds`, the protocols taking turns."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from service.http.edge import EdgeProtocol

    request = (
        b"POST /v1/gradients HTTP/1.1\r\nhost: 127.0.0.1:8000\r\naccept: */*\r\n"
        b"accept-encoding: gzip, deflate\r\nconnection: keep-alive\r\nuser-agent: python-httpx/0.28\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(SMALL), SMALL)
    )

    async def per_request(cls: type[asyncio.Protocol]) -> float:
        config = Config(_trivial_app, log_level="warning", http=cls)
        config.load()
        proto: Any = cls(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
        transport = _Transport()
        proto.connection_made(transport)
        for k in range(200 + requests):
            if k == 200:
                start = time.process_time()
            proto.data_received(request)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert transport.written >= (200 + requests) * 30, "not every request was answered"
        return (time.process_time() - start) / requests * 1e6

    async def measure() -> dict[str, float]:
        classes = {"httptools": HttpToolsProtocol, "edge": EdgeProtocol, "h11": H11Protocol}
        times: dict[str, list[float]] = {name: [] for name in classes}
        for _ in range(rounds):
            for name, cls in classes.items():
                times[name].append(await per_request(cls))
        return {name: sorted(t)[len(t) // 2] for name, t in times.items()}

    import uvloop

    return uvloop.run(measure())


def run(tree: Path | None, only: set[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each scenario's name and figures, as it ends."""
    for name, scenario, prefix in [
        ("E0", no_attack, []),
        ("E1", header_flood, []),
        ("E2", slowloris, []),
        ("E3", out_of_descriptors, ["prlimit", "--nofile=64:64"]),
    ]:
        if only and name not in only:
            continue
        server = launch(QUIET, [*prefix, *command(tree)])
        try:
            with bystanders(server.url) as seen:
                result = scenario(server)
            result["healthz_p99_ms"] = seen.p99_ms()
            result["gradients"] = {s: seen.gradients.count(s) for s in sorted(set(seen.gradients))}
            yield name, result
        finally:
            server.stop()
    for processes in (1, 2):
        if not only or "E4" in only:
            yield f"E4 x{processes}", drain(tree, processes)
    if tree is None and (not only or "E5" in only):
        yield "E5", protocol_cost()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, help="serve from this checkout (its .venv), e.g. /work/main")
    parser.add_argument(
        "--only", nargs="*", choices=["E0", "E1", "E2", "E3", "E4", "E5"], help="these scenarios only"
    )
    args = parser.parse_args()
    for name, result in run(args.tree, set(args.only or ())):
        print(name, result, flush=True)


if __name__ == "__main__":
    main()
