"""Hypothesis strategies: random DAGs of units and layers, in the wire's form, with samples."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from hypothesis import strategies as st

from service import wire

# every name the wire takes: a new activation or loss is drawn here (and so needs its own
# definition in tests/reference.py) as soon as it is in the wire's Literal
ACTIVATIONS = list(wire.ACTIVATIONS)
LOSSES = list(wire.LOSSES)
#: the losses whose torch form differentiates exactly: BCELoss's own backward divides by
#: max(z (1 - z), 1e-12), not the derivative near saturation (tests/test_torch_curvature.py
#: compares binary_cross_entropy with autograd of the exact expression instead)
TORCH_EXACT_LOSSES = [loss for loss in LOSSES if loss != "binary_cross_entropy"]
#: the output activations each loss that restricts them takes (its targets then lie in [0, 1])
OUTPUT_ACTIVATIONS = {
    "cross_entropy": ["sigmoid", "softmax"],
    "binary_cross_entropy": ["sigmoid", "neat_sigmoid"],
}
#: the activations whose value and derivative stay moderate: several epochs of SGD on the others
#: (e^s, 1/s, log s, s^3, and neat's steep sin, gauss, sigmoid and tanh) can diverge, or amplify
#: a rounding difference past any tolerance (by 10^4 an epoch seen on neat_sin)
TAME = [
    a
    for a in ACTIVATIONS
    if a
    not in {
        "neat_exp",
        "neat_log",
        "neat_inv",
        "square",
        "cube",
        "neat_sin",
        "neat_gauss",
        "neat_sigmoid",
        "neat_tanh",
    }
]


def encode(array: np.ndarray, dtype: str = "float64") -> dict[str, Any]:
    data = np.ascontiguousarray(array, dtype="<f8" if dtype == "float64" else "<f4")
    return {"dtype": dtype, "shape": list(data.shape), "data": base64.b64encode(data.tobytes()).decode()}


def _form(rng: np.random.Generator, array: np.ndarray, scalar_ok: bool) -> Any:
    """The array in one of the wire's forms, drawn at random."""
    pick = rng.integers(4)
    if pick == 0 and scalar_ok and array.size == 1:
        return float(array.ravel()[0])
    if pick == 1:
        return encode(array)
    return array.tolist()


@st.composite
def networks(
    draw: st.DrawFn,
    max_hidden: int = 4,
    max_size: int = 3,
    singles: bool = False,
    activations: list[str] = ACTIVATIONS,
    losses: list[str] = LOSSES,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random network (any DAG, shuffled listing) and a batch for it."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    loss = draw(st.sampled_from(losses))
    n_in, n_hidden, n_out = draw(st.integers(1, 2)), draw(st.integers(0, max_hidden)), draw(st.integers(1, 2))
    size = (lambda: 1) if singles else (lambda: draw(st.integers(1, max_size)))
    units: list[dict[str, Any]] = [{"id": f"in{i}", "role": "input", "size": size()} for i in range(n_in)]
    rest = [{"id": f"h{i}", "role": "hidden"} for i in range(n_hidden)]
    rest += [{"id": f"out{i}", "role": "output"} for i in range(n_out)]
    for u in rest:
        u["size"] = size()
        if loss in OUTPUT_ACTIVATIONS and u["role"] == "output":
            u["activation"] = draw(st.sampled_from(OUTPUT_ACTIVATIONS[loss]))
        else:
            u["activation"] = draw(st.sampled_from([*activations, None]))
            if u["activation"] is None:
                del u["activation"]
    order = rest.copy()
    rng.shuffle(order)  # outputs may come before hidden units and feed them
    topo = units + order
    weights = []
    for j, target in enumerate(topo):
        if target["role"] == "input":
            continue
        sources = [s for s in topo[:j] if rng.random() < 0.6]
        for source in sources:
            value = rng.normal(scale=1.0 / np.sqrt(source["size"]), size=(source["size"], target["size"]))
            weights.append({"source": source["id"], "target": target["id"], "value": _form(rng, value, True)})
        if not sources or rng.random() < 0.7:
            target["bias"] = _form(rng, rng.normal(scale=0.5, size=target["size"]), True)
    for u in rest:  # the fields neat-python's nodes have: a response, the mean, a slope
        if u.get("activation") == "leaky_relu" and rng.random() < 0.5:
            u["slope"] = float(rng.uniform(0.0, 0.5))
        if rng.random() < 0.25:
            u["aggregation"] = "mean" if rng.random() < 0.7 else "sum"
        if rng.random() < 0.2:
            u["response"] = _form(rng, rng.normal(loc=1.0, scale=0.5, size=u["size"]), True)
    rng.shuffle(weights)
    listed = topo.copy()
    rng.shuffle(listed)
    for u in listed:
        if u.get("size") == 1 and rng.random() < 0.5:
            del u["size"]
    batch = draw(st.integers(1, 5))
    inputs = {u["id"]: _form(rng, rng.normal(size=(batch, u.get("size", 1))), False) for u in units}
    targets = {}
    for u in rest:
        if u["role"] == "output":
            k = u.get("size", 1)
            y = (
                rng.uniform(0, 1, size=(batch, k))
                if loss in OUTPUT_ACTIVATIONS
                else rng.normal(size=(batch, k))
            )
            targets[u["id"]] = _form(rng, y, False)
    net = {"units": listed, "weights": weights, "loss": loss}
    if loss == "huber" and rng.random() < 0.5:
        net["huber_delta"] = float(rng.choice([0.1, 0.5, 2.0]))
    return net, {"inputs": inputs, "targets": targets}


@st.composite
def sgd_options(draw: st.DrawFn, batch_sizes: tuple[int | None, ...] = (None, 1, 2)) -> Any:
    """SGD options over momentum, Nesterov, weight decay, minibatches, shuffling, reduction."""
    from service.engine import SgdOptions  # only the engine's tests need it

    momentum, nesterov = draw(st.sampled_from([(0.0, False), (0.9, False), (0.5, True)]))
    return SgdOptions(
        learning_rate=0.05,
        epochs=3,
        batch_size=draw(st.sampled_from(batch_sizes)),
        shuffle=draw(st.booleans()),
        seed=7,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=draw(st.sampled_from([0.0, 0.01])),
        reduction=draw(st.sampled_from(["mean", "sum"])),
    )
