"""A network of the wire's JSON form as torch tensors, its loss written with torch's own
functions, for the tests that compare with torch (torch.optim, its schedulers, its autograd).

It shares no code with the engine: units are run in the order their inputs become ready, each
activation is torch's function or the formula neat-python 2.0 gives, and autograd finds every
derivative. Every weight, bias and response is a leaf tensor in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.reference import SELU_ALPHA, SELU_LAMBDA, _matrix, activation_of

torch = pytest.importorskip("torch")


def _clip(s: Any, low: float, high: float) -> Any:
    return torch.clamp(s, low, high)


#: every activation of the wire, in torch (neat's as neat-python 2.0 writes them)
ACTIVATIONS: dict[str, Callable[[Any, float], Any]] = {
    "identity": lambda s, a: s,
    "sigmoid": lambda s, a: torch.sigmoid(s),
    "tanh": lambda s, a: torch.tanh(s),
    "relu": lambda s, a: torch.relu(s),
    "leaky_relu": lambda s, a: torch.nn.functional.leaky_relu(s, a),
    # (torch's softplus turns linear past its threshold, 20: log(1 + e^s) is written out)
    "softplus": lambda s, a: torch.logaddexp(s, torch.zeros_like(s)),
    "softmax": lambda s, a: torch.softmax(s, dim=1),
    "elu": lambda s, a: torch.nn.functional.elu(s),
    "selu": lambda s, a: (
        SELU_LAMBDA * torch.where(s > 0, s, SELU_ALPHA * torch.expm1(torch.clamp(s, max=0.0)))
    ),
    "abs": lambda s, a: torch.abs(s),
    "square": lambda s, a: s * s,
    "cube": lambda s, a: s * s * s,
    "clamped": lambda s, a: _clip(s, -1.0, 1.0),
    "hat": lambda s, a: torch.clamp(1.0 - torch.abs(s), min=0.0),
    "neat_sigmoid": lambda s, a: torch.sigmoid(_clip(5.0 * s, -60.0, 60.0)),
    "neat_tanh": lambda s, a: torch.tanh(_clip(2.5 * s, -60.0, 60.0)),
    "neat_softplus": lambda s, a: 0.2 * torch.logaddexp(_clip(5.0 * s, -60.0, 60.0), torch.zeros_like(s)),
    "neat_sin": lambda s, a: torch.sin(_clip(5.0 * s, -60.0, 60.0)),
    "neat_gauss": lambda s, a: torch.exp(-5.0 * _clip(s, -3.4, 3.4) ** 2),
    "neat_exp": lambda s, a: torch.exp(_clip(s, -60.0, 60.0)),
    "neat_log": lambda s, a: torch.log(torch.clamp(s, min=1e-7)),
    "neat_inv": lambda s, a: torch.where(s != 0, 1.0 / torch.where(s != 0, s, 1.0), 0.0 * s),
}


class TorchNetwork:
    """The parameters of a wire network as torch leaves, and its reduced loss on rows of a batch."""

    def __init__(self, net: dict[str, Any], samples: dict[str, Any]) -> None:
        self.net = net
        self.size = {u["id"]: u.get("size", 1) for u in net["units"]}
        self.units = {u["id"]: u for u in net["units"]}
        size = self.size
        self.x = {k: torch.tensor(_matrix(v, (-1, size[k]))) for k, v in samples["inputs"].items()}
        self.y = {k: torch.tensor(_matrix(v, (-1, size[k]))) for k, v in samples.get("targets", {}).items()}
        self.batch = next(iter(self.x.values())).shape[0]

        def leaf(value: Any, shape: tuple[int, ...]) -> Any:
            return torch.tensor(_matrix(value, shape), requires_grad=True)

        self.w = [leaf(e["value"], (size[e["source"]], size[e["target"]])) for e in net["weights"]]
        hidden = [u for u in net["units"] if u.get("role", "hidden") != "input"]
        self.b = {u["id"]: leaf(u.get("bias", np.zeros(size[u["id"]])), (size[u["id"]],)) for u in hidden}
        self.responses = any("response" in u for u in net["units"])  # else they are no parameters
        self.r = {u["id"]: leaf(u.get("response", np.ones(size[u["id"]])), (size[u["id"]],)) for u in hidden}

    @property
    def parameters(self) -> list[Any]:
        """Every parameter in the network's order: weights, biases, then responses."""
        return [*self.w, *self.b.values(), *(self.r.values() if self.responses else ())]

    def loss(self, rows: Any, reduction: str) -> Any:
        """The loss of the samples `rows` (a LongTensor), reduced as the API reduces it."""
        z = {k: v[rows] for k, v in self.x.items()}
        s = {}
        pending = [u for u in self.net["units"] if u.get("role", "hidden") != "input"]
        while pending:
            for u in list(pending):
                uid = u["id"]
                feeds = [(k, e) for k, e in enumerate(self.net["weights"]) if e["target"] == uid]
                if not all(e["source"] in z for _, e in feeds):
                    continue
                total = torch.zeros(len(rows), self.size[uid], dtype=torch.float64)
                for k, e in feeds:
                    total = total + z[e["source"]] @ self.w[k]
                if u.get("aggregation") == "mean" and feeds:
                    total = total / sum(self.size[e["source"]] for _, e in feeds)
                s[uid] = self.b[uid] + self.r[uid] * total
                z[uid] = ACTIVATIONS[activation_of(u)](s[uid], u.get("slope", 0.01))
                pending.remove(u)
        loss = self.net.get("loss", "half_squared_error")
        total = torch.zeros((), dtype=torch.float64)
        for uid, target in self.y.items():
            out, t, act = z[uid], target[rows], activation_of(self.units[uid])
            if loss == "half_squared_error":
                total = total + 0.5 * ((out - t) ** 2).sum()
            elif loss == "squared_error":
                total = total + ((out - t) ** 2).sum()
            elif loss == "cross_entropy" and act == "sigmoid":  # stably from s, as the engine
                total = total + torch.nn.functional.binary_cross_entropy_with_logits(
                    s[uid], t, reduction="sum"
                )
            elif loss == "cross_entropy":
                total = total - (t * torch.log_softmax(s[uid], dim=1)).sum()
            elif loss == "binary_cross_entropy":
                total = total + torch.nn.functional.binary_cross_entropy(out, t, reduction="sum")
            elif loss == "huber":
                delta = self.net.get("huber_delta", 1.0)
                total = total + torch.nn.functional.huber_loss(out, t, reduction="sum", delta=delta)
            else:
                raise ValueError(loss)
        return total / len(rows) if reduction == "mean" else total

    def flat(self) -> np.ndarray:
        """The parameters, flat in the network's order (`listed` gives the engine's so)."""
        return np.concatenate([p.detach().numpy().reshape(-1) for p in self.parameters])


def listed(plan: Any, theta: np.ndarray) -> np.ndarray:
    """The engine's parameters flat in the network's order: weights, biases, responses."""
    units = [u for u in plan.units if u.role != "input"]
    parts = [theta[w.params] for w in plan.weights] + [theta[plan.bias_params(u)] for u in units]
    if plan.has_responses:
        parts += [theta[plan.response_params(u)] for u in units]
    return np.concatenate(parts)


def relative_error(engine_theta: np.ndarray, torch_theta: np.ndarray) -> float:
    """max |engine - torch| / max |torch|: the error relative to the parameters' scale (an
    element near zero would make elementwise relative errors meaningless)."""
    scale = float(np.max(np.abs(torch_theta), initial=0.0))
    return float(np.max(np.abs(engine_theta - torch_theta), initial=0.0)) / (scale or 1.0)
