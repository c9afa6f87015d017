"""Networks of the common shapes, so nobody writes a hundred weight entries by hand."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from client._constants import BASE64_MIN_ELEMENTS
from client.arrays import encode, numpy_available
from service.wire import ActivationName, LossName, Network


def _edge(key: str | tuple[str, str]) -> tuple[str, str]:
    if isinstance(key, tuple):
        return key
    source, arrow, target = key.partition("->")
    if not arrow:
        raise ValueError(f"a weight is named 'source->target', not {key!r}")
    return source.strip(), target.strip()


def single_units(
    weights: Mapping[str | tuple[str, str], float],
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    activation: ActivationName = "sigmoid",
    output_activation: ActivationName = "identity",
    biases: Mapping[str, float] | None = None,
    activations: Mapping[str, ActivationName] | None = None,
    loss: LossName = "half_squared_error",
    columns: bool = False,
) -> Network:
    """A network of single units (one unit per id, as a derivation draws them), from its weights.

    `single_units({"x->j": 0.5, "j->k": -0.3, "k->o": 0.8}, inputs=["x"], outputs=["o"])` is
    the chain x -> j -> k -> o: hidden units use `activation`, outputs `output_activation`, and any unit
    can be given its own in `activations`. With `columns=True` the weights are sent as the
    columns `{source, target, value}` (compact and fast for thousands of weights), and every
    answer gives them back as columns.
    """
    edges = {_edge(key): float(value) for key, value in weights.items()}
    seen = list(dict.fromkeys([*inputs, *(uid for pair in edges for uid in pair), *outputs]))
    roles = {uid: "input" for uid in inputs} | {uid: "output" for uid in outputs}
    units: list[dict[str, Any]] = []
    for uid in seen:
        role = roles.get(uid, "hidden")
        unit: dict[str, Any] = {"id": uid, "role": role}
        if role != "input":
            default = output_activation if role == "output" else activation
            unit["activation"] = (activations or {}).get(uid, default)
            if biases and uid in biases:
                unit["bias"] = float(biases[uid])
        units.append(unit)
    return Network.model_validate(
        {
            "units": units,
            "weights": {
                "source": [a for a, _ in edges],
                "target": [b for _, b in edges],
                "value": list(edges.values()),
            }
            if columns
            else [{"source": a, "target": b, "value": v} for (a, b), v in edges.items()],
            "loss": loss,
        }
    )


def mlp(
    sizes: Sequence[int],
    *,
    activation: ActivationName = "sigmoid",
    output_activation: ActivationName = "identity",
    loss: LossName = "half_squared_error",
    seed: int | None = None,
) -> Network:
    """A dense multilayer perceptron: one entry per layer, Glorot-normal weights, zero biases.

    Units are named `input`, `hidden1`, `hidden2`, ..., `output` (a layer each, `size` its
    width), and the weights `input -> hidden1`, ..., `hiddenN -> output`: name them so in
    `samples` (`{"inputs": {"input": ...}, "targets": {"output": ...}}`) and in answers.
    """
    if len(sizes) < 2 or any(size < 1 for size in sizes):
        raise ValueError("an MLP needs at least two layer sizes, each at least 1")
    ids = ["input", *(f"hidden{k}" for k in range(1, len(sizes) - 1)), "output"]
    units: list[dict[str, Any]] = [{"id": "input", "role": "input", "size": sizes[0]}]
    for k in range(1, len(sizes)):
        last = k == len(sizes) - 1
        units.append(
            {
                "id": ids[k],
                "role": "output" if last else "hidden",
                "size": sizes[k],
                "activation": output_activation if last else activation,
            }
        )
    weights = [
        {"source": ids[k], "target": ids[k + 1], "value": _glorot(sizes[k], sizes[k + 1], seed, k)}
        for k in range(len(sizes) - 1)
    ]
    return Network.model_validate({"units": units, "weights": weights, "loss": loss})


def _glorot(fan_in: int, fan_out: int, seed: int | None, layer: int) -> Any:
    std = math.sqrt(2.0 / (fan_in + fan_out))
    layer_seed = None if seed is None else seed * 1_000_003 + layer
    if numpy_available():
        import numpy as np

        matrix = np.random.default_rng(layer_seed).normal(scale=std, size=(fan_in, fan_out))
        return encode(matrix) if matrix.size >= BASE64_MIN_ELEMENTS else matrix.tolist()
    rng = random.Random(layer_seed)
    return [[rng.gauss(0.0, std) for _ in range(fan_out)] for _ in range(fan_in)]
