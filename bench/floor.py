"""P2's floor: what HTTP itself costs. A minimal ASGI app takes the MLP's arrays as raw bytes
(float64, in the order `pack` writes them), runs the hand-written NumPy forward and backward
and answers the gradients as raw bytes; served by uvicorn on loopback like gradserve.

`python -m bench.floor --port N --sizes 784,256,256,10 --batch 256` serves it; POST /echo answers
the body's own bytes (HTTP alone, for the same bytes).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import numpy as np

from bench.mlp import Mlp, hand_written

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def shapes(sizes: tuple[int, ...], batch: int) -> list[tuple[int, ...]]:
    """The arrays a request carries, in order: every weight, every bias, the inputs, the targets."""
    pairs = list(itertools.pairwise(sizes))
    return [*pairs, *((b,) for b in sizes[1:]), (batch, sizes[0]), (batch, sizes[-1])]


def pack(mlp: Mlp) -> bytes:
    """The request body: the arrays' bytes one after the other."""
    return b"".join(
        np.ascontiguousarray(a, dtype="<f8").tobytes() for a in (*mlp.weights, *mlp.biases, mlp.x, mlp.y)
    )


def unpack(body: bytes | memoryview, layout: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Arrays read from `body` without a copy, in `layout`'s order and shapes."""
    arrays, offset = [], 0
    for shape in layout:
        count = int(np.prod(shape))
        arrays.append(np.frombuffer(body, dtype="<f8", count=count, offset=offset).reshape(shape))
        offset += 8 * count
    if offset != len(body):
        raise ValueError(f"the body holds {len(body)} bytes, not {offset}")
    return arrays


def app_for(sizes: tuple[int, ...], batch: int) -> Callable[[Scope, Any, Any], Awaitable[None]]:
    layout = shapes(sizes, batch)
    layers = len(sizes) - 1

    async def app(scope: Scope, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["method"] == "GET":  # readiness (/readyz)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ready"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["path"] == "/echo":  # the same bytes back: what HTTP alone costs them
            body = b"".join(chunks)
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        arrays = unpack(b"".join(chunks), layout)
        mlp = Mlp(sizes, arrays[:layers], arrays[layers : 2 * layers], arrays[-2], arrays[-1])
        grads = hand_written(mlp)  # from the last layer back: weight, bias, weight, bias...
        answer = b"".join(g.tobytes() for g in (*grads[-2::-2], *grads[-1::-2]))
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(answer)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def command(mlp: Mlp) -> list[str]:
    """The command serving the floor for `mlp`'s sizes and batch (it gets --port)."""
    return [
        sys.executable,
        "-m",
        "bench.floor",
        "--sizes",
        ",".join(map(str, mlp.sizes)),
        "--batch",
        str(len(mlp.x)),
    ]


def post(http: httpx.Client, url: str, mlp: Mlp) -> list[np.ndarray]:
    """The floor's round trip: `mlp`'s arrays posted as raw bytes, the gradients read back."""
    response = http.post(url + "/", content=pack(mlp))
    response.raise_for_status()
    return unpack(response.content, answer_layout(mlp.sizes))


def answer_layout(sizes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The answer's arrays, in the order gradserve answers them: every weight's gradient, then
    every bias's."""
    return shapes(sizes, 0)[: 2 * (len(sizes) - 1)]


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sizes", default="784,256,256,10")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    app = app_for(sizes, args.batch)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
