"""An independent reference: the seed's maths written per unit with HIPS autograd.

It shares no code with the engine: it walks units in the order their inputs become ready,
uses other (equally exact) formulas for each activation and loss, and lets autograd find
every derivative. delta_j = dE_n/ds_j comes from a zero added to each s_j.
"""

from __future__ import annotations

import base64
from typing import Any

import autograd.numpy as anp
import numpy as np
from autograd import grad

Net = dict[str, Any]


def _act(name: str, s: Any) -> Any:
    if name == "identity":
        return s
    if name == "sigmoid":
        return 0.5 * (anp.tanh(0.5 * s) + 1.0)
    if name == "tanh":
        return anp.tanh(s)
    if name == "relu":
        return anp.where(s > 0, s, 0.0 * s)
    if name == "leaky_relu":
        return anp.where(s > 0, s, 0.01 * s)
    if name == "softplus":
        return anp.logaddexp(0.0, s)
    if name == "softmax":
        e = anp.exp(s - anp.max(s, axis=1, keepdims=True))
        return e / anp.sum(e, axis=1, keepdims=True)
    raise ValueError(name)


def activation_of(unit: dict[str, Any]) -> str:
    if unit.get("activation"):
        return str(unit["activation"])
    return "sigmoid" if unit.get("role", "hidden") == "hidden" else "identity"


def _matrix(value: Any, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(value, dict):  # the wire's encoded form
        dtype = "<f8" if value["dtype"] == "float64" else "<f4"
        value = np.frombuffer(base64.b64decode(value["data"]), dtype=dtype)
    return np.asarray(value, dtype=float).reshape(shape)


class Reference:
    """Forward values, losses and exact gradients of one network on one batch."""

    def __init__(self, net: Net, samples: dict[str, Any]) -> None:
        self.net = net
        self.units = {u["id"]: u for u in net["units"]}
        self.size = {u["id"]: u.get("size", 1) for u in net["units"]}
        self.x = {k: _matrix(v, (-1, self.size[k])) for k, v in samples["inputs"].items()}
        self.y = {k: _matrix(v, (-1, self.size[k])) for k, v in samples.get("targets", {}).items()}
        self.batch = next(iter(self.x.values())).shape[0]
        self.params = {
            "w": [
                _matrix(w["value"], (self.size[w["source"]], self.size[w["target"]])) for w in net["weights"]
            ],
            "b": {
                u["id"]: _matrix(u.get("bias", np.zeros(self.size[u["id"]])), (self.size[u["id"]],))
                for u in net["units"]
                if u.get("role", "hidden") != "input"
            },
            "ds": {
                u["id"]: np.zeros((self.batch, self.size[u["id"]]))
                for u in net["units"]
                if u.get("role", "hidden") != "input"
            },
        }

    def run(
        self, params: dict[str, Any], rows: slice | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """s, z per unit and E_n per sample."""
        rows = rows or slice(None)
        z: dict[str, Any] = {k: v[rows] for k, v in self.x.items()}
        s: dict[str, Any] = {}
        pending = [u for u in self.net["units"] if u.get("role", "hidden") != "input"]
        while pending:
            for u in list(pending):
                uid = u["id"]
                feeds = [(k, w) for k, w in enumerate(self.net["weights"]) if w["target"] == uid]
                if any(w["source"] not in z for _, w in feeds):
                    continue
                total = params["b"][uid] + params["ds"][uid][rows]
                for k, w in feeds:
                    total = total + anp.dot(z[w["source"]], params["w"][k])
                s[uid], z[uid] = total, _act(activation_of(u), total)
                pending.remove(u)
        losses = 0.0
        for uid, y in self.y.items():
            out, y = z[uid], y[rows]
            loss = self.net.get("loss", "half_squared_error")
            if loss == "half_squared_error":
                losses = losses + 0.5 * anp.sum((out - y) ** 2, axis=1)
            elif loss == "squared_error":
                losses = losses + anp.sum((out - y) ** 2, axis=1)
            elif activation_of(self.units[uid]) == "sigmoid":
                losses = losses - anp.sum(y * anp.log(out) + (1 - y) * anp.log(1 - out), axis=1)
            else:
                losses = losses - anp.sum(y * anp.log(out), axis=1)
        return s, z, losses

    def values(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        return self.run(self.params)

    def gradients(self, rows: slice | None = None) -> dict[str, Any]:
        """d(sum of E_n over `rows`)/d(every weight, bias and s)."""
        return grad(lambda p: anp.sum(self.run(p, rows)[2]))(self.params)

    def per_sample(self) -> list[dict[str, Any]]:
        return [self.gradients(slice(n, n + 1)) for n in range(self.batch)]
