"""What `from_onnx` builds as it walks a graph: the values its tensors hold (a constant, a
unit's activations, or a pre-activation not yet a unit), the units they become, and the
network those units make."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from client._constants import BASE64_MIN_ELEMENTS
from client.arrays import encode
from service.wire import Network

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Const:
    """A constant tensor: an initialiser, a Constant node's value, or what they fold to."""

    value: np.ndarray


@dataclass
class Z:
    """The activations z of a unit (a graph input, or an activation's output): [batch, size]."""

    unit: int


@dataclass
class Linear:
    """A pre-activation not yet a unit: s = sum of z_source @ matrix, plus bias, [batch, size]."""

    terms: dict[int, np.ndarray]
    bias: np.ndarray | None
    size: int
    name: str  # the tensor holding it: the id of the unit it may become


Value = Const | Z | Linear


@dataclass
class Unit:
    name: str
    role: str
    size: int | None  # a graph input whose width is symbolic waits for its first weight
    activation: str | None = None
    bias: np.ndarray | None = None
    slope: float | None = None
    inputs: dict[int, np.ndarray] = field(default_factory=dict)


def network_of(made: list[Unit], loss: str | None) -> Network:
    """The network of the units made (every width known by now), each weight a unit's input."""
    ids = _ids(made)
    units: list[dict[str, Any]] = []
    weights: list[dict[str, Any]] = []
    for key, unit in enumerate(made):
        entry: dict[str, Any] = {"id": ids[key], "role": unit.role, "size": unit.size}
        if unit.role != "input":
            entry["activation"] = unit.activation
        if unit.bias is not None:
            entry["bias"] = _array(unit.bias)
        if unit.slope is not None:
            entry["slope"] = unit.slope
        units.append(entry)
        for source, matrix in unit.inputs.items():
            weights.append({"source": ids[source], "target": ids[key], "value": _array(matrix)})
    document: dict[str, Any] = {"units": units, "weights": weights}
    if loss is not None:
        document["loss"] = loss
    return Network.model_validate(document)


def _ids(made: list[Unit]) -> dict[int, str]:
    """Unit ids from the tensor names, made valid and unique: inputs and outputs first, so
    the names samples are keyed by stay as the model has them wherever they can."""
    taken: set[str] = set()
    ids: dict[int, str] = {}
    rank = {"input": 0, "output": 1, "hidden": 2}
    for key in sorted(range(len(made)), key=lambda k: rank[made[k].role]):
        ids[key] = _unique(made[key].name, taken)
    return ids


_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")
_ID_LENGTH = 64


def _unique(name: str, taken: set[str]) -> str:
    """`name` as a unit id (^[A-Za-z0-9_.:-]{1,64}$), with a suffix when it is taken."""
    base = _UNSAFE.sub("_", name)[:_ID_LENGTH] or "unit"
    candidate, count = base, 1
    while candidate in taken:
        count += 1
        suffix = f"_{count}"
        candidate = base[: _ID_LENGTH - len(suffix)] + suffix
    taken.add(candidate)
    return candidate


def _array(value: np.ndarray) -> Any:
    """A vector or matrix in its wire form: large ones encoded, small ones as lists."""
    return encode(value) if value.size >= BASE64_MIN_ELEMENTS else value.tolist()
