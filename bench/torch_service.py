"""P1's other reference: what a user would write with FastAPI and torch instead of gradserve. It
takes the same body (validated by the same models), computes the loss and every gradient of a
network of single units in float64 with torch's autograd, and answers them as gradserve does
(loss, a gradient per weight and per bias)."""

from __future__ import annotations

from typing import Any

import torch
from fastapi import FastAPI, Request

from bench.bare import serve
from service import wire

app = FastAPI()

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda s: s}


@app.post("/v1/gradients")
async def gradients(request: Request) -> dict[str, Any]:
    req = wire.GradientsRequest.model_validate_json(await request.body())
    net, samples = req.network, req.samples
    weights = list(net.weights)  # type: ignore[arg-type]
    w = {
        (x.source, x.target): torch.tensor(float(x.value), dtype=torch.float64, requires_grad=True)
        for x in weights
    }
    b = {
        u.id: torch.tensor(float(u.bias or 0.0), dtype=torch.float64, requires_grad=True)  # type: ignore[arg-type]
        for u in net.units
        if u.role != "input"
    }
    z: dict[str, torch.Tensor] = {
        uid: torch.tensor(values, dtype=torch.float64).reshape(-1) for uid, values in samples.inputs.items()
    }
    todo = [u for u in net.units if u.role != "input"]
    while todo:  # in an order where every source comes first
        for u in list(todo):
            sources = [a for (a, t) in w if t == u.id]
            if all(a in z for a in sources):
                s = b[u.id] + sum((w[a, u.id] * z[a] for a in sources), torch.zeros(1, dtype=torch.float64))
                z[u.id] = ACTIVATIONS[u.resolved_activation](s)
                todo.remove(u)
    loss = sum(
        (
            0.5 * ((z[uid] - torch.tensor(y, dtype=torch.float64).reshape(-1)) ** 2).sum()
            for uid, y in samples.targets.items()
        ),
        torch.zeros((), dtype=torch.float64),
    ) / len(next(iter(samples.inputs.values())))
    loss.backward()
    return {
        "loss": float(loss.detach()),
        "gradients": {
            "weights": [{"source": a, "target": t, "value": float(v.grad)} for (a, t), v in w.items()],  # type: ignore[arg-type]
            "biases": {uid: float(v.grad) for uid, v in b.items()},  # type: ignore[arg-type]
        },
    }


if __name__ == "__main__":
    serve(app)
