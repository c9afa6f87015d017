"""A network of the wire's JSON form written in torch, float64, unit by unit: every activation,
loss, response and aggregation as torch computes it, so torch's autograd can be the reference
for first and second derivatives. Imported only where torch is (tests skip without it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from tests.reference import SELU_ALPHA, SELU_LAMBDA, _matrix, activation_of

Tensor = torch.Tensor


def _clamp(t: Tensor, scale: float, bound: float) -> Tensor:
    return torch.clamp(t * scale, -bound, bound)


def activation(name: str, s: Tensor, slope: float) -> Tensor:
    """Each activation as torch computes it (neat-python's with their clamps)."""
    if name == "identity":
        return s
    if name == "sigmoid":
        return torch.sigmoid(s)
    if name == "tanh":
        return torch.tanh(s)
    if name == "relu":
        return torch.relu(s)
    if name == "leaky_relu":
        return F.leaky_relu(s, slope)
    if name == "softplus":  # exact (F.softplus returns s itself past its threshold of 20)
        return torch.logaddexp(s, torch.zeros_like(s))
    if name == "softmax":
        return torch.softmax(s, dim=1)
    if name == "elu":
        return F.elu(s)
    if name == "selu":
        return SELU_LAMBDA * torch.where(s > 0, s, SELU_ALPHA * torch.expm1(torch.clamp(s, max=0.0)))
    if name == "abs":
        return torch.abs(s)
    if name == "square":
        return s * s
    if name == "cube":
        return s**3
    if name == "clamped":
        return torch.clamp(s, -1.0, 1.0)
    if name == "hat":
        return torch.clamp(1.0 - torch.abs(s), min=0.0)
    if name == "neat_sigmoid":
        return torch.sigmoid(_clamp(s, 5.0, 60.0))
    if name == "neat_tanh":
        return torch.tanh(_clamp(s, 2.5, 60.0))
    if name == "neat_softplus":
        return 0.2 * torch.log1p(torch.exp(_clamp(s, 5.0, 60.0)))
    if name == "neat_sin":
        return torch.sin(_clamp(s, 5.0, 60.0))
    if name == "neat_gauss":
        return torch.exp(-5.0 * _clamp(s, 1.0, 3.4) ** 2)
    if name == "neat_exp":
        return torch.exp(_clamp(s, 1.0, 60.0))
    if name == "neat_log":
        return torch.log(torch.clamp(s, min=1e-7))
    if name == "neat_inv":
        nonzero = s != 0
        return torch.where(nonzero, 1.0 / torch.where(nonzero, s, torch.ones_like(s)), torch.zeros_like(s))
    raise ValueError(name)


def loss_terms(
    net: dict[str, Any], unit: dict[str, Any], s: Tensor, z: Tensor, y: Tensor, bce_module: bool
) -> Tensor:
    """An output's share of sum_n E_n: torch's own loss, summed over the batch and the entries.

    BCE is torch's BCELoss itself (`bce_module`), or the expression BCELoss computes its value by
    (ATen's binary_cross_entropy: (y - 1) max(log1p(-z), -100) - y max(log z, -100)), whose
    autograd derivatives are exact: BCELoss's own backward divides by max(z (1 - z), 1e-12) and its
    double backward is off by ~1e-11 relative even at z = 0.3 (measured, torch 2.13)."""
    loss = net.get("loss", "half_squared_error")
    if loss == "half_squared_error":
        return 0.5 * ((z - y) ** 2).sum()
    if loss == "squared_error":
        return ((z - y) ** 2).sum()
    if loss == "binary_cross_entropy" and bce_module:
        return torch.nn.BCELoss(reduction="sum")(z, y)
    if loss == "binary_cross_entropy":
        log_z, log_1mz = torch.clamp(torch.log(z), min=-100.0), torch.clamp(torch.log1p(-z), min=-100.0)
        return ((y - 1.0) * log_1mz - y * log_z).sum()
    if loss == "huber":
        return torch.nn.HuberLoss(reduction="sum", delta=net.get("huber_delta", 1.0))(z, y)
    if activation_of(unit) == "sigmoid":  # cross_entropy, from s as the service computes it
        return F.binary_cross_entropy_with_logits(s, y, reduction="sum")
    return -(y * F.log_softmax(s, dim=1)).sum()


@dataclass
class TorchNet:
    """The parameters as leaf tensors (responses only where the network gives one) and the
    samples, in the network's order."""

    net: dict[str, Any]
    weights: list[Tensor]
    biases: dict[str, Tensor]
    responses: dict[str, Tensor]
    x: dict[str, Tensor]
    y: dict[str, Tensor]

    @classmethod
    def of(cls, net: dict[str, Any], samples: dict[str, Any]) -> TorchNet:
        size = {u["id"]: u.get("size", 1) for u in net["units"]}
        hidden = [u for u in net["units"] if u.get("role", "hidden") != "input"]

        def leaf(value: Any, shape: tuple[int, ...]) -> Tensor:
            return torch.tensor(_matrix(value, shape), dtype=torch.float64, requires_grad=True)

        weights = [leaf(w["value"], (size[w["source"]], size[w["target"]])) for w in net["weights"]]
        biases = {u["id"]: leaf(u.get("bias", np.zeros(size[u["id"]])), (size[u["id"]],)) for u in hidden}
        responses = {}
        if any("response" in u for u in hidden):
            responses = {
                u["id"]: leaf(u.get("response", np.ones(size[u["id"]])), (size[u["id"]],)) for u in hidden
            }
        x = {k: leaf(v, (-1, size[k])) for k, v in samples["inputs"].items()}
        y = {
            k: torch.tensor(_matrix(v, (-1, size[k])), dtype=torch.float64)
            for k, v in samples["targets"].items()
        }
        return cls(net, weights, biases, responses, x, y)

    @property
    def params(self) -> tuple[Tensor, ...]:
        return (*self.weights, *self.biases.values(), *self.responses.values())

    def loss(
        self, params: tuple[Tensor, ...] | None = None, reduction: str = "mean", bce_module: bool = False
    ) -> Tensor:
        """The reduced loss, at `params` (in the order of `params`) or at the network's own."""
        n_w, n_b = len(self.weights), len(self.biases)
        params = self.params if params is None else params
        weights = params[:n_w]
        biases = dict(zip(self.biases, params[n_w : n_w + n_b], strict=True))
        responses = dict(zip(self.responses, params[n_w + n_b :], strict=True))
        units = {u["id"]: u for u in self.net["units"]}
        size = {uid: u.get("size", 1) for uid, u in units.items()}
        z: dict[str, Tensor] = dict(self.x)
        s: dict[str, Tensor] = {}
        pending = [u for u in self.net["units"] if u.get("role", "hidden") != "input"]
        rows = next(iter(self.x.values())).shape[0]
        while pending:
            for u in list(pending):
                uid = u["id"]
                feeds = [(k, w) for k, w in enumerate(self.net["weights"]) if w["target"] == uid]
                if any(w["source"] not in z for _, w in feeds):
                    continue
                agg = torch.zeros(rows, size[uid], dtype=torch.float64)
                for k, w in feeds:
                    agg = agg + z[w["source"]] @ weights[k]
                if u.get("aggregation") == "mean" and feeds:
                    agg = agg / sum(size[w["source"]] for _, w in feeds)
                scaled = responses[uid] * agg if responses else agg
                s[uid] = biases[uid] + scaled
                z[uid] = activation(activation_of(u), s[uid], u.get("slope", 0.01))
                pending.remove(u)
        total = sum(loss_terms(self.net, units[k], s[k], z[k], y, bce_module) for k, y in self.y.items())
        assert isinstance(total, Tensor)
        return total / rows if reduction == "mean" else total
