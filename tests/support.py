"""Helpers for tests that drive the engine directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service import engine, wire
from service.convert import binding
from service.http.app import create_app
from service.settings import Settings


def compile_and_bind(net: dict[str, Any], samples: dict[str, Any]) -> tuple[engine.Plan, engine.Batch]:
    """A network and samples in the wire's JSON form, compiled and bound as the service does."""
    plan = binding.compile_network(wire.Network.model_validate_json(json.dumps(net)))
    batch = binding.bind_samples(plan, wire.Samples.model_validate_json(json.dumps(samples)), True)
    return plan, batch


def assert_parameters_close(plan: engine.Plan, theta: np.ndarray, expected: dict[str, Any]) -> None:
    """theta against {"w": [matrix per weight], "b": {unit id: vector}} to 1e-9."""
    for k, w in enumerate(plan.weights):
        np.testing.assert_allclose(theta[w.params].reshape(w.shape), expected["w"][k], rtol=1e-9, atol=1e-12)
    for u in plan.units:
        if u.role != "input":
            np.testing.assert_allclose(theta[plan.bias_params(u)], expected["b"][u.id], rtol=1e-9, atol=1e-12)
        if u.role != "input" and plan.has_responses:
            np.testing.assert_allclose(
                theta[plan.response_params(u)], expected["r"][u.id], rtol=1e-9, atol=1e-12
            )


def asgi(
    settings: Settings, *requests: tuple[str, str, dict[str, Any]], raise_errors: bool = True
) -> list[httpx.Response]:
    """Send requests at once to a fresh in-process app (its lifespan run) over httpx.ASGITransport.

    The app computes in threads unless the settings name an isolation: starting worker
    processes for every small test would only cost time; the live-server tests use them.
    """
    if "isolation" not in settings.model_fields_set:
        settings = settings.model_copy(update={"isolation": "thread"})

    async def go() -> list[httpx.Response]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gradserve", timeout=60
            ) as http:
                return await asyncio.gather(*(http.request(m, p, **kw) for m, p, kw in requests))

    return asyncio.run(go())


def hammer(url: str, body: bytes, seconds: float) -> list[tuple[int, str | None, str | None]]:
    """Post `body` to `url` back to back for `seconds`: one load-generating client.

    Each answer as (status, its Retry-After, its problem type when it is an error).
    """
    answers = []
    stop = time.monotonic() + seconds
    with httpx.Client(timeout=60) as http:
        while time.monotonic() < stop:
            r = http.post(url, content=body, headers={"content-type": "application/json"})
            kind = r.json().get("type") if r.status_code != 200 else None
            answers.append((r.status_code, r.headers.get("retry-after"), kind))
    return answers


def one_layer_body(width: int, batch: int) -> bytes:
    """A /v1/gradients body, x (a layer of `width`) -> o, its arrays base64 (~10.7 bytes a number)."""
    from tests.strategies import encode

    rng = np.random.default_rng(0)
    return json.dumps(
        {
            "network": {
                "units": [{"id": "x", "role": "input", "size": width}, {"id": "o", "role": "output"}],
                "weights": [{"source": "x", "target": "o", "value": encode(rng.normal(size=(width, 1)))}],
            },
            "samples": {
                "inputs": {"x": encode(rng.normal(size=(batch, width)))},
                "targets": {"o": encode(np.zeros(batch))},
            },
        }
    ).encode()


def until_dropped(sock: socket.socket, within: float) -> None:
    """Until the server has dropped `sock`'s connection; `within` only guards against a hang."""
    deadline = time.monotonic() + within
    while not dropped(sock):
        assert time.monotonic() < deadline, f"the server kept the connection for {within} s"
        time.sleep(0.05)


def dropped(sock: socket.socket) -> bool:
    """Whether the server has closed or reset its end of `sock`'s connection, read from
    /proc/net/tcp without reading `sock` (a FIN waits behind the unread answer, so this end
    cannot see it yet): its socket has left ESTABLISHED, or is gone (it exists from the
    handshake on, before the server accepts it)."""
    ours = "{:08X}:{:04X}".format(*_address(sock.getsockname()))
    theirs = "{:08X}:{:04X}".format(*_address(sock.getpeername()))
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return [row[3] for row in rows if row[1] == theirs and row[2] == ours] != [TCP_ESTABLISHED]


def _address(address: tuple[str, int]) -> tuple[int, int]:
    """An IPv4 address and port as /proc/net/tcp writes them (the address in host byte order)."""
    return int.from_bytes(socket.inet_aton(address[0]), "little"), address[1]


TCP_ESTABLISHED = "01"  # (linux/tcp_states.h, as /proc/net/tcp writes it)


def open_segments(pid: int, children: bool = False) -> set[str]:
    """The names of the shared memory segments process `pid` (and, with `children`, each of its
    descendants) has open: what a test may say of its own server's segments, on a machine where
    other servers make their own."""
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("/dev/shm/"):
                names.add(target.removeprefix("/dev/shm/").removesuffix(" (deleted)"))
    if children:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    names |= open_segments(int(child), children=True)
    return names
