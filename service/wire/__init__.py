"""Every request and response body of the HTTP API, importable with pydantic alone.

This package is the wire: the service validates requests with it and the client parses
responses with it. It must never import numpy, fastapi or anything else heavy. Here: the
requests and the table of compute endpoints; `network` holds the network, its arrays and the
models' bases, `answers` the answers, `framing` the binary framing. Import them all from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
)

from service.wire.answers import *  # noqa: F403
from service.wire.answers import (
    CheckResponse,
    ExplainResponse,
    ForwardResponse,
    GradientsResponse,
    HvpResponse,
    SgdResponse,
)
from service.wire.base import *  # noqa: F403
from service.wire.base import (
    ArrayEncoding,
    ArrayValue,
    Network,
    Reduction,
    ResponseModel,
    Samples,
    UnitId,
    VectorWeights,
    Weights,
    WireModel,
)
from service.wire.training import *  # noqa: F403
from service.wire.training import OptimizerName, Schedule, TrainingState

# ---------------------------------------------------------------- requests

#: the chain x -> j -> k -> o with one sample: the example in the OpenAPI document
CHAIN_EXAMPLE: dict[str, Any] = {
    "network": {
        "units": [
            {"id": "x", "role": "input"},
            {"id": "j", "activation": "sigmoid"},
            {"id": "k", "activation": "sigmoid"},
            {"id": "o", "role": "output", "activation": "identity"},
        ],
        "weights": [
            {"source": "x", "target": "j", "value": 0.5},
            {"source": "j", "target": "k", "value": -0.3},
            {"source": "k", "target": "o", "value": 0.8},
        ],
    },
    "samples": {"inputs": {"x": [1.5]}, "targets": {"o": [0.25]}},
}


class ComputeRequest(WireModel):
    network: Network
    samples: Samples
    array_encoding: ArrayEncoding = Field(
        default="list",
        description="'base64' encodes every array of the response; 'binary' answers in the binary "
        "framing (application/octet-stream, each array a binary reference whose bytes follow the JSON)",
    )


class ForwardRequest(ComputeRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [CHAIN_EXAMPLE]})


#: the same chain with its weights as columns (the compact form for many single units)
CHAIN_AS_COLUMNS: dict[str, Any] = {
    **CHAIN_EXAMPLE,
    "network": {
        **CHAIN_EXAMPLE["network"],
        "weights": {"source": ["x", "j", "k"], "target": ["j", "k", "o"], "value": [0.5, -0.3, 0.8]},
    },
}


class GradientsRequest(ComputeRequest):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{**CHAIN_EXAMPLE, "per_sample": True}, CHAIN_AS_COLUMNS]}
    )

    reduction: Reduction = "mean"
    per_sample: StrictBool = False
    include_units: StrictBool = True
    wrt_inputs: StrictBool = Field(
        default=False,
        description="also dE/dx of the reduced loss for each sample's inputs (gradients.inputs, "
        "[batch, size] per input unit; with per_sample, per_sample.inputs holds each dE_n/dx_n, unscaled)",
    )


#: the hyper-parameters of the optimizers, as /v1/sgd takes them (each optimizer takes those of
#: torch.optim's class of its name, at torch's defaults: service.engine.OPTIMIZERS holds them)
HYPER_PARAMETERS = (
    "momentum",
    "dampening",
    "nesterov",
    "weight_decay",
    "betas",
    "eps",
    "amsgrad",
    "alpha",
    "centered",
    "lr_decay",
    "initial_accumulator_value",
)


def _hyper(description: str) -> Any:
    return Field(default=None, description=description + "; null or left out: the optimizer's default")


class SgdRequest(ComputeRequest):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {**CHAIN_EXAMPLE, "learning_rate": 0.5, "epochs": 20, "momentum": 0.9},
                {
                    **CHAIN_EXAMPLE,
                    "learning_rate": 0.05,
                    "epochs": 20,
                    "optimizer": "adam",
                    "schedule": {"kind": "cosine", "t_max": 20},
                },
            ]
        }
    )

    learning_rate: Annotated[float, Field(gt=0)]
    epochs: Annotated[StrictInt, Field(ge=1)] = 1
    batch_size: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None, description="samples per step (default: the whole batch, one step an epoch)"
    )
    shuffle: StrictBool = False
    seed: Annotated[StrictInt, Field(ge=0)] | None = Field(
        default=None, description="the shuffle's seed (default: a fresh random order each request)"
    )
    reduction: Reduction = "mean"
    optimizer: OptimizerName = Field(
        default="sgd",
        description="torch.optim's optimizer of this name, with its hyper-parameters (each "
        "optimizer takes only its own: another's, even at its default, is a 422)",
    )
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = _hyper("sgd, rmsprop: 0")
    dampening: Annotated[float, Field(ge=0, le=1)] | None = _hyper("sgd: 0")
    nesterov: StrictBool | None = _hyper("sgd: false (needs momentum > 0 and dampening 0)")
    weight_decay: Annotated[float, Field(ge=0)] | None = _hyper(
        "every optimizer: 0, adamw 0.01 (adamw's decoupled, the others' added to the gradient)"
    )
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] | None = _hyper(
        "adam, adamw: [0.9, 0.999]"
    )
    eps: Annotated[float, Field(gt=0)] | None = _hyper("adam, adamw, rmsprop: 1e-8; adagrad: 1e-10")
    amsgrad: StrictBool | None = _hyper("adam, adamw: false")
    alpha: Annotated[float, Field(ge=0, le=1)] | None = _hyper("rmsprop: 0.99")
    centered: StrictBool | None = _hyper("rmsprop: false")
    lr_decay: Annotated[float, Field(ge=0)] | None = _hyper("adagrad: 0")
    initial_accumulator_value: Annotated[float, Field(ge=0)] | None = _hyper("adagrad: 0")
    schedule: Schedule | None = Field(
        default=None,
        description="the learning rate after each epoch, as torch.optim.lr_scheduler's class of "
        "this kind gives it stepped once at each epoch's end (null: constant)",
    )
    state: TrainingState | None = Field(
        default=None,
        description="a previous answer's state: training continues as if the calls were one",
    )

    def hyper_parameters(self) -> dict[str, Any]:
        """The hyper-parameters the request gives (null or left out: not given)."""
        return {name: getattr(self, name) for name in HYPER_PARAMETERS if getattr(self, name) is not None}


class ParameterVector(WireModel):
    """A vector over the network's parameters, in the form of its gradients: a missing bias or
    response (or a missing `biases` or `responses` object) counts as zeros."""

    weights: VectorWeights
    biases: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)] = Field(default_factory=dict)
    responses: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)] = Field(default_factory=dict)


class HvpRequest(ComputeRequest):
    """The Hessian of the reduced loss (every weight, bias and response) times `vector`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**CHAIN_EXAMPLE, "vector": {"weights": [1.0, 0.0, 0.0], "biases": {"o": 0.5}}}]
        }
    )

    reduction: Reduction = "mean"
    vector: ParameterVector


class ExplainRequest(ComputeRequest):
    """Explain one sample's gradients: each delta's terms, and each weight's paths and factors."""

    model_config = ConfigDict(json_schema_extra={"examples": [CHAIN_EXAMPLE]})

    sample: Annotated[StrictInt, Field(ge=0)] = 0
    max_paths: Annotated[StrictInt, Field(ge=0, le=10_000)] = 64


class CheckRequest(ComputeRequest):
    """Central finite differences against the service's gradients, or against the caller's."""

    model_config = ConfigDict(json_schema_extra={"examples": [CHAIN_EXAMPLE]})

    reduction: Reduction = "mean"
    gradients: ClaimedGradients | None = None
    epsilon: Annotated[float, Field(gt=0, le=1)] = 1e-6
    rtol: Annotated[float, Field(ge=0)] = 1e-5
    atol: Annotated[float, Field(ge=0)] = 1e-8


class ClaimedGradients(WireModel):
    """Gradients to check, in the form /v1/gradients answers them."""

    weights: Weights = Field(default_factory=list)  # gradients in the weights' form
    biases: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)] = Field(default_factory=dict)
    responses: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)] = Field(default_factory=dict)


class RenderRequest(WireModel):
    """A picture of the network; with samples, each unit shows z of the first sample."""

    model_config = ConfigDict(json_schema_extra={"examples": [{**CHAIN_EXAMPLE, "show": "gradients"}]})

    network: Network
    samples: Samples | None = None
    show: Literal["weights", "gradients"] = "weights"


# ---------------------------------------------------------------- the compute endpoints


@dataclass(frozen=True)
class QueryParameter:
    """A compute endpoint's query parameter: one of `values`, `default` when not given."""

    name: str
    values: tuple[str, ...]
    default: str
    description: str = ""


@dataclass(frozen=True)
class Endpoint:
    """A compute endpoint as the wire sees it: POST `path` with a `request` body and `query`
    parameters (asking for another of its answers), answered with a `response` body (None:
    not JSON, but one of `media_types`)."""

    name: str
    request: type[WireModel]
    response: type[ResponseModel] | None
    summary: str
    media_types: tuple[str, ...] = ("application/json",)
    query: tuple[QueryParameter, ...] = ()

    @property
    def path(self) -> str:
        return f"/v1/{self.name}"


#: every compute endpoint, by name: the service's routes, dispatch and OpenAPI description read
#: it (through service.pipeline.handlers, which adds what runs each one), and the client's CLI
ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint(
            "forward",
            ForwardRequest,
            ForwardResponse,
            "Every unit's s and z for a batch, and the loss when targets are given",
        ),
        Endpoint(
            "gradients",
            GradientsRequest,
            GradientsResponse,
            "The loss's gradient with respect to every weight and bias",
        ),
        Endpoint(
            "sgd",
            SgdRequest,
            SgdResponse,
            "Train the network (SGD, Adam, AdamW, RMSprop or Adagrad, under a learning-rate schedule) "
            "and return it updated, with the state that continues the training",
        ),
        Endpoint(
            "hvp",
            HvpRequest,
            HvpResponse,
            "The Hessian of the loss times a vector, exactly (Pearlmutter's R-operator), with the gradients",
        ),
        Endpoint(
            "explain",
            ExplainRequest,
            ExplainResponse,
            "Why each gradient has its value: deltas, their terms, and the paths to the outputs",
        ),
        Endpoint(
            "check",
            CheckRequest,
            CheckResponse,
            "Gradients (the service's, or yours) checked by central finite differences",
        ),
        Endpoint(
            "render",
            RenderRequest,
            None,
            "A picture of the network, its edges coloured and sized by weight or gradient",
            ("image/svg+xml", "text/vnd.graphviz", "application/json"),
            (
                QueryParameter("format", ("svg", "dot", "layout"), "svg"),
                QueryParameter("orient", ("horizontal", "vertical"), "horizontal", "for format=layout"),
            ),
        ),
    )
}
