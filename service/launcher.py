"""Start a gradserve server process on a free loopback port and wait until it is ready.

For tests, benchmarks and anyone embedding the service in a script.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A `python -m service` process; its log goes to a file, so it never blocks on a full pipe."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


#: how long a server may take to answer /readyz: a guard against a hang only (a server starts in
#: a second or two on an idle machine, but two shared cores under load took over 30 s)
READY_WITHIN_S = 120


def start_server(
    env: dict[str, str] | None = None, command: list[str] | None = None, ready_s: float = READY_WITHIN_S
) -> Server:
    """`python -m service` (or `command`, which gets --port) on a free port, once /readyz answers
    (within `ready_s` seconds)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="gradserve-", suffix=".log")[1])
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "service"]), "--port", str(port)],
            env={**os.environ, **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {server.output()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not become ready in {ready_s:g} s")
