"""The backpropagation engine.

A network is compiled once per request into a `Plan`: its units laid side by side as columns
of one table (batch as the leading axis), sorted into levels so that every weight runs from an
earlier level to a later one. Forward fills a level at a time; backward walks the levels in
reverse and *accumulates* dE/dz over every successor (a unit with two outputs sums both paths), then
turns it into delta = dE/ds. Every parameter, weights then biases, lives in one flat vector
`theta`, so gradients and SGD are plain vector arithmetic.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from service import wire
from service.arrays import to_numpy
from service.errors import (
    DeadlineExceededError,
    InvalidGraphError,
    InvalidSamplesError,
    enough,
    issue,
    raise_collected,
)

Array = np.ndarray

# ---------------------------------------------------------------- a deadline, checked cooperatively

_deadline: ContextVar[tuple[float, float]] = ContextVar("gradserve_deadline", default=(math.inf, math.inf))


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Let the passes below run for at most `seconds`, checked once per level and per step."""
    token = _deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def checkpoint() -> None:
    """Stop with a 503 once the deadline has passed, freeing the worker."""
    at, seconds = _deadline.get()
    if time.monotonic() > at:
        raise DeadlineExceededError(
            f"the computation ran past the time limit timeout_s = {seconds:g} s (set by "
            "GRADSERVE_TIMEOUT_S) and was stopped; ask for less work (fewer epochs, a smaller batch)"
        )


# ---------------------------------------------------------------- activations


def sigmoid(s: Array, out: Array | None = None) -> Array:
    """The logistic function 1 / (1 + e^-s), exact for every finite s."""
    # -s as s * -1 (exact): NumPy 2.4's np.negative writes wrong numbers when both its input and
    # its `out` are strided, e.g. one column of the tables (tests/test_engine.py checks it)
    t = np.multiply(s, -1.0, out=out)
    with np.errstate(over="ignore"):  # e^-s = inf where s < -709: 1 / (1 + inf) = 0, as it should be
        np.exp(t, out=t)
    t += 1.0
    return np.reciprocal(t, out=t)


# Each rule writes f(s), and each derivative f'(s) given s and z, into `out` (a new array when
# it is None): a pass over a layer then allocates nothing but its tables.


def _new(s: Array, out: Array | None) -> Array:
    return np.empty_like(s) if out is None else out


def _identity(s: Array, out: Array | None = None) -> Array:
    out = _new(s, out)
    np.copyto(out, s)
    return out


def _ones(s: Array, z: Array, out: Array | None = None) -> Array:
    out = _new(s, out)
    out.fill(1.0)
    return out


def _relu(s: Array, out: Array | None = None) -> Array:
    return np.maximum(s, 0.0, out=out)


def _relu_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.greater(s, 0.0, out=_new(s, out))


def _leaky_relu(s: Array, out: Array | None = None) -> Array:
    return np.maximum(s, np.multiply(s, 0.01, out=out), out=out)  # max(s, 0.01 s): the slope is < 1


def _leaky_relu_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = _new(s, out)
    out.fill(0.01)
    np.copyto(out, 1.0, where=s > 0)
    return out


def _sigmoid_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.multiply(z, np.subtract(1.0, z, out=out), out=out)


def _tanh_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.subtract(1.0, np.multiply(z, z, out=out), out=out)


def _softplus(s: Array, out: Array | None = None) -> Array:
    return np.logaddexp(0.0, s, out=out)


def _softplus_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return sigmoid(s, out)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: its rule and, beside it, its derivative f'(s) given s and z."""

    forward: Callable[..., Array]  # (s, out=None)
    derivative: Callable[..., Array]  # (s, z, out=None)


ELEMENTWISE: dict[str, Activation] = {
    "identity": Activation(_identity, _ones),
    "sigmoid": Activation(sigmoid, _sigmoid_derivative),
    "tanh": Activation(np.tanh, _tanh_derivative),
    "relu": Activation(_relu, _relu_derivative),
    "leaky_relu": Activation(_leaky_relu, _leaky_relu_derivative),
    "softplus": Activation(_softplus, _softplus_derivative),
}


@dataclass(frozen=True)
class Segments:
    """Consecutive column segments, one per unit entry: what softmax normalises over."""

    starts: Array
    sizes: Array

    def sum(self, x: Array) -> Array:
        return np.add.reduceat(x, self.starts, axis=1)

    def max(self, x: Array) -> Array:
        return np.maximum.reduceat(x, self.starts, axis=1)

    def spread(self, per_segment: Array) -> Array:
        return np.repeat(per_segment, self.sizes, axis=1)

    def shifted(self, s: Array) -> tuple[Array, Array]:
        """(s minus its segment's max, the max): every entry <= 0, so exp cannot overflow."""
        m = self.max(s)
        with np.errstate(over="ignore"):  # s - m can only reach -inf, whose exp is an exact 0
            return s - self.spread(m), m

    def logsumexp(self, s: Array) -> Array:
        shifted, m = self.shifted(s)
        return m + np.log(self.sum(np.exp(shifted)))


def softmax(s: Array, seg: Segments) -> Array:
    """Softmax within each segment, computed from the shifted s."""
    e = np.exp(seg.shifted(s)[0])
    return e / seg.spread(seg.sum(e))


def derivative(activation: str, s: Array, z: Array) -> Array:
    """f'(s) elementwise; for softmax, the diagonal of its Jacobian, z (1 - z)."""
    if activation == "softmax":
        return z * (1.0 - z)
    return ELEMENTWISE[activation].derivative(s, z)


@dataclass(frozen=True)
class Group:
    """Columns of one level that share an activation."""

    activation: str
    cols: slice
    segments: Segments | None  # softmax only

    def forward(self, s: Array, out: Array) -> None:
        """z = f(s), into `out`; both unit-major, [size, batch]."""
        if self.segments is not None:  # the segments run along the columns of [batch, size]
            out.T[...] = softmax(s.T, self.segments)
        else:
            ELEMENTWISE[self.activation].forward(s, out=out)

    def vjp(self, g: Array, s: Array, z: Array, out: Array) -> None:
        """dE/ds from dE/dz, into `out`; all unit-major, [size, batch]."""
        if self.segments is not None:
            zt, gt = z.T, g.T
            out.T[...] = zt * (gt - self.segments.spread(self.segments.sum(gt * zt)))
        elif self.activation == "identity":
            out[...] = g
        else:
            ELEMENTWISE[self.activation].derivative(s, z, out=out)
            out *= g


# ---------------------------------------------------------------- the plan


class UnitInfo(NamedTuple):
    """Where a unit lives: columns of the inputs `x` (input units) or of the value tables.
    (A tuple: a thousand of them are made in a third of the time of frozen dataclasses.)"""

    id: str
    role: str
    size: int
    activation: str
    cols: slice
    level: int


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


@dataclass(frozen=True)
class Plan:
    """A compiled network: layout, levels, parameter offsets, and the loss."""

    units: tuple[UnitInfo, ...]  # in the listed order
    unit_index: dict[str, int]
    levels: tuple[Level, ...]
    n_inputs: int  # columns of x
    n_cols: int  # columns of the value tables: every non-input unit
    n_weight_params: int
    outputs: tuple[int, ...]  # unit indices, in the order of out_cols
    out_cols: Array
    out_sigmoid: int  # with cross_entropy: out_cols[:out_sigmoid] are binary, the rest softmax
    out_segments: Segments | None
    loss: str
    theta: Array = field(repr=False)  # the initial parameters: weights, then one bias per column
    has_gathered_blocks: bool = False
    layout: _Layout | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def weights(self) -> tuple[WeightInfo, ...]:
        """Every weight in the listed order: built on first use (answers given as columns,
        for thousands of weights, never need them)."""
        assert self.layout is not None
        return self.layout.weight_infos()

    @functools.cached_property
    def weight_groups(self) -> tuple[WeightGroup, ...]:
        """Weights grouped for per-sample gradients: built only when those are asked for."""
        assert self.layout is not None
        return self.layout.weight_groups()

    @property
    def n_params(self) -> int:
        return self.n_weight_params + self.n_cols

    def bias_params(self, unit: UnitInfo) -> slice:
        return slice(self.n_weight_params + unit.cols.start, self.n_weight_params + unit.cols.stop)

    def parameter_name(self, index: int) -> str:
        """Which weight or bias a position of theta belongs to, for error messages."""
        for w in self.weights:
            if w.params.start <= index < w.params.stop:
                return f"weight {w.source}->{w.target}"
        return f"bias of {self.unit_at(index - self.n_weight_params).id!r}"

    def unit_at(self, col: int) -> UnitInfo:
        """The non-input unit that owns a column of the value tables."""
        return next(u for u in self.units if u.role != "input" and u.cols.start <= col < u.cols.stop)


#: a block of gathered columns may hold at most this many times the elements of its real
#: weights (or MIN_BLOCK): past that a level is split, so sparse graphs stay cheap.
DENSITY = 4
MIN_BLOCK = 4096


def compile_network(net: wire.Network) -> Plan:
    """Check the graph once, up front, and lay it out for the level-at-a-time passes.

    Whatever is per weight runs as list passes and array operations: a NEAT-style graph of
    thousands of single units compiles in milliseconds, not in a Python step per weight.
    """
    units = net.units
    problems: list[dict[str, object]] = []
    index: dict[str, int] = {}
    for i, u in enumerate(units):
        if u.id in index:
            problems.append(issue(["network", "units", i, "id"], f"duplicate unit id {u.id!r}"))
        else:
            index[u.id] = i
    roles = [u.role for u in units]
    if "input" not in roles:
        problems.append(issue(["network", "units"], "the network has no input unit"))
    if "output" not in roles:
        problems.append(issue(["network", "units"], "the network has no output unit"))
    if net.loss == "cross_entropy":
        for i, u in enumerate(units):
            if u.role == "output" and u.resolved_activation not in ("sigmoid", "softmax"):
                problems.append(
                    issue(
                        ["network", "units", i, "activation"],
                        f"cross_entropy needs output {u.id!r} to use sigmoid (binary) or softmax "
                        f"(categorical), not {u.resolved_activation}",
                    )
                )
    sizes = [u.size for u in units]
    edges = _edges(net, index, sizes, roles, problems)

    biases: list[Array | None] = []
    for i, u in enumerate(units):
        bias = None if u.bias is None else to_numpy(u.bias, ["network", "units", i, "bias"])
        if bias is not None and bias.ndim == 0 and u.size == 1:
            bias = bias.reshape(1)
        if bias is not None and bias.shape != (u.size,):
            problems.append(
                issue(
                    ["network", "units", i, "bias"],
                    f"bias of {u.id!r} has shape {list(bias.shape)}, expected [{u.size}]",
                )
            )
        biases.append(bias)
    raise_collected(InvalidGraphError, problems)
    assert edges is not None  # else there were problems

    levels = _levels(net, edges.src, edges.tgt)
    return _lay_out(net, edges, biases, levels)


@dataclass(frozen=True)
class _Edges:
    """The weights, in the listed order: endpoints, shapes, and values back to back."""

    src: list[int]  # unit index of each weight's source
    tgt: list[int]
    rows: list[int]  # its shape: [source.size, target.size]
    cols: list[int]
    values: Array  # every element, weight after weight, each row-major


def _edges(
    net: wire.Network,
    index: dict[str, int],
    sizes: list[int],
    roles: Sequence[str],
    problems: list[dict[str, object]],
) -> _Edges | None:
    """The weights, checked in a few passes that each run at C speed over a list; a weight at a
    time only for matrices and for finding what is wrong. None when something is."""
    weights = net.weights
    if isinstance(weights, wire.WeightColumns):
        return _column_edges(net, weights, index, sizes, roles, problems)
    src = [index.get(w.source, -1) for w in weights]
    tgt = [index.get(w.target, -1) for w in weights]
    if (
        -1 in src
        or -1 in tgt
        or len(set(zip(src, tgt, strict=True))) < len(src)
        or any(roles[b] == "input" for b in tgt)
    ):
        _weight_problems(net, index, sizes, problems)
        return None
    rows, cols = [sizes[a] for a in src], [sizes[b] for b in tgt]
    raw = [w.value for w in weights]
    if all(type(v) is float for v in raw) and rows.count(1) == len(rows) == cols.count(1):
        return _Edges(src, tgt, rows, cols, np.array(raw, dtype=np.float64))  # single units: one call
    parts = []
    for k, (w, a, b) in enumerate(zip(weights, src, tgt, strict=True)):
        if enough(problems):
            return None
        parts.append(_weight_value(w, k, sizes[a], sizes[b], problems))
    values = np.concatenate([p.ravel() for p in parts if p is not None]) if parts else np.empty(0)
    return _Edges(src, tgt, rows, cols, values)


def _column_edges(
    net: wire.Network,
    weights: wire.WeightColumns,
    index: dict[str, int],
    sizes: list[int],
    roles: Sequence[str],
    problems: list[dict[str, object]],
) -> _Edges | None:
    """Weights posted as columns: all between single units, their values one array."""
    n = len(weights.source)
    src = list(map(index.get, weights.source, itertools.repeat(-1)))
    tgt = list(map(index.get, weights.target, itertools.repeat(-1)))
    values = to_numpy(weights.value, ["network", "weights", "value"])
    if values.shape != (n,):
        problems.append(
            issue(
                ["network", "weights", "value"],
                f"weights.value has shape {list(values.shape)}, expected [{n}]: one number per weight",
            )
        )
    if -1 in src or -1 in tgt or not _fine_columns(src, tgt, sizes, roles):
        _weight_problems(net, index, sizes, problems)
    if problems:
        return None
    ones = [1] * n
    return _Edges(src, tgt, ones, ones, values)


def _fine_columns(src: list[int], tgt: list[int], sizes: list[int], roles: Sequence[str]) -> bool:
    """Whether weights between known units are each given once, into no input, between single units."""
    a, b = np.array(src, dtype=np.intp), np.array(tgt, dtype=np.intp)
    into_input = np.array([r == "input" for r in roles])[b].any()
    layers = sizes.count(1) < len(sizes) and (np.array(sizes)[np.concatenate([a, b])] != 1).any()
    pairs = a * len(sizes) + b
    pairs.sort()  # (np.unique hashes: 4x slower here)
    return not into_input and not layers and not (pairs[1:] == pairs[:-1]).any()


def _weight_value(
    w: wire.Weight, k: int, rows: int, cols: int, problems: list[dict[str, object]]
) -> Array | None:
    """Weight k's value as a [rows, cols] array, or None (and a problem) if it is not that shape."""
    loc: list[str | int] = ["network", "weights", k, "value"]
    value = to_numpy(w.value, loc)
    if value.ndim == 0 and rows == cols == 1:
        value = value.reshape(1, 1)
    if value.shape != (rows, cols):
        problems.append(
            issue(
                loc,
                f"weight {w.source}->{w.target} has shape {list(value.shape)}, expected "
                f"[{rows}, {cols}] ([{w.source}.size, {w.target}.size])",
            )
        )
        return None
    return value


def _weight_problems(
    net: wire.Network, index: dict[str, int], sizes: list[int], problems: list[dict[str, object]]
) -> None:
    """Everything wrong with the weights, a weight at a time, in the listed order. Weights given
    as columns join single units, and have their values checked apart (one array)."""
    given = net.weights
    objects: list[wire.Weight]
    if isinstance(given, wire.WeightColumns):
        columns, objects, pairs = True, [], list(zip(given.source, given.target, strict=True))
    else:
        columns, objects, pairs = False, given, [(w.source, w.target) for w in given]
    seen: set[tuple[str, str]] = set()
    for k, (a, b) in enumerate(pairs):
        if enough(problems):
            return
        loc: list[str | int] = ["network", "weights", *(["source", k] if columns else [k])]
        name = f"weight {a}->{b}"
        unknown = [uid for uid in (a, b) if uid not in index]
        if unknown:
            problems.append(issue(loc, f"{name} names unknown unit(s) {', '.join(map(repr, unknown))}"))
            continue
        if (a, b) in seen:
            problems.append(issue(loc, f"{name} is given twice"))
            continue
        seen.add((a, b))
        if net.units[index[b]].role == "input":
            problems.append(issue(loc, f"{name} points into input unit {b!r}"))
            continue
        if columns:
            layers = [uid for uid in (a, b) if sizes[index[uid]] != 1]
            if layers:
                problems.append(
                    issue(
                        loc,
                        f"{name}: weights given as columns join single units, and "
                        f"{', '.join(f'{uid!r} has size {sizes[index[uid]]}' for uid in layers)}; "
                        "give the weights of layers as a list of objects",
                    )
                )
        else:
            _weight_value(objects[k], k, sizes[index[a]], sizes[index[b]], problems)


def _levels(net: wire.Network, src: list[int], tgt: list[int]) -> list[int]:
    """Each unit's level (longest path from a unit without inputs); names a cycle if there is one."""
    n = len(net.units)
    succ: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for a, b in zip(src, tgt, strict=True):
        succ[a].append(b)
        indegree[b] += 1
    level = [0] * n
    ready = [i for i in range(n) if indegree[i] == 0]
    done = 0
    while ready:
        a = ready.pop()
        done += 1
        next_level = level[a] + 1
        for b in succ[a]:
            if level[b] < next_level:
                level[b] = next_level
            indegree[b] -= 1
            if indegree[b] == 0:
                ready.append(b)
    if done < n:
        cycle = _a_cycle(n, list(zip(src, tgt, strict=True)), indegree)
        ids = [net.units[i].id for i in cycle]
        if len(ids) > 20:  # name enough of a long one to find it, not all of it
            ids = [*ids[:10], f"... ({len(ids) - 20:,} more) ...", *ids[-10:]]
        path = " -> ".join([*ids, ids[0]])
        raise InvalidGraphError(
            f"the network has a cycle: {path}",
            [issue(["network", "weights"], f"cycle through units {', '.join(map(repr, ids))}")],
        )
    return level


def _a_cycle(n: int, edges: Sequence[tuple[int, int]], indegree: list[int]) -> list[int]:
    """One cycle among the units Kahn's algorithm could not order, following the edges."""
    pred: list[int] = [-1] * n
    for a, b in edges:
        if indegree[a] > 0 and indegree[b] > 0:
            pred[b] = a  # every unit left over has a predecessor left over
    node = next(i for i in range(n) if indegree[i] > 0)
    seen: dict[int, int] = {}
    walk: list[int] = []
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = pred[node]
    cycle = list(reversed(walk[seen[node] :]))
    first = cycle.index(min(cycle))  # start at the unit listed first, so the answer is stable
    return cycle[first:] + cycle[:first]


def _lay_out(net: wire.Network, edges: _Edges, biases: list[Array | None], level: list[int]) -> Plan:
    units = net.units
    # Inputs are the columns of x, in the listed order. Every other unit gets columns of the
    # value tables: by level, then by activation (so each activation is one contiguous group
    # per level), then in the listed order.
    order = sorted(
        range(len(units)), key=lambda i: (units[i].role != "input", level[i], units[i].resolved_activation, i)
    )
    infos: list[UnitInfo | None] = [None] * len(units)
    n_inputs = col = 0
    for i in order:
        u = units[i]
        if u.role == "input":
            infos[i] = UnitInfo(u.id, u.role, u.size, "identity", slice(n_inputs, n_inputs + u.size), 0)
            n_inputs += u.size
        else:
            infos[i] = UnitInfo(
                u.id, u.role, u.size, u.resolved_activation, slice(col, col + u.size), level[i]
            )
            col += u.size
    info = [x for x in infos if x is not None]
    n_cols = col

    counts = [m * n for m, n in zip(edges.rows, edges.cols, strict=True)]
    offsets = [0, *itertools.accumulate(counts)]
    n_weight_params = offsets.pop()
    theta = np.zeros(n_weight_params + n_cols)
    theta[:n_weight_params] = edges.values
    for unit, bias in zip(info, biases, strict=True):
        if bias is not None:
            theta[n_weight_params + unit.cols.start : n_weight_params + unit.cols.stop] = bias

    layout = _Layout(info, edges, counts, offsets, n_inputs)
    by_level: dict[int, list[int]] = {}
    for i in order:
        if units[i].role != "input":
            by_level.setdefault(level[i], []).append(i)
    members_by_level = [members for _, members in sorted(by_level.items())]
    levels = tuple(
        Level(
            cols=slice(info[members[0]].cols.start, info[members[-1]].cols.stop),
            groups=_groups([info[i] for i in members]),
            blocks=blocks,
        )
        for members, blocks in zip(members_by_level, layout.blocks(members_by_level), strict=True)
    )

    outputs = sorted(
        (i for i, u in enumerate(units) if u.role == "output"),
        key=lambda i: (info[i].activation == "softmax", i),
    )
    softmax_outputs = [i for i in outputs if info[i].activation == "softmax"]
    return Plan(
        units=tuple(info),
        unit_index={u.id: i for i, u in enumerate(info)},
        levels=levels,
        layout=layout,
        n_inputs=n_inputs,
        n_cols=n_cols,
        n_weight_params=n_weight_params,
        outputs=tuple(outputs),
        out_cols=_columns([info[i] for i in outputs]),
        out_sigmoid=sum(info[i].size for i in outputs if info[i].activation != "softmax"),
        out_segments=_segments([info[i].size for i in softmax_outputs]) if softmax_outputs else None,
        loss=net.loss,
        theta=theta,
        has_gathered_blocks=any(not isinstance(b.params, slice) for lv in levels for b in lv.blocks),
    )


def _segments(sizes: Sequence[int]) -> Segments:
    sizes_arr = np.asarray(sizes, dtype=np.intp)
    return Segments(starts=np.concatenate([[0], np.cumsum(sizes_arr)[:-1]]).astype(np.intp), sizes=sizes_arr)


def _groups(members: list[UnitInfo]) -> tuple[Group, ...]:
    groups: list[Group] = []
    start = 0
    while start < len(members):
        end = start
        while end < len(members) and members[end].activation == members[start].activation:
            end += 1
        run = members[start:end]
        segments = _segments([u.size for u in run]) if run[0].activation == "softmax" else None
        groups.append(Group(run[0].activation, slice(run[0].cols.start, run[-1].cols.stop), segments))
        start = end
    return tuple(groups)


def _columns(units: Sequence[UnitInfo]) -> Array:
    if not units:
        return np.empty(0, np.intp)
    return np.concatenate([np.arange(u.cols.start, u.cols.stop) for u in units])


def _as_slice(cols: Array) -> Columns:
    """A sorted column set as a slice when it is contiguous (a view, not a copy)."""
    if len(cols) and cols[-1] - cols[0] + 1 == len(cols):
        return slice(int(cols[0]), int(cols[-1]) + 1)
    return cols


class _Arrays(NamedTuple):
    """What gathering needs as arrays: per unit its first column, and that column numbered
    across x then the tables (so inputs sort first); per weight its ends, columns and offset."""

    col_start: Array
    key_start: Array
    src: Array
    tgt: Array
    cols: Array
    offset: Array


class _Elements(NamedTuple):
    """Weight elements, sorted by `col`: the table column each adds into, the source column's
    key (as in _Arrays.key_start, plus its row) and its position in theta."""

    col: Array
    key: Array
    param: Array


class _Layout:
    """The laid-out units and weights, from which level blocks and weight groups are cut."""

    def __init__(
        self, info: list[UnitInfo], edges: _Edges, counts: list[int], offsets: list[int], n_inputs: int
    ) -> None:
        self.info, self.edges, self.n_inputs = info, edges, n_inputs
        self.counts, self.offsets = counts, offsets  # per weight: its elements, where they start
        self.sizes = [u.size for u in info]
        self.incoming: list[list[int]] = [[] for _ in info]
        for k, b in enumerate(edges.tgt):
            self.incoming[b].append(k)

    def weight_infos(self) -> tuple[WeightInfo, ...]:
        ids, e = [u.id for u in self.info], self.edges
        sources, targets = [ids[a] for a in e.src], [ids[b] for b in e.tgt]
        shapes = zip(e.rows, e.cols, strict=True)
        return tuple(map(WeightInfo._make, zip(sources, targets, shapes, self.offsets, strict=True)))

    @functools.cached_property
    def arrays(self) -> _Arrays:
        col_start = np.array([u.cols.start for u in self.info], dtype=np.intp)
        is_input = np.array([u.role == "input" for u in self.info])
        e = self.edges
        src, tgt, cols, offset = (np.array(v, dtype=np.intp) for v in (e.src, e.tgt, e.cols, self.offsets))
        return _Arrays(col_start, col_start + np.where(is_input, 0, self.n_inputs), src, tgt, cols, offset)

    def blocks(self, levels: list[list[int]]) -> list[tuple[Block, ...]]:
        """Each level's blocks: levels are split into chunks of columns, then every gathered
        block of every level is built at once, by array operations over all their elements."""
        chunks = [list(self._chunks(members)) for members in levels]
        built = iter(self._gathered([tgt for level in chunks for tgt, k in level if k < 0]))
        return [tuple(self._whole(tgt, k) if k >= 0 else next(built) for tgt, k in level) for level in chunks]

    def _chunks(self, members: list[int]) -> Iterator[tuple[slice, int]]:
        """Split a level into chunks of columns, greedily, keeping each gathered block mostly
        real weights: (its columns, the one weight feeding it whole or -1 when gathered)."""
        incoming = [self.incoming[i] for i in members]
        if not any(incoming):
            return  # level 0: units without incoming weights; s is the bias
        src, counts, info, sizes = self.edges.src, self.counts, self.info, self.sizes

        def chunk(start: int, stop: int) -> tuple[slice, int]:
            tgt = slice(info[members[start]].cols.start, info[members[stop - 1]].cols.stop)
            whole = stop - start == 1 and len(incoming[start]) == 1
            return tgt, incoming[start][0] if whole else -1

        span = info[members[-1]].cols.stop - info[members[0]].cols.start
        everything = [k for ks in incoming for k in ks]
        feeding = set(map(src.__getitem__, everything))
        real = sum(map(counts.__getitem__, everything))
        if sum(map(sizes.__getitem__, feeding)) * span <= max(DENSITY * real, MIN_BLOCK):
            yield chunk(0, len(members))  # dense enough whole: no split to look for
            return
        start, feeding, feeding_size, real = 0, set(), 0, 0
        for m, ks in enumerate(incoming):
            unit_feeding = {src[k] for k in ks}
            unit_real = sum(counts[k] for k in ks)
            new = unit_feeding - feeding
            new_size = sum(map(sizes.__getitem__, new))
            width = (feeding_size + new_size) * (info[members[m]].cols.stop - info[members[start]].cols.start)
            if m > start and width > max(DENSITY * (real + unit_real), MIN_BLOCK):
                yield chunk(start, m)
                start, feeding, real = m, unit_feeding, 0
                feeding_size = sum(map(sizes.__getitem__, unit_feeding))
            else:
                feeding |= new
                feeding_size += new_size
            real += unit_real
        yield chunk(start, len(members))

    def _whole(self, tgt: slice, k: int) -> Block:
        """A chunk fed by one whole weight: its matrix is a view of theta."""
        e = self.edges
        source, shape = self.info[e.src[k]], (e.rows[k], tgt.stop - tgt.start)
        params = slice(self.offsets[k], self.offsets[k] + shape[0] * shape[1])
        if source.role == "input":
            return Block(source.cols, None, shape[0], tgt, params, shape)
        return Block(None, source.cols, 0, tgt, params, shape)

    def _gathered(self, tgts: list[slice]) -> list[Block]:
        """Gathered blocks for chunks of columns: each block's rows are the distinct source
        columns (keys) of its elements, inputs first, and its matrix says where in theta each
        (row, column) lives (-1 where no weight does)."""
        if not tgts:
            return []
        el = self.elements
        first = np.array([t.start for t in tgts], dtype=np.intp)
        widths = np.array([t.stop for t in tgts], dtype=np.intp) - first
        lo, hi = np.searchsorted(el.col, first), np.searchsorted(el.col, first + widths)
        n_el = hi - lo  # a chunk's elements are a slice of them (sorted by column)
        el_first = np.cumsum(n_el) - n_el  # each block's first element among those gathered
        block = np.repeat(np.arange(len(tgts)), n_el)
        idx = np.arange(len(block)) + np.repeat(lo - el_first, n_el)
        span = sum(self.sizes) + 1  # past any key (inputs' columns, then the tables')
        keys, row = np.unique(block * span + el.key[idx], return_inverse=True)
        key_block = keys // span
        keys -= key_block * span
        n_keys = np.bincount(key_block, minlength=len(tgts))
        splits = np.bincount(key_block[keys < self.n_inputs], minlength=len(tgts))
        key_first = np.cumsum(n_keys) - n_keys
        row -= key_first[block]
        sizes = n_keys * widths
        base = np.cumsum(sizes) - sizes
        pos = base[block] + row * widths[block] + el.col[idx] - first[block]
        flat = np.full(int(sizes.sum()), -1, dtype=np.intp)  # -1: the zero appended to theta
        flat[pos] = el.param[idx]
        order = np.argsort(pos)  # by block, then by place in it
        cells, cell_params = pos[order] - base[block[order]], el.param[idx[order]]
        rows = zip(key_first.tolist(), n_keys.tolist(), splits.tolist(), widths.tolist(), strict=True)
        at = zip(base.tolist(), el_first.tolist(), n_el.tolist(), strict=True)
        blocks = []
        for tgt, (k0, nk, split, width), (b0, e0, ne) in zip(tgts, rows, at, strict=True):
            mine = keys[k0 : k0 + nk]
            blocks.append(
                Block(
                    _as_slice(mine[:split]) if split else None,
                    _as_slice(mine[split:] - self.n_inputs) if split < nk else None,
                    split,
                    tgt,
                    flat[b0 : b0 + nk * width].reshape(nk, width),
                    (nk, width),
                    cells[e0 : e0 + ne],
                    cell_params[e0 : e0 + ne],
                )
            )
        return blocks

    @functools.cached_property
    def elements(self) -> _Elements:
        """Every element of every weight, ordered by the table column it lands in: a block's
        elements are then one slice (its columns are contiguous), found by two searches."""
        a = self.arrays
        counts = np.array(self.counts, dtype=np.intp)
        which = np.repeat(np.arange(len(counts)), counts)
        local = np.arange(len(which)) - np.repeat(a.offset, counts)
        row, col = np.divmod(local, a.cols[which])
        col += a.col_start[a.tgt[which]]
        order = np.argsort(col)  # element i of all is theta[i]
        return _Elements(col[order], (a.key_start[a.src[which]] + row)[order], order)

    def weight_groups(self) -> tuple[WeightGroup, ...]:
        """Weights grouped by shape and kind of source, in the order each kind first appears."""
        e, info = self.edges, self.info
        by_kind: dict[tuple[int, int, bool], list[int]] = {}
        for k, kind in enumerate(zip(e.rows, e.cols, [info[a].role == "input" for a in e.src], strict=True)):
            by_kind.setdefault(kind, []).append(k)
        groups = []
        for (m, n, from_inputs), ks in by_kind.items():
            if len(ks) == 1:
                k = ks[0]
                params = slice(self.offsets[k], self.offsets[k] + m * n)
                groups.append(
                    WeightGroup((m, n), (k,), from_inputs, info[e.src[k]].cols, info[e.tgt[k]].cols, params)
                )
                continue
            a, index = self.arrays, np.array(ks, dtype=np.intp)
            groups.append(
                WeightGroup(
                    (m, n),
                    tuple(ks),
                    from_inputs,
                    a.col_start[a.src[index]][:, None] + np.arange(m),
                    a.col_start[a.tgt[index]][:, None] + np.arange(n),
                    a.offset[index][:, None] + np.arange(m * n),
                )
            )
        return tuple(groups)


# ---------------------------------------------------------------- samples


@dataclass(frozen=True)
class Batch:
    """Samples laid out for a plan: inputs [batch, n_inputs], targets [batch, n_outputs] or None."""

    x: Array
    y: Array | None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    def rows(self, index: slice | Array) -> Batch:
        return Batch(self.x[index], None if self.y is None else self.y[index])


def bind_samples(plan: Plan, samples: wire.Samples, need_targets: bool) -> Batch:
    """Check the samples against the network and lay them out in its column order."""
    problems: list[dict[str, object]] = []
    batch: int | None = None
    first: str = ""

    def gather(kind: str, given: dict[str, object], wanted: list[UnitInfo]) -> Array | None:
        nonlocal batch, first
        wanted_ids = {u.id for u in wanted}
        for uid in given:
            if enough(problems):
                break
            if uid not in wanted_ids:
                role = plan.units[plan.unit_index[uid]].role if uid in plan.unit_index else None
                why = f"is a {role} unit" if role else "is not a unit of the network"
                problems.append(issue(["samples", kind, uid], f"{kind}[{uid!r}]: {uid!r} {why}"))
        parts = []
        for u in wanted:
            if enough(problems):
                break
            loc = ["samples", kind, u.id]
            if u.id not in given:
                problems.append(issue(["samples", kind], f"{kind} has no entry for {u.role} unit {u.id!r}"))
                continue
            a = to_numpy(given[u.id], loc)
            if a.ndim == 1 and u.size == 1:
                a = a.reshape(-1, 1)
            if a.ndim != 2 or a.shape[1] != u.size or a.shape[0] < 1:
                problems.append(
                    issue(loc, f"{kind}[{u.id!r}] has shape {list(a.shape)}, expected [batch, {u.size}]")
                )
                continue
            if batch is None:
                batch, first = a.shape[0], f"{kind}[{u.id!r}]"
            elif a.shape[0] != batch:
                problems.append(
                    issue(loc, f"{kind}[{u.id!r}] has batch {a.shape[0]} but {first} has batch {batch}")
                )
                continue
            parts.append(a)
        if problems:
            return None
        return np.concatenate(parts, axis=1)

    inputs = [u for u in plan.units if u.role == "input"]
    outputs = [plan.units[i] for i in plan.outputs]
    x = gather("inputs", dict(samples.inputs), inputs)
    y = None
    if samples.targets or need_targets:
        y = gather("targets", dict(samples.targets), outputs)
    raise_collected(InvalidSamplesError, problems)
    assert x is not None
    if y is not None and plan.loss == "cross_entropy" and ((y < 0) | (y > 1)).any():
        raise InvalidSamplesError("cross_entropy needs every target in [0, 1]")
    return Batch(x, y)


# ---------------------------------------------------------------- forward and backward


@dataclass(frozen=True)
class Values:
    """A batch's inputs x [batch, n_inputs], and every other unit's s and z *unit-major*,
    [n_cols, batch]: a level's columns are then contiguous rows, so its activations run over
    one contiguous block and a sparse level gathers rows, not columns (7x faster)."""

    x: Array
    s: Array
    z: Array
    matrices: tuple[Array, ...] = ()  # each block's weight matrix, in level order, for backward

    def z_of(self, unit: UnitInfo) -> Array:
        """A unit's z, [batch, size] (a view)."""
        return self.x[:, unit.cols] if unit.role == "input" else self.z[unit.cols].T

    def s_of(self, unit: UnitInfo) -> Array:
        """A non-input unit's s, [batch, size] (a view)."""
        return self.s[unit.cols].T


def _theta0(plan: Plan, theta: Array) -> Array | None:
    return np.append(theta, 0.0) if plan.has_gathered_blocks else None


@dataclass(frozen=True)
class Offsets:
    """An amount added to one column of s in each row: row n gets `values[n]` at `cols[n]`.

    Perturbing w_{i->j}[a, b] by e is exactly adding e * z_i[n, a] to s_j[n, b] for every
    sample n, since nothing upstream of j changes; so finite differences for many parameters
    run as one pass over replicas of the batch, each replica carrying its own offset.
    """

    cols: Array
    values: Array


def forward(plan: Plan, theta: Array, x: Array, offsets: Offsets | None = None) -> Values:
    """s and z of every unit, a level at a time over the whole batch."""
    rows = x.shape[0]
    s = np.empty((plan.n_cols, rows))
    z = np.empty((plan.n_cols, rows))
    x_t = x.T
    bias = theta[plan.n_weight_params :, None]
    theta0 = _theta0(plan, theta)
    matrices = []
    for level in plan.levels:
        checkpoint()
        if not level.blocks:
            s[level.cols] = bias[level.cols]
        for block in level.blocks:
            w = block.matrix(theta, theta0)
            matrices.append(w)
            out = s[block.tgt]
            if block.src_z is None:
                np.matmul(w.T, x_t[block.src_x], out=out)
            elif block.src_x is None:
                np.matmul(w.T, z[block.src_z], out=out)
            else:
                np.matmul(w[: block.split].T, x_t[block.src_x], out=out)
                out += w[block.split :].T @ z[block.src_z]
        if level.blocks:
            s[level.cols] += bias[level.cols]
        if offsets is not None:
            at = np.flatnonzero((offsets.cols >= level.cols.start) & (offsets.cols < level.cols.stop))
            s[offsets.cols[at], at] += offsets.values[at]
        for group in level.groups:
            group.forward(s[group.cols], z[group.cols])
    return Values(x, s, z, tuple(matrices))


LOSS_SCALE = {"half_squared_error": 0.5, "squared_error": 1.0}


def sample_losses(plan: Plan, values: Values, y: Array) -> Array:
    """E_n for every sample n."""
    if plan.loss in LOSS_SCALE:
        diff = values.z[plan.out_cols].T - y
        return LOSS_SCALE[plan.loss] * np.einsum("ij,ij->i", diff, diff)
    s = values.s[plan.out_cols].T
    k = plan.out_sigmoid
    # binary: -y log(sigmoid s) - (1 - y) log(1 - sigmoid s) = softplus(s) - y s
    losses = (np.logaddexp(0.0, s[:, :k]) - y[:, :k] * s[:, :k]).sum(axis=1)
    if plan.out_segments is not None:
        seg, ys, ss = plan.out_segments, y[:, k:], s[:, k:]
        # categorical: -sum y log softmax(s) = sum(y) logsumexp(s) - sum y s, per output
        losses += (seg.sum(ys) * seg.logsumexp(ss)).sum(axis=1) - np.einsum("ij,ij->i", ys, ss)
    return losses


def loss_gradient(plan: Plan, values: Values, y: Array) -> tuple[Array | None, Array | None]:
    """dE_n/dz of the outputs (squared errors) or dE_n/ds (cross-entropy, computed from s),
    [batch, outputs]."""
    z = values.z[plan.out_cols].T
    if plan.loss in LOSS_SCALE:
        return 2.0 * LOSS_SCALE[plan.loss] * (z - y), None
    ds = z - y
    if plan.out_segments is not None:
        k, seg = plan.out_sigmoid, plan.out_segments
        ds[:, k:] = seg.spread(seg.sum(y[:, k:])) * z[:, k:] - y[:, k:]
    return None, ds


def backward(plan: Plan, theta: Array, values: Values, y: Array) -> Array:
    """delta = dE_n/ds of every non-input unit and sample, unit-major: [n_cols, batch]."""
    rows = values.z.shape[1]
    g = np.zeros((plan.n_cols, rows))  # dE_n/dz, accumulated over every successor
    delta = np.empty((plan.n_cols, rows))
    dz, ds = loss_gradient(plan, values, y)
    loss_ds = None
    if dz is not None:
        g[plan.out_cols] = dz.T
    else:
        assert ds is not None
        loss_ds = np.zeros((plan.n_cols, rows))
        loss_ds[plan.out_cols] = ds.T
    matrices = iter(reversed(values.matrices))  # as forward gathered them, walked back
    for level in reversed(plan.levels):
        checkpoint()
        for group in level.groups:
            c = group.cols
            group.vjp(g[c], values.s[c], values.z[c], delta[c])
        if loss_ds is not None:
            delta[level.cols] += loss_ds[level.cols]
        for block, w in zip(reversed(level.blocks), matrices, strict=False):
            if block.src_z is not None:  # nothing flows back into the inputs
                g[block.src_z] += w[block.split :] @ delta[block.tgt]
    return delta


def gradient(plan: Plan, values: Values, delta: Array, scale: float) -> Array:
    """scale * sum_n dE_n/dtheta: every weight's z_i delta_j and every bias's delta_j.

    A block at a time: one product for its whole matrix, from which a gathered block's real
    weights are picked out.
    """
    grad = np.empty(plan.n_params)
    x_t = values.x.T
    for level in plan.levels:
        for block in level.blocks:
            d = delta[block.tgt].T
            if isinstance(block.params, slice):  # one whole weight, from one unit
                source = values.z[block.src_z] if block.src_x is None else x_t[block.src_x]
                np.matmul(source, d, out=grad[block.params].reshape(block.shape))
                continue
            dw = np.empty(block.shape)
            if block.src_x is not None:
                np.matmul(x_t[block.src_x], d, out=dw[: block.split])
            if block.src_z is not None:
                np.matmul(values.z[block.src_z], d, out=dw[block.split :])
            grad[block.cell_params] = dw.ravel()[block.cells]
    delta.sum(axis=1, out=grad[plan.n_weight_params :])
    grad *= scale
    return grad


def per_sample_gradient(plan: Plan, values: Values, delta: Array) -> Array:
    """dE_n/dtheta for every sample n: [batch, n_params]."""
    rows = delta.shape[1]
    grad = np.empty((rows, plan.n_params))
    for wg in plan.weight_groups:
        z = values.x.T if wg.from_inputs else values.z
        if isinstance(wg.src, slice):
            per = z[wg.src].T[:, :, None] * delta[wg.tgt].T[:, None, :]
            grad[:, wg.params] = per.reshape(rows, -1)
        else:
            per = np.einsum("emb,enb->bemn", z[wg.src], delta[wg.tgt])
            grad[:, wg.params] = per.reshape(rows, len(wg.weights), -1)
    grad[:, plan.n_weight_params :] = delta.T
    return grad


def reduction_scale(reduction: str, rows: int) -> float:
    return 1.0 / rows if reduction == "mean" else 1.0


def loss_value(plan: Plan, theta: Array, batch: Batch, reduction: str) -> float:
    """The reduced loss of a batch."""
    assert batch.y is not None
    losses = sample_losses(plan, forward(plan, theta, batch.x), batch.y)
    return float(losses.sum() * reduction_scale(reduction, batch.size))


# ---------------------------------------------------------------- SGD


@dataclass(frozen=True)
class SgdOptions:
    learning_rate: float
    epochs: int = 1
    batch_size: int | None = None
    shuffle: bool = False
    seed: int | None = None
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    reduction: str = "mean"


def sgd_step(theta: Array, grad: Array, buf: Array | None, opt: SgdOptions) -> tuple[Array, Array | None]:
    """One step of torch.optim.SGD's documented update; returns new (theta, momentum buffer)."""
    g = grad + opt.weight_decay * theta if opt.weight_decay else grad
    if opt.momentum:
        buf = g.copy() if buf is None else opt.momentum * buf + g
        g = g + opt.momentum * buf if opt.nesterov else buf
    return theta - opt.learning_rate * g, buf


def steps_per_epoch(rows: int, batch_size: int | None) -> int:
    size = rows if batch_size is None else min(batch_size, rows)
    return -(-rows // size)


@dataclass(frozen=True)
class Training:
    theta: Array
    steps: int
    history: list[float]


def train(plan: Plan, batch: Batch, opt: SgdOptions) -> Training:
    """Minibatch SGD over the batch; the loss is reported on the full batch."""
    assert batch.y is not None
    theta = plan.theta.copy()
    size = batch.size if opt.batch_size is None else min(opt.batch_size, batch.size)
    rng = np.random.default_rng(opt.seed)
    history, steps, buf = [], 0, None
    for _ in range(opt.epochs):
        order = rng.permutation(batch.size) if opt.shuffle else None
        for start in range(0, batch.size, size):
            index = slice(start, start + size) if order is None else order[start : start + size]
            mini = batch.rows(index)
            assert mini.y is not None
            values = forward(plan, theta, mini.x)
            delta = backward(plan, theta, values, mini.y)
            grad = gradient(plan, values, delta, reduction_scale(opt.reduction, mini.size))
            theta, buf = sgd_step(theta, grad, buf, opt)
            steps += 1
        history.append(loss_value(plan, theta, batch, opt.reduction))
    return Training(theta, steps, history)
