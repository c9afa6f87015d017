"""The network and its arrays on the wire: the names of activations and losses, the base
models of requests and answers, the forms an array may take, units, weights and samples."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
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
LossName = Literal["half_squared_error", "squared_error", "cross_entropy", "binary_cross_entropy", "huber"]
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

#: a vector's weights: one Array per weight in the network's order and shapes, or, for weights
#: between single units, one array [n]
VectorWeights = Annotated[
    Annotated[list[ArrayValue], Tag("list"), Field(fail_fast=True)]
    | Annotated[EncodedArray, Tag("encoded")]
    | Annotated[BinaryReference, Tag("binary")],
    Discriminator(lambda value: _dict_kind(value) if isinstance(value, _DICT_FORMS) else "list"),
    Field(
        description="one Array per weight, in the network's order and shapes (a number for a weight "
        "between single units); or, where every weight joins single units, one array [n]"
    ),
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
    huber_delta: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="huber's delta (default 1.0, torch HuberLoss's): only with loss 'huber'",
    )


class Samples(WireModel):
    """A batch: arrays of shape [batch, size] keyed by input and output unit id."""

    inputs: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)]
    targets: Annotated[dict[UnitId, ArrayValue], Field(fail_fast=True)] = Field(default_factory=dict)
