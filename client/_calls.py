"""Each endpoint's call, built from a client method's arguments: the twins' methods are these,
sent and awaited or not."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from client._core import Call
from client.display import Explanation, Svg, Training
from service.wire import (
    ENDPOINTS,
    ArrayEncoding,
    Gradients,
    Network,
    OptimizerName,
    ParameterVector,
    Reduction,
    Samples,
    Schedule,
    TrainingState,
)

NetworkLike = Network | Mapping[str, Any]
SamplesLike = Samples | Mapping[str, Any]
#: a learning-rate schedule ({"kind": "cosine", "t_max": 50}) and a previous answer's state
ScheduleLike = Schedule | Mapping[str, Any]
StateLike = TrainingState | Mapping[str, Any]


def post(name: str, body: dict[str, Any], **query: str) -> Call:
    """A call of the compute endpoint `name`: its path and its answer's model (None: text) are
    the wire's (`service.wire.ENDPOINTS`)."""
    endpoint = ENDPOINTS[name]
    path = f"{endpoint.path}?{urlencode(query)}" if query else endpoint.path
    return Call("POST", path, endpoint.response, body)


def forward(network: NetworkLike, samples: SamplesLike, array_encoding: ArrayEncoding | None) -> Call:
    body = {"network": network, "samples": samples, "array_encoding": array_encoding}
    return post("forward", body)


def gradients(
    network: NetworkLike,
    samples: SamplesLike,
    reduction: Reduction,
    per_sample: bool,
    include_units: bool,
    array_encoding: ArrayEncoding | None,
    wrt_inputs: bool = False,
) -> Call:
    body = {
        "network": network,
        "samples": samples,
        "reduction": reduction,
        "per_sample": per_sample,
        "include_units": include_units,
        "array_encoding": array_encoding,
        "wrt_inputs": wrt_inputs or None,  # sent only when asked for: a server without it still answers
    }
    return post("gradients", body)


def hvp(
    network: NetworkLike,
    samples: SamplesLike,
    vector: ParameterVector | Mapping[str, Any],
    reduction: Reduction,
    array_encoding: ArrayEncoding | None,
) -> Call:
    body = {
        "network": network,
        "samples": samples,
        "vector": vector,
        "reduction": reduction,
        "array_encoding": array_encoding,
    }
    return post("hvp", body)


def sgd(network: NetworkLike, samples: SamplesLike, learning_rate: float, options: dict[str, Any]) -> Call:
    body = {"network": network, "samples": samples, "learning_rate": learning_rate, **options}
    call = post("sgd", body)
    call.model = Training  # an SgdResponse that shows its loss curve in a notebook
    return call


def explain(
    network: NetworkLike,
    samples: SamplesLike,
    sample: int,
    max_paths: int,
    array_encoding: ArrayEncoding | None,
) -> Call:
    body = {
        "network": network,
        "samples": samples,
        "sample": sample,
        "max_paths": max_paths,
        "array_encoding": array_encoding,
    }
    call = post("explain", body)
    call.model = Explanation  # an ExplainResponse whose formulas a notebook typesets
    return call


def check(
    network: NetworkLike,
    samples: SamplesLike,
    gradients: Gradients | Mapping[str, Any] | None,
    reduction: Reduction,
    epsilon: float,
    rtol: float,
    atol: float,
    array_encoding: ArrayEncoding | None,
) -> Call:
    body: dict[str, Any] = {
        "network": network,
        "samples": samples,
        "reduction": reduction,
        "epsilon": epsilon,
        "rtol": rtol,
        "atol": atol,
        "array_encoding": array_encoding,
    }
    if gradients is not None:
        body["gradients"] = gradients
    return post("check", body)


def render(network: NetworkLike, samples: SamplesLike | None, show: str, format: str) -> Call:
    body: dict[str, Any] = {"network": network, "show": show}
    if samples is not None:
        body["samples"] = samples
    return post("render", body, format=format)


def saved(text: str, path: str | os.PathLike[str] | None, format: str = "dot") -> str:
    """The drawing (an Svg, shown as a picture in a notebook, when it is SVG), saved to `path`."""
    if path is not None:
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    return Svg(text) if format == "svg" else text


def sgd_options(
    epochs: int,
    batch_size: int | None,
    shuffle: bool,
    seed: int | None,
    reduction: Reduction,
    optimizer: OptimizerName,
    hyper: dict[str, Any],
    schedule: ScheduleLike | None,
    state: StateLike | None,
    array_encoding: ArrayEncoding | None,
) -> dict[str, Any]:
    """sgd's fields; the hyper-parameters left None are left out (the optimizer's defaults: the
    server refuses one the optimizer does not take, even at its default)."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "shuffle": shuffle,
        "seed": seed,
        "reduction": reduction,
        "optimizer": optimizer,
        **hyper,
        "schedule": schedule,
        "state": state,
        "array_encoding": array_encoding,
    }


#: sgd's options and their defaults, for sgd_stream (None: left out, the server's default)
SGD_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": None,
    "shuffle": False,
    "seed": None,
    "reduction": "mean",
    "array_encoding": None,
}
