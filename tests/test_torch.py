"""Against torch itself, where it is installed (it is not a dependency: `pip install torch`).

The engine's SGD follows torch.optim.SGD's documented update; here torch's own optimizer,
on torch's own autograd, trains the same random networks and must agree to 1e-9. One
difference is deliberate: torch skips a parameter whose .grad is None (one with no path to
the loss), while the documented update, which the API applies to every weight and bias,
still decays it; so such parameters get a zero .grad here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import engine, wire
from tests.reference import _matrix, activation_of
from tests.strategies import networks

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
@given(
    networks(max_hidden=3),
    st.sampled_from([(0.0, False), (0.9, False), (0.5, True)]),
    st.sampled_from([0.0, 0.01]),
    st.sampled_from([None, 2]),
    st.booleans(),
    st.sampled_from(["mean", "sum"]),
)
def test_sgd_agrees_with_torch_optim_sgd(
    case: tuple[dict[str, Any], dict[str, Any]],
    momentum: tuple[float, bool],
    weight_decay: float,
    batch_size: int | None,
    shuffle: bool,
    reduction: str,
) -> None:
    net, samples = case
    opt = engine.SgdOptions(
        learning_rate=0.05,
        epochs=3,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=3,
        momentum=momentum[0],
        nesterov=momentum[1],
        weight_decay=weight_decay,
        reduction=reduction,
    )
    plan = engine.compile_network(wire.Network.model_validate_json(json.dumps(net)))
    batch = engine.bind_samples(plan, wire.Samples.model_validate_json(json.dumps(samples)), True)
    trained = engine.train(plan, batch, opt)
    expected = torch_train(net, samples, opt)
    for k, w in enumerate(plan.weights):
        np.testing.assert_allclose(
            trained.theta[w.params].reshape(w.shape), expected["w"][k], rtol=1e-9, atol=1e-12
        )
    for u in plan.units:
        if u.role != "input":
            np.testing.assert_allclose(
                trained.theta[plan.bias_params(u)], expected["b"][u.id], rtol=1e-9, atol=1e-12
            )
