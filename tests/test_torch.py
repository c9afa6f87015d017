"""Against torch itself, where it is installed (it is not a dependency: `pip install torch`).

The engine's SGD follows torch.optim.SGD's documented update; here torch's own optimizer,
on torch's own autograd, trains the same random networks and must agree to 1e-9. One
difference is deliberate: torch skips a parameter whose .grad is None (one with no path to
the loss), while the documented update, which the API applies to every weight and bias,
still decays it; so such parameters get a zero .grad here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from service import engine
from tests.reference import _matrix, activation_of
from tests.strategies import networks, sgd_options
from tests.support import assert_parameters_close, compile_and_bind

torch = pytest.importorskip("torch")


def _act(name: str, s: Any) -> Any:
    return {
        "identity": lambda t: t,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.01),
        "softplus": torch.nn.functional.softplus,
        "softmax": lambda t: torch.softmax(t, dim=1),
    }[name](s)


def torch_train(net: dict[str, Any], samples: dict[str, Any], opt: engine.SgdOptions) -> dict[str, Any]:
    size = {u["id"]: u.get("size", 1) for u in net["units"]}
    units = {u["id"]: u for u in net["units"]}
    x = {k: torch.tensor(_matrix(v, (-1, size[k]))) for k, v in samples["inputs"].items()}
    y = {k: torch.tensor(_matrix(v, (-1, size[k]))) for k, v in samples["targets"].items()}
    w = [
        torch.tensor(_matrix(e["value"], (size[e["source"]], size[e["target"]])), requires_grad=True)
        for e in net["weights"]
    ]
    b = {
        u["id"]: torch.tensor(
            _matrix(u.get("bias", np.zeros(size[u["id"]])), (size[u["id"]],)), requires_grad=True
        )
        for u in net["units"]
        if u.get("role", "hidden") != "input"
    }
    sgd = torch.optim.SGD(
        [*w, *b.values()],
        lr=opt.learning_rate,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        weight_decay=opt.weight_decay,
    )

    def loss_of(rows: Any) -> Any:
        z = {k: v[rows] for k, v in x.items()}
        pending = [u for u in net["units"] if u.get("role", "hidden") != "input"]
        while pending:
            for u in list(pending):
                feeds = [(k, e) for k, e in enumerate(net["weights"]) if e["target"] == u["id"]]
                if all(e["source"] in z for _, e in feeds):
                    s = b[u["id"]] + torch.zeros(len(rows), size[u["id"]], dtype=torch.float64)
                    for k, e in feeds:
                        s = s + z[e["source"]] @ w[k]
                    z[u["id"]] = _act(activation_of(u), s)
                    pending.remove(u)
        total = torch.zeros((), dtype=torch.float64)
        for k, target in y.items():
            out, t = z[k], target[rows]
            if net["loss"] == "half_squared_error":
                total = total + 0.5 * ((out - t) ** 2).sum()
            elif net["loss"] == "squared_error":
                total = total + ((out - t) ** 2).sum()
            elif activation_of(units[k]) == "sigmoid":
                total = total + torch.nn.functional.binary_cross_entropy(out, t, reduction="sum")
            else:
                total = total - (t * torch.log(out)).sum()
        return total / len(t) if opt.reduction == "mean" else total

    rng = np.random.default_rng(opt.seed)
    batch = next(iter(x.values())).shape[0]
    step = opt.batch_size or batch
    for _ in range(opt.epochs):
        order = rng.permutation(batch) if opt.shuffle else np.arange(batch)
        for start in range(0, batch, step):
            sgd.zero_grad()
            loss_of(torch.tensor(order[start : start + step])).backward()
            for p in [*w, *b.values()]:
                if p.grad is None:  # no path to an output: the documented update still decays it
                    p.grad = torch.zeros_like(p)
            sgd.step()
    return {"w": [t.detach().numpy() for t in w], "b": {k: t.detach().numpy() for k, t in b.items()}}


@settings(max_examples=40)
@given(networks(max_hidden=3), sgd_options(batch_sizes=(None, 2)))
def test_sgd_agrees_with_torch_optim_sgd(
    case: tuple[dict[str, Any], dict[str, Any]], opt: engine.SgdOptions
) -> None:
    net, samples = case
    plan, batch = compile_and_bind(net, samples)
    trained = engine.train(plan, batch, opt)
    assert_parameters_close(plan, trained.theta, torch_train(net, samples, opt))
