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


SELU_LAMBDA, SELU_ALPHA = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717


def _neat(name: str, s: Any) -> Any:
    """neat-python 2.0's activations (neat/activations.py), written with autograd's numpy."""
    if name == "neat_sigmoid":
        return 0.5 * (anp.tanh(0.5 * anp.clip(5.0 * s, -60.0, 60.0)) + 1.0)
    if name == "neat_tanh":
        return anp.tanh(anp.clip(2.5 * s, -60.0, 60.0))
    if name == "neat_softplus":
        return 0.2 * anp.logaddexp(0.0, anp.clip(5.0 * s, -60.0, 60.0))
    if name == "neat_sin":
        return anp.sin(anp.clip(5.0 * s, -60.0, 60.0))
    if name == "neat_gauss":
        return anp.exp(-5.0 * anp.clip(s, -3.4, 3.4) ** 2)
    if name == "neat_exp":
        return anp.exp(anp.clip(s, -60.0, 60.0))
    if name == "neat_log":
        return anp.log(anp.maximum(s, 1e-7))
    if name == "neat_inv":
        nonzero = s != 0
        return anp.where(nonzero, 1.0 / anp.where(nonzero, s, 1.0), 0.0 * s)
    raise ValueError(name)


def _act(name: str, s: Any, slope: float = 0.01) -> Any:
    if name.startswith("neat_"):
        return _neat(name, s)
    if name == "elu":
        return anp.where(s > 0, s, anp.exp(anp.minimum(s, 0.0)) - 1.0)
    if name == "selu":
        return SELU_LAMBDA * anp.where(s > 0, s, SELU_ALPHA * (anp.exp(anp.minimum(s, 0.0)) - 1.0))
    if name == "abs":
        return anp.abs(s)
    if name == "square":
        return s**2
    if name == "cube":
        return s**3
    if name == "clamped":
        return anp.clip(s, -1.0, 1.0)
    if name == "hat":
        return anp.maximum(1.0 - anp.abs(s), 0.0 * s)
    if name == "identity":
        return s
    if name == "sigmoid":
        return 0.5 * (anp.tanh(0.5 * s) + 1.0)
    if name == "tanh":
        return anp.tanh(s)
    if name == "relu":
        return anp.where(s > 0, s, 0.0 * s)
    if name == "leaky_relu":
        return anp.where(s > 0, s, slope * s)
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
            "r": {
                u["id"]: _matrix(u.get("response", np.ones(self.size[u["id"]])), (self.size[u["id"]],))
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
                weighted = 0.0
                for k, w in feeds:
                    weighted = weighted + anp.dot(z[w["source"]], params["w"][k])
                if u.get("aggregation") == "mean" and feeds:
                    weighted = weighted / sum(self.size[w["source"]] for _, w in feeds)
                total = params["b"][uid] + params["r"][uid] * weighted + params["ds"][uid][rows]
                s[uid], z[uid] = total, _act(activation_of(u), total, u.get("slope", 0.01))
                pending.remove(u)
        losses = 0.0
        for uid, y in self.y.items():
            out, y = z[uid], y[rows]
            loss = self.net.get("loss", "half_squared_error")
            if loss == "half_squared_error":
                losses = losses + 0.5 * anp.sum((out - y) ** 2, axis=1)
            elif loss == "squared_error":
                losses = losses + anp.sum((out - y) ** 2, axis=1)
            elif loss == "binary_cross_entropy":  # torch BCELoss's terms, each log clamped at -100
                log_z, log_1mz = anp.maximum(anp.log(out), -100.0), anp.maximum(anp.log(1.0 - out), -100.0)
                losses = losses - anp.sum(y * log_z + (1 - y) * log_1mz, axis=1)
            elif loss == "huber":
                delta, diff = self.net.get("huber_delta", 1.0), out - y
                size = anp.abs(diff)
                terms = anp.where(size < delta, 0.5 * diff**2, delta * (size - 0.5 * delta))
                losses = losses + anp.sum(terms, axis=1)
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
