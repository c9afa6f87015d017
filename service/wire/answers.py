"""The answers of the compute endpoints, of /v1/info and the health checks, and the problem
document of every error."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from service.wire.base import (
    AnsweredColumn,
    ArrayValue,
    Network,
    ResponseModel,
)
from service.wire.training import TrainingState


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
    inputs: dict[str, ArrayValue] | None = Field(
        default=None,
        description="dE/dx of every input unit, [batch, size]: only with wrt_inputs",
    )


class GradientsResponse(ResponseModel):
    loss: float
    gradients: Gradients
    units: dict[str, UnitValues] | None = None
    per_sample: Gradients | None = None


class HessianVector(ResponseModel):
    """H v, in the form of the parameters: weights in the network's order, biases and responses
    by unit id."""

    weights: list[ArrayValue]
    biases: dict[str, ArrayValue]
    responses: dict[str, ArrayValue] | None = Field(
        default=None, description="only when the network gives a response"
    )


class HvpResponse(ResponseModel):
    loss: float
    gradients: Gradients = Field(description="exactly what /v1/gradients answers")
    hvp: HessianVector = Field(description="H v, H the Hessian of the reduced loss")
    vhv: float = Field(description="v . H v")


class EpochLoss(ResponseModel):
    epoch: int
    loss: float
    learning_rate: float | None = Field(
        default=None, description="the learning rate used during the epoch: only under a schedule"
    )


class SgdResponse(ResponseModel):
    network: Network
    steps: int
    loss_before: float
    loss_after: float
    history: list[EpochLoss] = Field(
        description="the full-batch loss after each epoch (epoch counts from 0, continuing a "
        "posted state's count; the last entry is loss_after); loss_before is the loss before the first"
    )
    state: TrainingState | None = Field(
        default=None,
        description="where the training stands: post it back as the request's `state` to continue",
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
    max_abs_error: float = Field(description="the largest |checked - numeric| over the entries checked")
    max_rel_error: float = Field(
        description="the largest |checked - numeric| / max(|checked|, |numeric|) over the entries checked "
        "that are larger than atol (one within atol of zero has no meaningful relative error); 0 "
        "when there is none"
    )
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
    optimizers: list[str] = Field(default_factory=list, description="what /v1/sgd's `optimizer` takes")
    schedules: list[str] = Field(default_factory=list, description="the `kind`s of /v1/sgd's `schedule`")
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
