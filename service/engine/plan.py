"""A compiled network, a `Plan`: its units laid side by side as columns of one table (batch
as the leading axis of x, unit-major in the value tables), sorted into levels so that every
weight runs from an earlier level to a later one, and every parameter, weights then biases,
at its place in one flat vector `theta`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from service.engine.activations import Activation
from service.engine.losses import Loss, resolve
from service.engine.segments import Segments

Array = np.ndarray


class UnitInfo(NamedTuple):
    """Where a unit lives: columns of the inputs `x` (input units) or of the value tables.
    (A tuple: made by the thousand, it is cheaper than a frozen dataclass.)"""

    id: str
    role: str
    size: int
    activation: str
    cols: slice
    level: int
    slope: float | None = None  # leaky_relu's own slope, when the unit gives one


class WeightInfo(NamedTuple):
    source: str
    target: str
    shape: tuple[int, int]
    offset: int  # where its elements start in theta, row-major

    @property
    def params(self) -> slice:
        return slice(self.offset, self.offset + self.shape[0] * self.shape[1])


Columns = slice | Array  # a slice when contiguous (a view), else gathered indices


@dataclass(frozen=True)
class Group:
    """Columns of one level that share an activation (its segments when it is segmented)."""

    activation: Activation
    cols: slice
    segments: Segments | None

    def forward(self, s: Array, out: Array) -> None:
        """z = f(s), into `out`; both unit-major, [size, batch]."""
        self.activation.forward(s, out, self.segments)

    def vjp(self, g: Array, s: Array, z: Array, out: Array) -> None:
        """dE/ds from dE/dz, into `out`; all unit-major, [size, batch]."""
        self.activation.vjp(g, s, z, out, self.segments)


@dataclass(frozen=True)
class Block:
    """Some columns of a level and every column feeding them.

    S[:, tgt] = x[:, src_x] @ W[:split] + z[:, src_z] @ W[split:]: the rows of W that come
    from input units are read straight from the inputs, never copied into the tables.
    """

    src_x: Columns | None
    src_z: Columns | None
    split: int
    tgt: slice
    params: Columns  # a slice of theta (one whole weight) or indices into theta + [0]
    shape: tuple[int, int]
    cells: Array | None = None  # gathered blocks: the flat positions holding real weights...
    cell_params: Array | None = None  # ...and where each one lives in theta

    def matrix(self, theta: Array, theta0: Array | None) -> Array:
        if isinstance(self.params, slice):
            return theta[self.params].reshape(self.shape)
        assert theta0 is not None
        return theta0[self.params]


@dataclass(frozen=True)
class Level:
    cols: slice  # table columns of this level's units
    groups: tuple[Group, ...]
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class WeightGroup:
    """Weights of one shape and one kind of source, whose gradients are computed together."""

    shape: tuple[int, int]
    weights: tuple[int, ...]
    from_inputs: bool  # sources are input units (columns of x), else columns of z
    src: Columns  # [E, m] column indices, or a slice when E == 1
    tgt: Columns  # [E, n]
    params: Columns  # [E, m*n] theta indices, or a slice when E == 1


class Weights(Protocol):
    """What a plan's weights are cut from when first asked for (`service.engine.blocks.SparseBlocks`,
    which compile_network builds with the plan)."""

    def weight_infos(self) -> tuple[WeightInfo, ...]: ...

    def weight_groups(self) -> tuple[WeightGroup, ...]: ...


@dataclass(frozen=True)
class Plan:
    """A compiled network: its sparse blocks, levels, parameter offsets, and the loss."""

    units: tuple[UnitInfo, ...]  # in the listed order
    unit_index: dict[str, int]
    levels: tuple[Level, ...]
    n_inputs: int  # columns of x
    n_cols: int  # columns of the value tables: every non-input unit
    n_weight_params: int
    outputs: tuple[int, ...]  # unit indices, in the order of out_cols
    out_cols: Array
    out_split: int  # out_cols[:out_split] have elementwise activations, the rest segmented ones
    out_segments: Segments | None
    loss: str
    theta: Array = field(repr=False)  # the initial parameters: weights, one bias per column, responses
    sparse: Weights = field(repr=False, compare=False)
    has_gathered_blocks: bool = False
    #: 1/(incoming scalar connections) per column of units that take the mean, 1 elsewhere;
    #: None when every unit sums
    mean_scale: Array | None = field(default=None, repr=False)
    #: n_cols when the network gives a response (then every unit's is a parameter), else 0
    n_response_params: int = 0
    huber_delta: float | None = None  # the network's own, for loss "huber"

    @property
    def objective(self) -> Loss:
        """The loss's registry entry (huber with the network's delta)."""
        return resolve(self.loss, self.huber_delta)

    @functools.cached_property
    def weights(self) -> tuple[WeightInfo, ...]:
        """Every weight in the listed order: built on first use (answers given as columns,
        for thousands of weights, never need them)."""
        return self.sparse.weight_infos()

    @functools.cached_property
    def weight_groups(self) -> tuple[WeightGroup, ...]:
        """Weights grouped for per-sample gradients: built only when those are asked for."""
        return self.sparse.weight_groups()

    @property
    def n_params(self) -> int:
        return self.n_weight_params + self.n_cols + self.n_response_params

    def bias_params(self, unit: UnitInfo) -> slice:
        return slice(self.n_weight_params + unit.cols.start, self.n_weight_params + unit.cols.stop)

    @property
    def has_responses(self) -> bool:
        """Whether responses are parameters (the network gave one): answers then report them."""
        return self.n_response_params > 0

    def response_params(self, unit: UnitInfo) -> slice:
        start = self.n_weight_params + self.n_cols
        return slice(start + unit.cols.start, start + unit.cols.stop)

    def column_scale(self, theta: Array) -> Array | None:
        """What multiplies each column's weighted sum, response / (incoming connections for a
        mean), [n_cols]; None when it is 1 everywhere (no responses, no means)."""
        if not self.n_response_params:
            return self.mean_scale
        response = theta[self.n_weight_params + self.n_cols :]
        return response if self.mean_scale is None else response * self.mean_scale

    def parameter_name(self, index: int) -> str:
        """Which weight or bias a position of theta belongs to, for error messages."""
        for w in self.weights:
            if w.params.start <= index < w.params.stop:
                return f"weight {w.source}->{w.target}"
        if index >= self.n_weight_params + self.n_cols:
            return f"response of {self.unit_at(index - self.n_weight_params - self.n_cols).id!r}"
        return f"bias of {self.unit_at(index - self.n_weight_params).id!r}"

    def unit_at(self, col: int) -> UnitInfo:
        """The non-input unit that owns a column of the value tables."""
        return next(u for u in self.units if u.role != "input" and u.cols.start <= col < u.cols.stop)
