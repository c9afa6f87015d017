"""P2: a dense 784-256-256-10 sigmoid MLP, batch 256: the engine and gradserve end to end,
against a hand-written NumPy forward-backward (and torch's CPU autograd when installed)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from bench.common import Samples, cpu_seconds, timed
from client import Client, to_numpy
from client.arrays import read_answer, request_body
from service import engine, wire
from service.convert import binding
from service.launcher import start_server
from service.settings import Settings
from service.wire import ArrayEncoding, framing


@dataclass(frozen=True)
class Mlp:
    sizes: tuple[int, ...]
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    x: np.ndarray
    y: np.ndarray

    def network(self, arrays: Any = lambda a: a.tolist()) -> dict[str, Any]:
        """The wire form: one entry per layer, sigmoid hidden layers, a linear output."""
        ids = [f"l{k}" for k in range(len(self.sizes))]
        units: list[dict[str, Any]] = [{"id": ids[0], "role": "input", "size": self.sizes[0]}]
        for k, size in enumerate(self.sizes[1:], start=1):
            role = "output" if k == len(self.sizes) - 1 else "hidden"
            units.append({"id": ids[k], "role": role, "size": size, "bias": arrays(self.biases[k - 1])})
        weights = [
            {"source": ids[k], "target": ids[k + 1], "value": arrays(w)} for k, w in enumerate(self.weights)
        ]
        return {"units": units, "weights": weights}

    def samples(self, arrays: Any = lambda a: a.tolist()) -> dict[str, Any]:
        return {"inputs": {"l0": arrays(self.x)}, "targets": {f"l{len(self.sizes) - 1}": arrays(self.y)}}


def make_mlp(sizes: tuple[int, ...] = (784, 256, 256, 10), batch: int = 256, seed: int = 0) -> Mlp:
    rng = np.random.default_rng(seed)
    weights = [rng.normal(scale=1 / np.sqrt(a), size=(a, b)) for a, b in itertools.pairwise(sizes)]
    biases = [rng.normal(scale=0.1, size=b) for b in sizes[1:]]
    return Mlp(
        sizes, weights, biases, rng.normal(size=(batch, sizes[0])), rng.normal(size=(batch, sizes[-1]))
    )


def hand_written(mlp: Mlp) -> list[np.ndarray]:
    """What a user would write by hand: forward, then backward, layer by layer (mean reduction)."""
    zs = [mlp.x]
    for k, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        s = zs[-1] @ w + b
        zs.append(s if k == len(mlp.weights) - 1 else 1.0 / (1.0 + np.exp(-s)))
    delta = (zs[-1] - mlp.y) / len(mlp.x)
    grads = []
    for k in range(len(mlp.weights) - 1, -1, -1):
        grads.append(zs[k].T @ delta)
        grads.append(delta.sum(axis=0))
        if k:
            delta = (delta @ mlp.weights[k].T) * zs[k] * (1.0 - zs[k])
    return grads


def engine_pass(plan: engine.Plan, batch: engine.Batch) -> np.ndarray:
    """The engine's forward and backward, and every gradient."""
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    delta = engine.backward(plan, plan.theta, values, batch.y)
    return engine.gradient(plan, values, delta, 1.0 / batch.size)


def torch_pass(mlp: Mlp) -> Any:
    """The same forward and backward with torch's CPU autograd, in float64; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    ws = [torch.tensor(w, requires_grad=True) for w in mlp.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in mlp.biases]
    x, y = torch.tensor(mlp.x), torch.tensor(mlp.y)

    def run() -> None:
        z = x
        for k, (w, b) in enumerate(zip(ws, bs, strict=True)):
            s = z @ w + b
            z = s if k == len(ws) - 1 else torch.sigmoid(s)
        loss = 0.5 * ((z - y) ** 2).sum() / len(x)
        for p in (*ws, *bs):
            p.grad = None
        loss.backward()

    return run


def run(
    repeat: int = 30, sizes: tuple[int, ...] = (784, 256, 256, 10), batch: int = 256, url: str | None = None
) -> dict[str, Samples]:
    mlp = make_mlp(sizes, batch)
    net = wire.Network.model_validate(mlp.network())
    plan = binding.compile_network(net)
    bound = binding.bind_samples(plan, wire.Samples.model_validate(mlp.samples()), True)
    got, expected = engine_pass(plan, bound), hand_written(mlp)
    for k, w in enumerate(plan.weights):  # the same numbers, or the timing means nothing
        np.testing.assert_allclose(
            got[w.params].reshape(w.shape), expected[2 * (len(plan.weights) - 1 - k)], rtol=1e-9, atol=1e-12
        )
    runs = {
        "hand-written NumPy": lambda: hand_written(mlp),
        "engine": lambda: engine_pass(plan, bound),
        "engine, compile included": lambda: engine_pass(engine.compile_network(binding.network(net)), bound),
        # (a structure compiled before: its plan reused, service.engine.reuse)
        "engine, compile included, structure seen before": lambda: engine_pass(
            binding.compile_network(net), bound
        ),
        **compile_and_bind(mlp),
    }
    torch_run = torch_pass(mlp)
    if torch_run is not None:
        runs["torch CPU autograd"] = torch_run
    results = timed(runs, repeat)
    if url is not None:
        results.update(end_to_end(mlp, url, max(3, repeat // 3)))
    return results


def compile_and_bind(mlp: Mlp) -> dict[str, Callable[[], object]]:
    """What a worker does with a binary request before computing: its network compiled (or its
    structure's plan reused) and its samples bound, the arrays read from the body in place."""
    from service.convert.encoding import binary_sections
    from service.pipeline import dispatch

    body = {
        "network": mlp.network(lambda a: a),
        "samples": mlp.samples(lambda a: a),
        "array_encoding": "binary",
    }
    framed = request_body(body)
    length = int(framed.headers[framing.HEADER]) if framing.HEADER in framed.headers else None
    document, unread = dispatch._unframed(framed.content, length)  # (small arrays go inline)
    sections = None if unread is None else dispatch._referenced(document, unread.buffer)
    request = dispatch.parse(wire.GradientsRequest, document)

    def run(compile_network: Callable[[wire.Network], engine.Plan]) -> Callable[[], object]:
        def call() -> object:
            with binary_sections(sections):
                plan = compile_network(request.network)
                return binding.bind_samples(plan, request.samples, True)

        return call

    return {
        "compile and bind, binary arrays": run(lambda net: engine.compile_network(binding.network(net))),
        "compile and bind, binary, structure seen before": run(binding.compile_network),
    }


def numpy_user(client: Client, encoding: ArrayEncoding, mlp: Mlp) -> Callable[[], list[np.ndarray]]:
    """What a NumPy user does: `mlp`'s arrays in, the answer's arrays read as NumPy."""
    as_numpy = (mlp.network(lambda a: a), mlp.samples(lambda a: a))

    def call() -> list[np.ndarray]:
        got = client.gradients(*as_numpy, include_units=False, array_encoding=encoding).gradients
        return [to_numpy(w.value) for w in got.weights] + [to_numpy(b) for b in got.biases.values()]

    return call


def end_to_end(mlp: Mlp, url: str, repeat: int) -> dict[str, Samples]:
    """gradserve end to end with each array encoding, and the floor (raw bytes over HTTP to a
    minimal app running the hand-written NumPy), each driven by the same client loop."""
    from bench import floor

    server = start_server(AS_A_WORKER, floor.command(mlp))
    try:
        with Client(url) as gs, Client(url, binary=False) as gs64, httpx.Client(timeout=60) as http:

            def bare_http() -> list[np.ndarray]:
                return floor.post(http, server.url, mlp)

            binary, base64 = numpy_user(gs, "binary", mlp), numpy_user(gs64, "base64", mlp)
            as_lists = (mlp.network(), mlp.samples())
            bits = (binary(), base64(), bare_http())
            for got in bits[1:]:  # the same numbers, or the timing means nothing
                for a, b in zip(bits[0], got, strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
            return timed(
                {
                    FLOOR: bare_http,
                    "end to end, binary arrays": binary,
                    "end to end, base64 arrays": base64,
                    "end to end, JSON lists": lambda: gs.gradients(
                        *as_lists, include_units=False, array_encoding="list"
                    ),
                },
                repeat,
            )
    finally:
        server.stop()


FLOOR = "floor: raw bytes over HTTP + NumPy"
#: BLAS threads as the service gives each of its workers on this machine (a share of the cores),
#: for what is compared with a worker's computation: the floor's app, the breakdown
AS_A_WORKER = {
    name: os.environ.get(name, str(max(1, (os.cpu_count() or 1) // Settings().max_concurrent)))
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
}


def breakdown(mlp: Mlp, repeat: int = 20) -> dict[str, Samples]:
    """Where a binary round trip's time goes, each piece timed apart in this process: what the
    client and the worker do with the same request and answer (what is left of the end-to-end
    time is HTTP: uvicorn, the hop to a worker, the loopback)."""
    from service.convert.encoding import binary_sections, framed_answer
    from service.pipeline import dispatch
    from service.pipeline.handlers import HANDLERS
    from service.settings import Limits

    limits, handler = Limits(), HANDLERS["gradients"]
    body = {
        "network": mlp.network(lambda a: a),
        "samples": mlp.samples(lambda a: a),
        "include_units": False,
        "array_encoding": "binary",
    }
    framed = request_body(body)
    length = int(framed.headers[framing.HEADER]) if framing.HEADER in framed.headers else None

    def server_parse() -> tuple[wire.GradientsRequest, Any]:
        document, unread = dispatch._unframed(framed.content, length)
        sections = None if unread is None else dispatch._referenced(document, unread.buffer)
        return dispatch.parse(handler.wire.request, document), sections

    request, sections = server_parse()

    def compute() -> Any:
        with binary_sections(sections):
            return handler.run(request, limits)

    result = compute()
    header, pieces = framed_answer(result)
    answer = b"".join(pieces)

    def client_decode() -> list[np.ndarray]:
        got = read_answer(wire.GradientsResponse, answer, str(header), False)
        assert isinstance(got, wire.GradientsResponse)
        grads = got.gradients
        return [to_numpy(w.value) for w in grads.weights] + [to_numpy(b) for b in grads.biases.values()]  # type: ignore[union-attr]

    return timed(
        {
            "client: NumPy to a framed body": lambda: request_body(body),
            "server: cut, references, validate": server_parse,
            "worker: compile, bind, compute": compute,
            "worker: framed answer (joined)": lambda: b"".join(framed_answer(result)[1]),
            "client: framed answer to NumPy": client_decode,
        },
        repeat,
    )


def server_cpu(mlp: Mlp, url: str, pid: int, rounds: int = 4, per_round: int = 10) -> dict[str, float]:
    """CPU milliseconds per MLP request used by the server and its workers, NumPy in and out,
    binary against base64 (the rounds alternate)."""
    as_numpy = (mlp.network(lambda a: a), mlp.samples(lambda a: a))
    used = {"binary": 0.0, "base64": 0.0}
    with Client(url) as gs, Client(url, binary=False) as gs64:
        clients: dict[str, tuple[Client, ArrayEncoding]] = {
            "binary": (gs, "binary"),
            "base64": (gs64, "base64"),
        }
        for client, encoding in clients.values():  # warm up
            client.gradients(*as_numpy, include_units=False, array_encoding=encoding)
        for _ in range(rounds):
            for name, (client, encoding) in clients.items():
                before = cpu_seconds(pid)
                for _ in range(per_round):
                    client.gradients(*as_numpy, include_units=False, array_encoding=encoding)
                used[name] += cpu_seconds(pid) - before
    return {name: 1e3 * seconds / (rounds * per_round) for name, seconds in used.items()}


def breakdown_as_a_worker(
    sizes: tuple[int, ...] = (784, 256, 256, 10), batch: int = 256
) -> dict[str, Samples]:
    """`breakdown` in a process whose BLAS threads are a worker's."""
    code = (
        "import json; from bench import mlp; from service.transport.executors import tune_for_requests; "
        f"tune_for_requests(); print(json.dumps(mlp.breakdown(mlp.make_mlp({sizes!r}, {batch}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **AS_A_WORKER},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Samples] = json.loads(out)
    return result
