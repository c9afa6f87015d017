"""Checking a network and compiling it to a Plan: ids, shapes, the loss's pairing with the
outputs, levels (longest path from a unit without inputs), and a cycle named when there is one.

Whatever is per weight runs as list passes and array operations: a NEAT-style graph of
thousands of single units compiles without a Python step per weight.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from service.engine.activations import ACTIVATIONS, DEFAULT_SLOPE, resolve
from service.engine.blocks import Edges, SparseBlocks
from service.engine.errors import GraphError, Problem, enough, raise_collected
from service.engine.losses import LOSSES
from service.engine.network import AGGREGATIONS, Network, Unit, WeightColumns
from service.engine.plan import Group, Level, Plan, UnitInfo
from service.engine.segments import segments
from service.engine.values import parameters, unit_values, weight_value, weight_values

Array = np.ndarray
ROLES = ("input", "hidden", "output")


def compile_network(net: Network) -> Plan:
    """Check the graph once, up front, and lay it out for the level-at-a-time passes.

    Raises GraphError with every problem found (up to MAX_PROBLEMS), located in `net`.
    """
    units = net.units
    problems: list[Problem] = []
    index: dict[str, int] = {}
    for i, u in enumerate(units):
        if u.id in index:
            problems.append(Problem(("units", i, "id"), f"duplicate unit id {u.id!r}"))
        else:
            index[u.id] = i
        if u.role not in ROLES:
            problems.append(Problem(("units", i, "role"), f"unit {u.id!r} has unknown role {u.role!r}"))
        if u.activation not in ACTIVATIONS:
            problems.append(
                Problem(("units", i, "activation"), f"unit {u.id!r} has unknown activation {u.activation!r}")
            )
    roles = [u.role for u in units]
    if "input" not in roles:
        problems.append(Problem(("units",), "the network has no input unit"))
    if "output" not in roles:
        problems.append(Problem(("units",), "the network has no output unit"))
    loss = LOSSES.get(net.loss)
    if loss is None:
        problems.append(Problem(("loss",), f"unknown loss {net.loss!r}"))
    elif loss.accepts is not None:
        accepted = " or ".join(f"{name} ({what})" for name, what in loss.accepts.items())
        for i, u in enumerate(units):
            if u.role == "output" and u.activation not in loss.accepts:
                problems.append(
                    Problem(
                        ("units", i, "activation"),
                        f"{loss.name} needs output {u.id!r} to use {accepted}, not {u.activation}",
                    )
                )
    if net.huber_delta is not None and net.loss != "huber":
        problems.append(Problem(("huber_delta",), f"huber_delta is huber's, and the loss is {net.loss}"))
    elif net.huber_delta is not None and not (np.isfinite(net.huber_delta) and net.huber_delta > 0):
        problems.append(Problem(("huber_delta",), "huber_delta must be a finite number > 0"))
    sizes = [u.size for u in units]
    edges = _edges(net, index, sizes, roles, problems)

    biases, responses = unit_values(units, problems)
    for i, u in enumerate(units):
        _unit_fields(i, u, problems)
    raise_collected(GraphError, problems)
    assert edges is not None  # else there were problems

    levels = _levels(net, edges.src, edges.tgt)
    return _lay_out(net, edges, biases, responses, levels)


def _unit_fields(i: int, u: Unit, problems: list[Problem]) -> None:
    """The fields only some units take: slope (leaky_relu), response and aggregation (not inputs)."""
    if u.slope is not None and (u.activation != "leaky_relu" or u.role == "input"):
        problems.append(
            Problem(("units", i, "slope"), f"unit {u.id!r} has a slope, which only leaky_relu takes")
        )
    elif u.slope is not None and not np.isfinite(u.slope):
        problems.append(Problem(("units", i, "slope"), f"the slope of {u.id!r} is not finite"))
    if u.aggregation not in AGGREGATIONS:
        problems.append(
            Problem(
                ("units", i, "aggregation"),
                f"unit {u.id!r} has unknown aggregation {u.aggregation!r} (known: {', '.join(AGGREGATIONS)})",
            )
        )
    if u.role == "input" and (u.response is not None or u.aggregation != "sum"):
        problems.append(
            Problem(("units", i), f"input unit {u.id!r} takes no response or aggregation: its z is the input")
        )


def _edges(
    net: Network, index: dict[str, int], sizes: list[int], roles: Sequence[str], problems: list[Problem]
) -> Edges | None:
    """The weights, checked in a few passes that each run at C speed over a list; a weight at a
    time only for matrices and for finding what is wrong. None when something is."""
    weights = net.weights
    if isinstance(weights, WeightColumns):
        return _column_edges(net, weights, index, sizes, roles, problems)
    src = [index.get(a, -1) for a in weights.source]
    tgt = [index.get(b, -1) for b in weights.target]
    if (
        -1 in src
        or -1 in tgt
        or len(set(zip(src, tgt, strict=True))) < len(src)
        or any(roles[b] == "input" for b in tgt)
    ):
        _weight_problems(net, index, sizes, problems)
        return None
    rows, cols = [sizes[a] for a in src], [sizes[b] for b in tgt]
    values = weight_values(net, rows, cols, problems)
    return None if values is None else Edges(src, tgt, rows, cols, values)


def _column_edges(
    net: Network,
    weights: WeightColumns,
    index: dict[str, int],
    sizes: list[int],
    roles: Sequence[str],
    problems: list[Problem],
) -> Edges | None:
    """Weights given as columns: all between single units, their values one array."""
    ones = [1] * len(weights.source)
    src = list(map(index.get, weights.source, itertools.repeat(-1)))
    tgt = list(map(index.get, weights.target, itertools.repeat(-1)))
    values = weight_values(net, ones, ones, problems)
    if -1 in src or -1 in tgt or not _fine_columns(src, tgt, sizes, roles):
        _weight_problems(net, index, sizes, problems)
    if problems or values is None:
        return None
    return Edges(src, tgt, ones, ones, values)


def _fine_columns(src: list[int], tgt: list[int], sizes: list[int], roles: Sequence[str]) -> bool:
    """Whether weights between known units are each given once, into no input, between single units."""
    a, b = np.array(src, dtype=np.intp), np.array(tgt, dtype=np.intp)
    into_input = np.array([r == "input" for r in roles])[b].any()
    layers = sizes.count(1) < len(sizes) and (np.array(sizes)[np.concatenate([a, b])] != 1).any()
    pairs = a * len(sizes) + b
    pairs.sort()  # np.unique would hash: sorting is faster here
    return not into_input and not layers and not (pairs[1:] == pairs[:-1]).any()


def _weight_problems(net: Network, index: dict[str, int], sizes: list[int], problems: list[Problem]) -> None:
    """Everything wrong with the weights, a weight at a time, in the listed order. Weights given
    as columns join single units, and have their values checked apart (one array)."""
    given = net.weights
    columns = isinstance(given, WeightColumns)
    seen: set[tuple[str, str]] = set()
    for k, (a, b) in enumerate(zip(given.source, given.target, strict=True)):
        if enough(problems):
            return
        loc: tuple[str | int, ...] = ("weights", "source", k) if columns else ("weights", k)
        name = f"weight {a}->{b}"
        unknown = [uid for uid in (a, b) if uid not in index]
        if unknown:
            problems.append(Problem(loc, f"{name} names unknown unit(s) {', '.join(map(repr, unknown))}"))
            continue
        if (a, b) in seen:
            problems.append(Problem(loc, f"{name} is given twice"))
            continue
        seen.add((a, b))
        if net.units[index[b]].role == "input":
            problems.append(Problem(loc, f"{name} points into input unit {b!r}"))
            continue
        if columns:
            layers = [uid for uid in (a, b) if sizes[index[uid]] != 1]
            if layers:
                problems.append(
                    Problem(
                        loc,
                        f"{name}: weights given as columns join single units, and "
                        f"{', '.join(f'{uid!r} has size {sizes[index[uid]]}' for uid in layers)}; "
                        "give the weights of layers as a list of objects",
                    )
                )
        else:
            weight_value(net, k, given.value[k], sizes[index[a]], sizes[index[b]], problems)


def longest_paths(n: int, src: Sequence[int], tgt: Sequence[int]) -> tuple[list[int], list[int]]:
    """Each of `n` nodes' level (the longest path to it from a node without inputs), by Kahn's
    algorithm over the edges `src[k] -> tgt[k]`; and the in-degrees left, non-zero only where a
    cycle kept nodes from being ordered."""
    succ: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for a, b in zip(src, tgt, strict=True):
        succ[a].append(b)
        indegree[b] += 1
    level = [0] * n
    ready = [i for i in range(n) if indegree[i] == 0]
    while ready:
        a = ready.pop()
        next_level = level[a] + 1
        for b in succ[a]:
            if level[b] < next_level:
                level[b] = next_level
            indegree[b] -= 1
            if indegree[b] == 0:
                ready.append(b)
    return level, indegree


def _levels(net: Network, src: list[int], tgt: list[int]) -> list[int]:
    """Each unit's level (longest path from a unit without inputs); names a cycle if there is one."""
    n = len(net.units)
    level, indegree = longest_paths(n, src, tgt)
    if any(indegree):
        cycle = _a_cycle(n, list(zip(src, tgt, strict=True)), indegree)
        ids = [net.units[i].id for i in cycle]
        if len(ids) > 20:  # name enough of a long one to find it, not all of it
            ids = [*ids[:10], f"... ({len(ids) - 20:,} more) ...", *ids[-10:]]
        path = " -> ".join([*ids, ids[0]])
        raise GraphError(
            f"the network has a cycle: {path}",
            [Problem(("weights",), f"cycle through units {', '.join(map(repr, ids))}")],
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


def _slope_key(u: Unit) -> float:
    return DEFAULT_SLOPE if u.slope is None else u.slope


def _lay_out(
    net: Network, edges: Edges, biases: list[Array | None], responses: list[Array | None], level: list[int]
) -> Plan:
    units = net.units
    # Inputs are the columns of x, in the listed order. Every other unit gets columns of the
    # value tables: by level, then by activation and its slope (so each activation is one
    # contiguous group per level), then in the listed order.
    order = sorted(
        range(len(units)),
        key=lambda i: (units[i].role != "input", level[i], units[i].activation, _slope_key(units[i]), i),
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
                u.id, u.role, u.size, u.activation, slice(col, col + u.size), level[i], u.slope
            )
            col += u.size
    info = [x for x in infos if x is not None]
    n_cols = col

    counts = [m * n for m, n in zip(edges.rows, edges.cols, strict=True)]
    offsets = [0, *itertools.accumulate(counts)]
    n_weight_params = offsets.pop()
    has_responses = any(r is not None for r in responses)
    n_response_params = n_cols if has_responses else 0
    theta = parameters(info, edges.values, biases, responses, n_cols, n_response_params)

    # the sparse blocks keep no values: a plan never holds on to the arrays of the request it was
    # compiled from (a plan kept for its structure, service.engine.reuse, outlives that request)
    sparse = SparseBlocks(info, dataclasses.replace(edges, values=()), counts, offsets, n_inputs)
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
        for members, blocks in zip(members_by_level, sparse.blocks(members_by_level), strict=True)
    )

    # outputs with elementwise activations first, then the segmented ones
    segmented = [ACTIVATIONS[u.activation].segmented for u in info]
    outputs = sorted((i for i, u in enumerate(units) if u.role == "output"), key=lambda i: (segmented[i], i))
    segmented_outputs = [i for i in outputs if segmented[i]]
    return Plan(
        units=tuple(info),
        unit_index={u.id: i for i, u in enumerate(info)},
        levels=levels,
        sparse=sparse,
        n_inputs=n_inputs,
        n_cols=n_cols,
        n_weight_params=n_weight_params,
        outputs=tuple(outputs),
        out_cols=_columns([info[i] for i in outputs]),
        out_split=sum(info[i].size for i in outputs if not segmented[i]),
        out_segments=segments([info[i].size for i in segmented_outputs]) if segmented_outputs else None,
        loss=net.loss,
        theta=theta,
        has_gathered_blocks=any(not isinstance(b.params, slice) for lv in levels for b in lv.blocks),
        mean_scale=_mean_scale(units, info, edges, n_cols),
        n_response_params=n_response_params,
        huber_delta=net.huber_delta,
    )


def _mean_scale(units: Sequence[Unit], info: list[UnitInfo], edges: Edges, n_cols: int) -> Array | None:
    """1/(incoming scalar connections) for the columns of units taking the mean (1 for one with
    none: its sum is 0 either way), 1 elsewhere; None when no unit takes the mean."""
    if all(u.aggregation == "sum" for u in units):
        return None
    incoming = np.bincount(
        np.asarray(edges.tgt, dtype=np.intp),
        weights=np.asarray(edges.rows, dtype=np.float64),
        minlength=len(units),
    )
    scale = np.ones(n_cols)
    for u, unit, n in zip(units, info, incoming.tolist(), strict=True):
        if u.aggregation == "mean" and n > 0:
            scale[unit.cols] = 1.0 / n
    return scale


def _groups(members: list[UnitInfo]) -> tuple[Group, ...]:
    """A level's runs of units sharing an activation (they are laid out so)."""
    groups: list[Group] = []
    start = 0
    while start < len(members):
        end = start
        first = members[start]
        while end < len(members) and (members[end].activation, members[end].slope) == (
            first.activation,
            first.slope,
        ):
            end += 1
        run = members[start:end]
        activation = resolve(first.activation, first.slope)
        seg = segments([u.size for u in run]) if activation.segmented else None
        groups.append(Group(activation, slice(run[0].cols.start, run[-1].cols.stop), seg))
        start = end
    return tuple(groups)


def _columns(units: Sequence[UnitInfo]) -> Array:
    if not units:
        return np.empty(0, np.intp)
    return np.concatenate([np.arange(u.cols.start, u.cols.stop) for u in units])
