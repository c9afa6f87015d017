"""Walk one request through gradserve's modules: a real uvicorn server (EdgeProtocol, the app
factory, its lifespan) in this process, a request over a loopback socket (after 3 to warm up),
and a profile hook on every thread that records, at each Python call and return, the stack's
`service.*` modules (outermost first, repeats collapsed: its "module path").

    GRADSERVE_INLINE_MS=0 .venv/bin/python -m bench.walk gradients|sgd [--http] [--engine-detail]

The walk is the sequence of module paths, a repeat collapsed, and a module called again from
the same caller right after returning from it (compute -> engine -> compute -> engine) one
visit. Counted: stops = entries of the walk; modules = distinct modules; returns = stops whose
module appears earlier in the walk (a module left and come back to). service.engine.* counts
as one module (--engine-detail: apart); --http counts everything below the HTTP side
(endpoints, wire, engine) as one stop. Computations run in threads (GRADSERVE_ISOLATION=thread,
the default here) so that the profile sees them; GRADSERVE_INLINE_MS=0 sends every request to
the executor. Concurrent tasks of one request (its computation, the wait for a hang-up)
interleave in the walk as they ran.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

os.environ.setdefault("GRADSERVE_ISOLATION", "thread")

import uvicorn

EXAMPLES = Path(os.environ.get("GRADSERVE_EXAMPLES", "examples"))
ENGINE_DETAIL = "--engine-detail" in sys.argv
#: --http: what lies below the HTTP side (endpoints, their pipeline, wire, engine) as one stop
BELOW = ("service.endpoints", "service.pipeline", "service.convert", "service.wire", "service.engine")
HTTP_SIDE = "--http" in sys.argv
recording = False
events: list[tuple[int, tuple[str, ...]]] = []
lock = threading.Lock()


def _path(frame: FrameType | None) -> tuple[str, ...]:
    """The project modules on the stack, outermost first, consecutive repeats collapsed."""
    inner: list[str] = []
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("service.") or name == "service":
            if HTTP_SIDE and name.startswith(BELOW):
                name = "service.(pipeline: endpoints, wire, engine)"
            elif not ENGINE_DETAIL and name.startswith("service.engine"):
                name = "service.engine"
            name = name.removeprefix("service.")
            if not inner or inner[-1] != name:
                inner.append(name)
        frame = frame.f_back
    return tuple(reversed(inner))


def profile(frame: FrameType, event: str, arg: Any) -> None:
    if not recording or event not in ("call", "return"):
        return
    where = _path(frame if event == "call" else frame.f_back)
    if not where:
        return
    with lock:
        events.append((threading.get_ident(), where))


def walk() -> list[tuple[str, ...]]:
    """The module paths in the order visited; a module called again from the same caller right
    after returning from it (compute -> engine -> compute -> engine) is one visit."""
    path: list[tuple[str, ...]] = []
    for _, where in events:
        if path and path[-1] == where:
            continue
        if len(path) >= 2 and path[-2] == where and where[: len(path[-1])] == path[-1]:
            path.pop()  # back to the callee just left, from its caller: the same visit
            continue
        path.append(where)
    return path


def body(kind: str) -> bytes:
    return (EXAMPLES / ("chain-sgd.json" if kind == "sgd" else "chain.json")).read_bytes()


def post(port: int, path: str, data: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def main() -> None:
    global recording
    kind = sys.argv[1]
    path = {"gradients": "/v1/gradients", "sgd": "/v1/sgd"}[kind]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        "service.http.app:create_app",
        factory=True,
        port=port,
        http="service.http.edge:EdgeProtocol",
        log_level="warning",
        access_log=False,
        loop="uvloop",
    )
    server = uvicorn.Server(config)
    threading.setprofile(profile)
    sys.setprofile(profile)

    def client() -> None:
        global recording
        import time

        while not server.started:
            time.sleep(0.05)
        for _ in range(3):  # warm: imports, caches, the pool's threads
            assert post(port, path, body(kind)).startswith(b"HTTP/1.1 200"), kind
        recording = True
        answer = post(port, path, body(kind))
        recording = False
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        server.should_exit = True

    threading.Thread(target=client, daemon=True).start()
    server.run()
    sys.setprofile(None)
    stops = walk()
    seen: set[str] = set()
    returns = 0
    lines = []
    for where in stops:
        module = where[-1]
        again = module in seen
        returns += again
        seen.add(module)
        lines.append(f"  {'<-' if again else '->'} {module}  ({' > '.join(where)})")
    print("\n".join(lines))
    print(f"{kind}: {len(stops)} stops, {len(seen)} modules, {returns} returns to a module already left")


if __name__ == "__main__":
    main()
