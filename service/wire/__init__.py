"""Every request and response body of the HTTP API, importable with pydantic alone.

This module is the wire: the service validates requests with it and the client parses
responses with it. It must never import numpy, fastapi or anything else heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    model_validator,
)

# The names of the engine's registries (service.engine.ACTIVATIONS, LOSSES), spelled out here
# so that the wire imports without NumPy; tests/test_wire.py checks they agree.
ActivationName = Literal[
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softplus",
    "softmax",
    "elu",
    "selu",
    "abs",
    "square",
    "cube",
    "clamped",
    "hat",
    "neat_sigmoid",
    "neat_tanh",
    "neat_softplus",
    "neat_sin",
    "neat_gauss",
    "neat_exp",
    "neat_log",
    "neat_inv",
]
#: how a unit aggregates its weighted inputs (service.engine.network.AGGREGATIONS)
AggregationName = Literal["sum", "mean"]
LossName = Literal["half_squared_error", "squared_error", "cross_entropy"]
ACTIVATIONS: tuple[str, ...] = get_args(ActivationName)
LOSSES: tuple[str, ...] = get_args(LossName)
Reduction = Literal["mean", "sum"]
ArrayEncoding = Literal["list", "base64", "binary"]
#: `^...$` is a full match in the engines that read it: pydantic's Rust regex (pinned in
#: WireModel) and JSON Schema's ECMA-262; Python's `re` would let "id\n" through `$`
UnitId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]

#: rules of every request body that no one field's schema states (the OpenAPI description)
BODY_RULES = (
    "Bodies are JSON objects validated strictly: unknown fields, NaN, Infinity and numbers "
    "outside float64 are refused (422). A key given twice in one object is not refused: the "
    "last occurrence wins (as in JSON.parse and Python's json module), so send each key once."
)


class WireModel(BaseModel):
    """A request-side model: strict types, no unknown fields, finite numbers only."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, regex_engine="rust-regex")


class ResponseModel(BaseModel):
    """A response-side model: tolerant of fields a newer server adds."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class EncodedArray(WireModel):
    """An array as base64 of its C-order little-endian bytes."""

    dtype: Literal["float64", "float32"]
    shape: list[Annotated[StrictInt, Field(ge=0)]] = Field(max_length=8)
    data: str


class BinaryParameters(WireModel):
    binary_data_size: Annotated[StrictInt, Field(ge=0)]


class BinaryReference(WireModel):
    """An array whose bytes follow the JSON document (the binary framing, only in an
    application/octet-stream body or answer): little-endian, C order, `binary_data_size`
    bytes, the sections in the order of their references in the JSON text."""

    datatype: Literal["FP64", "FP32"]
    shape: list[Annotated[StrictInt, Field(ge=0)]] = Field(max_length=8)
    parameters: BinaryParameters


def _dict_kind(value: Any) -> str:
    """An encoded array {dtype, shape, data}, or a binary reference {datatype, shape, parameters}."""
    if isinstance(value, BinaryReference) or (
        isinstance(value, dict) and ("datatype" in value or "parameters" in value)
    ):
        return "binary"
    return "encoded"


_DICT_FORMS = (dict, EncodedArray, BinaryReference)


def _array_kind(value: Any) -> str:
    """Pick the one form an ArrayValue claims to be, so a bad one gets one clear error."""
    if isinstance(value, _DICT_FORMS):
        return _dict_kind(value)
    if isinstance(value, list):
        depth = 1
        while value and isinstance(value[0], list):
            value, depth = value[0], depth + 1
        return ("list", "list_of_lists", "list_of_lists_of_lists")[min(depth, 3) - 1]
    return "number"


# Containers stop at their first bad item (fail_fast): collecting them all, a body wrong in
# each of its numbers would build an error object per number, far larger than the body.
Numbers = Annotated[list[float], Field(fail_fast=True)]
Rows = Annotated[list[Numbers], Field(fail_fast=True)]
Planes = Annotated[list[Rows], Field(fail_fast=True)]
Ids = Annotated[list[UnitId], Field(fail_fast=True)]

ArrayValue = Annotated[
    Annotated[float, Tag("number")]
    | Annotated[Numbers, Tag("list")]
    | Annotated[Rows, Tag("list_of_lists")]
    | Annotated[Planes, Tag("list_of_lists_of_lists")]
    | Annotated[EncodedArray, Tag("encoded")]
    | Annotated[BinaryReference, Tag("binary")],
    Discriminator(_array_kind),
    Field(
        description="A number, nested lists of numbers, an encoded array {dtype, shape, data}, "
        "or in a binary body a binary reference {datatype, shape, parameters: {binary_data_size}}; "
        "every number finite."
    ),
]


Column = Annotated[
    Annotated[Numbers, Tag("list")]
    | Annotated[EncodedArray, Tag("encoded")]
    | Annotated[BinaryReference, Tag("binary")],
    Discriminator(lambda value: _dict_kind(value) if isinstance(value, _DICT_FORMS) else "list"),
    Field(description="one number per entry: a list [n], an encoded array or binary reference of shape [n]"),
]

#: an answered column: [n], or [batch, n] per sample (a plain union: an empty list fits both)
AnsweredColumn = list[float] | list[list[float]] | EncodedArray | BinaryReference


# ---------------------------------------------------------------- the network


class Unit(WireModel):
    """One unit, or with `size` > 1 a layer of units sharing one activation."""

    id: UnitId
    role: Literal["input", "hidden", "output"] = "hidden"
    size: Annotated[StrictInt, Field(ge=1)] = 1
    activation: ActivationName | None = Field(
        default=None, description="sigmoid for hidden units, identity for outputs; not on inputs"
    )
    bias: ArrayValue | None = Field(default=None, description="shape [size]; zeros when absent")
    response: ArrayValue | None = Field(
        default=None,
        description="shape [size]; ones when absent: s = bias + response * aggregate (neat-python's "
        "response). When any unit gives one, every unit's response is a parameter: gradients, "
        "per_sample and check report `responses` beside `biases`, and sgd trains them",
    )
    aggregation: AggregationName | None = Field(
        default=None,
        description="'sum' (the default) or 'mean' of the weighted inputs w_{i->j} z_i; the mean "
        "divides by the unit's number of incoming scalar connections (0 for a unit with none)",
    )
    slope: float | None = Field(
        default=None,
        description="leaky_relu's slope for s <= 0 (default 0.01; ONNX LeakyRelu's alpha, "
        "neat-python's lelu is 0.005); only with leaky_relu",
    )

    @model_validator(mode="after")
    def _inputs_are_plain(self) -> Unit:
        if self.role == "input":
            for name in ("activation", "bias", "response", "aggregation", "slope"):
                if getattr(self, name) is not None:
                    raise ValueError(f"input unit {self.id!r} takes no {name}: its z is the sample's input")
        if self.slope is not None and self.resolved_activation != "leaky_relu":
            raise ValueError(
                f"unit {self.id!r} has a slope, which only leaky_relu takes (its activation is "
                f"{self.resolved_activation})"
            )
        return self

    @property
    def resolved_activation(self) -> str:
        """The activation in force, defaults applied ('identity' for inputs)."""
        if self.activation is not None:
            return self.activation
        return "sigmoid" if self.role == "hidden" else "identity"


class Weight(WireModel):
    """The weights w_{source->target}: a matrix of shape [source.size, target.size]."""

    source: UnitId
    target: UnitId
    value: ArrayValue


class WeightColumns(WireModel):
    """Weights between single units as three columns: weight k is source[k] -> target[k] with
    value[k]. The compact form for graphs of many single units (a NEAT genome's connections):
    it parses as arrays, and every answer about the weights comes back in the same form."""

    source: Ids
    target: Ids
    value: Column

    @model_validator(mode="after")
    def _columns_line_up(self) -> WeightColumns:
        if len(self.source) != len(self.target):
            raise ValueError(
                f"source has {len(self.source)} ids and target {len(self.target)}: "
                "weight k is source[k] -> target[k], so they must be as long"
            )
        return self


def _weights_form(value: Any) -> str:
    return "columns" if isinstance(value, (dict, WeightColumns)) else "objects"


Weights = Annotated[
    Annotated[list[Weight], Tag("objects"), Field(fail_fast=True)] | Annotated[WeightColumns, Tag("columns")],
    Discriminator(_weights_form),
    Field(
        description="a list of weight objects, or (between single units) the columns "
        "{source: [ids], target: [ids], value: [n]}"
    ),
]


class Network(WireModel):
    """A directed acyclic graph of units joined by weights, and the loss it is trained on."""

    units: Annotated[list[Unit], Field(fail_fast=True)] = Field(min_length=1)
    weights: Weights = Field(default_factory=list)
    loss: LossName = "half_squared_error"


class Samples(WireModel):
    """A batch: arrays of shape [batch, size] keyed by input and output unit id."""

    inputs: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)]
    targets: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)] = Field(default_factory=dict)


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


class SgdRequest(ComputeRequest):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**CHAIN_EXAMPLE, "learning_rate": 0.5, "epochs": 20, "momentum": 0.9}]
        }
    )

    learning_rate: Annotated[float, Field(gt=0)]
    epochs: Annotated[StrictInt, Field(ge=1)] = 1
    batch_size: Annotated[StrictInt, Field(ge=1)] | None = None
    shuffle: StrictBool = False
    seed: Annotated[StrictInt, Field(ge=0)] | None = None
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: StrictBool = False
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    reduction: Reduction = "mean"

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SgdRequest:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0 (as in torch.optim.SGD)")
        return self


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


# ---------------------------------------------------------------- responses


class UnitValues(ResponseModel):
    """A unit's values per sample, each [batch, size]; input units carry z only."""

    s: ArrayValue | None = None
    z: ArrayValue
    delta: ArrayValue | None = None


class ForwardResponse(ResponseModel):
    outputs: dict[str, ArrayValue]
    units: dict[str, UnitValues]
    loss: float | None


class WeightGradient(ResponseModel):
    source: str
    target: str
    value: ArrayValue


class GradientColumns(ResponseModel):
    """The gradients of weights posted as columns, in the same order: value[k] is source[k] ->
    target[k]'s (with a leading [batch] axis per sample)."""

    source: list[str]
    target: list[str]
    value: AnsweredColumn


class Gradients(ResponseModel):
    weights: list[WeightGradient] | GradientColumns
    biases: dict[str, ArrayValue]
    responses: dict[str, ArrayValue] | None = Field(
        default=None,
        description="dE/d response of every non-input unit: only when the network gives a response",
    )


class GradientsResponse(ResponseModel):
    loss: float
    gradients: Gradients
    units: dict[str, UnitValues] | None = None
    per_sample: Gradients | None = None


class EpochLoss(ResponseModel):
    epoch: int
    loss: float


class SgdResponse(ResponseModel):
    network: Network
    steps: int
    loss_before: float
    loss_after: float
    history: list[EpochLoss] = Field(
        description="the full-batch loss after each epoch (epoch counts from 0, so the last "
        "entry is loss_after); loss_before is the loss before the first"
    )


class SgdProgress(ResponseModel):
    """A streamed training's `progress` event (Accept: text/event-stream): an epoch has ended."""

    epoch: int = Field(description="the epoch that ended, counted from 0 as in `history`")
    epochs: int = Field(description="the epochs asked for")
    steps: int = Field(description="the SGD steps taken so far")
    loss: float = Field(description="the full-batch loss after this epoch: `history[epoch].loss`")


class Factor(ResponseModel):
    name: str
    value: float


class Path(ResponseModel):
    """One path from a weight's target to an output: its value is the product of its factors."""

    units: list[str]
    factors: list[Factor]
    value: float


class DeltaTerm(ResponseModel):
    """What one successor sends back: value = weight @ delta (the multiple-outputs rule), or
    weight @ (scale * delta) when the network has responses or means."""

    successor: str
    weight: ArrayValue
    delta: ArrayValue
    scale: ArrayValue | None = Field(
        default=None, description="the successor's response / (its incoming connections, for a mean)"
    )
    value: ArrayValue


class ExplainedUnit(ResponseModel):
    """One unit for one sample, each value [size]; input units carry z only."""

    s: ArrayValue | None = None
    z: ArrayValue
    derivative: ArrayValue | None = None
    delta: ArrayValue | None = None
    delta_terms: list[DeltaTerm] | None = None
    loss_term: ArrayValue | None = None
    rule: str | None = None


class ExplainedWeight(ResponseModel):
    source: str
    target: str
    gradient: ArrayValue
    z_source: ArrayValue
    delta_target: ArrayValue
    paths: list[Path]
    paths_total: int | float | None = Field(
        default=None,
        description="how many paths run from the target to an output: exact up to 2**53, then a "
        "float (rounded), and null past the largest float (over 1.8e308 paths) or for a layer's weight",
    )
    paths_total_log10: float | None = Field(
        default=None,
        description="log10 of that count, for every count however large (a weight between single "
        "units with at least one path); null when there is no path or for a layer's weight",
    )
    paths_truncated: bool
    latex: str


class ExplainResponse(ResponseModel):
    sample: int
    loss: float
    units: dict[str, ExplainedUnit]
    weights: list[ExplainedWeight]


class CheckedEntry(ResponseModel):
    checked: ArrayValue
    numeric: ArrayValue
    ok: bool


class CheckedWeight(CheckedEntry):
    source: str
    target: str


class CheckedColumns(ResponseModel):
    """The checked weights of a network posted with columns: entry k of each is weight k's."""

    source: list[str]
    target: list[str]
    checked: AnsweredColumn
    numeric: AnsweredColumn
    ok: list[bool]


class CheckResponse(ResponseModel):
    ok: bool
    max_abs_error: float
    max_rel_error: float
    weights: list[CheckedWeight] | CheckedColumns
    biases: dict[str, CheckedEntry]
    responses: dict[str, CheckedEntry] | None = Field(
        default=None, description="every response checked: only when the network gives a response"
    )


class LaidOutUnit(ResponseModel):
    """A unit's box in /v1/render?format=layout: its centre and size."""

    id: str
    role: str
    size: int
    activation: str
    x: float
    y: float
    width: float
    height: float


class EdgeLabel(ResponseModel):
    """An edge's label: its text and the box it was placed in (centre and size), clear of
    every unit and every other label."""

    text: str
    x: float
    y: float
    width: float
    height: float


class LaidOutEdge(ResponseModel):
    """A weight's edge: its route and the SVG path drawn through it (cubic curves between
    layers, straight through the slots of the layers it crosses), its colour (the sign) and
    stroke width (the magnitude) of what `show` names, and its label."""

    source: str
    target: str
    points: list[tuple[float, float]]
    path: str
    value: float
    magnitude: float
    colour: str
    stroke_width: float
    label: EdgeLabel


class RenderLayout(ResponseModel):
    """/v1/render?format=layout: the drawing's geometry as JSON, for a client to draw itself."""

    orient: Literal["horizontal", "vertical"]
    show: Literal["weights", "gradients"]
    width: float
    height: float
    caption: str
    label_font_size: float
    units: list[LaidOutUnit]
    edges: list[LaidOutEdge]


class InfoResponse(ResponseModel):
    version: str
    activations: list[str]
    losses: list[str]
    limits: dict[str, int | float]
    extensions: list[str] = Field(
        default_factory=list, description="protocol extensions served: 'binary_tensor_data' (binary arrays)"
    )


class Health(ResponseModel):
    status: str


class ErrorItem(ResponseModel):
    loc: list[str | int]
    msg: str


class Problem(ResponseModel):
    """An RFC 9457 problem: every error the service answers has this body."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ErrorItem] | None = None
    request_id: str | None = None


# ---------------------------------------------------------------- the compute endpoints


@dataclass(frozen=True)
class Endpoint:
    """A compute endpoint as the wire sees it: POST `path` with a `request` body, answered with
    a `response` body (None: not JSON, but one of `media_types`)."""

    name: str
    request: type[WireModel]
    response: type[ResponseModel] | None
    summary: str
    media_types: tuple[str, ...] = ("application/json",)

    @property
    def path(self) -> str:
        return f"/v1/{self.name}"


#: every compute endpoint, by name: the service's routes, dispatch and OpenAPI description read
#: it (through service.endpoints.table, which adds what runs each one)
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
        Endpoint("sgd", SgdRequest, SgdResponse, "Train the network with SGD and return it updated"),
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
        ),
    )
}
