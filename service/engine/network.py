"""The engine's own description of a network: what compiling one takes, in plain types.

Whoever holds a network in another form (the HTTP API's JSON) turns it into these; the
engine checks it and reports what is wrong by paths into it (see service.engine.errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

Array = np.ndarray
Value = Array | float  # a number stands for a [1] bias or a [1, 1] weight


class Unit(NamedTuple):
    """One unit, or with size > 1 a layer of units sharing one activation."""

    id: str
    role: str  # "input", "hidden" or "output"
    size: int
    activation: str  # a name in ACTIVATIONS; inputs have "identity"
    bias: Value | None = None  # [size]; zeros when None
    slope: float | None = None  # leaky_relu's slope for s <= 0; None: its default
    response: Value | None = None  # [size]: s = bias + response * aggregate; ones when None
    aggregation: str = "sum"  # "sum" or "mean" of the weighted inputs (AGGREGATIONS)


#: how a unit aggregates its weighted inputs w_{i->j} z_i: their sum, or their mean over the
#: unit's incoming scalar connections (0 for a unit with none, as neat-python takes it)
AGGREGATIONS = ("sum", "mean")


class WeightList(NamedTuple):
    """Weights one by one: weight k joins source[k] to target[k], its value[k] a matrix
    [source.size, target.size]."""

    source: Sequence[str]
    target: Sequence[str]
    value: Sequence[Value]


class WeightColumns(NamedTuple):
    """Weights between single units as columns: weight k joins source[k] to target[k] and
    is value[k], value an array [n]."""

    source: Sequence[str]
    target: Sequence[str]
    value: Array


class Network(NamedTuple):
    """Units, the weights joining them (a DAG), and the loss it is trained on (a name in LOSSES)."""

    units: Sequence[Unit]
    weights: WeightList | WeightColumns
    loss: str = "half_squared_error"
    huber_delta: float | None = None  # huber's delta (only with loss "huber"); None: its default
