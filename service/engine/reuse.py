"""Compiling a structure once: a network whose structure was compiled before takes that plan
with its own parameters, and is not checked and laid out again.

The structure is everything compiling reads but the parameters' values (`structure_key`):
units with their roles, sizes, activations, slopes, aggregations and whether they give a
response, the weights' endpoints in their listed order and their form, the loss and huber's
delta. Two networks with the same key compile to the same plan but for `theta`, so a plan
made by `with_parameters` is the plan `compile_network` would make. A client training or
probing one network sends its structure again and again; for a small one, compiling is most
of the work (bench/RESULTS.md).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from service.engine.compile import compile_network
from service.engine.errors import Problem
from service.engine.network import Network, WeightColumns
from service.engine.plan import Plan
from service.engine.values import parameters, unit_values, weight_values

#: what a plan built on first use keeps of its structure, and passes on (service.engine.plan)
_STRUCTURAL = ("weights", "weight_groups")


def structure_key(net: Network) -> Hashable:
    """What compiling `net` lays out: all of it but the values of its parameters."""
    w = net.weights
    units = tuple(
        (u.id, u.role, u.size, u.activation, u.slope, u.aggregation, u.response is not None)
        for u in net.units
    )
    return (units, isinstance(w, WeightColumns), tuple(w.source), tuple(w.target), net.loss, net.huber_delta)


def with_parameters(plan: Plan, net: Network) -> Plan:
    """`plan`, compiled from a network with `net`'s structure, with `net`'s parameters: what
    `compile_network(net)` returns. A value of the wrong shape is reported as compiling reports it."""
    problems: list[Problem] = []
    shapes = [w.shape for w in plan.weights]
    weights = weight_values(net, [m for m, _ in shapes], [n for _, n in shapes], problems)
    biases, responses = unit_values(net.units, problems)
    if problems or weights is None:
        return compile_network(net)  # (which names every problem, in its order)
    theta = parameters(plan.units, weights, biases, responses, plan.n_cols, plan.n_response_params)
    made = dataclasses.replace(plan, theta=theta)
    for name in _STRUCTURAL:  # (built on first use from the structure alone)
        if name in plan.__dict__:
            made.__dict__[name] = plan.__dict__[name]
    return made


#: bytes a plan keeps per unit and per weight beyond its arrays (their infos, ids, the key)
UNIT_BYTES, WEIGHT_BYTES = 400, 300


def footprint(plan: Plan) -> int:
    """About the bytes a kept plan holds: its index arrays (gathered blocks' above all), and
    what it keeps per unit and per weight."""
    arrays: list[object] = [plan.out_cols, plan.mean_scale]
    for level in plan.levels:
        for block in level.blocks:
            arrays += [block.src_x, block.src_z, block.params, block.cells, block.cell_params]
    held = sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))  # (a slice: a view, none)
    return held + UNIT_BYTES * len(plan.units) + WEIGHT_BYTES * len(plan.weights)


class Plans:
    """The structures compiled last, up to `budget` bytes of plans in all (`footprint`):
    `compile` compiles a network whose structure is not among them, and reuses the plan of one
    that is. A plan is kept without its parameters (a hit brings its own) and without what its
    sparse blocks build on first use. Safe to share between threads."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._plans: OrderedDict[Hashable, tuple[Plan, int]] = OrderedDict()  # and its footprint
        self._kept = 0  # bytes of the plans kept
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def kept(self) -> int:
        """Bytes of the plans kept (their footprints)."""
        return self._kept

    def __len__(self) -> int:
        return len(self._plans)

    def compile(self, net: Network) -> Plan:
        if self.budget <= 0:
            return compile_network(net)
        key = structure_key(net)
        with self._lock:
            known = self._plans.get(key)
            if known is not None:
                self._plans.move_to_end(key)
                self.hits += 1
        if known is not None:
            return with_parameters(known[0], net)
        plan = compile_network(net)  # (raises for a network that does not compile: nothing kept)
        kept = dataclasses.replace(plan, theta=_NO_PARAMETERS)
        for name in _BUILT_ON_FIRST_USE:
            kept.sparse.__dict__.pop(name, None)
        size = footprint(kept)
        with self._lock:
            self.misses += 1
            if size <= self.budget and key not in self._plans:  # (another thread may have kept it)
                self._plans[key] = (kept, size)
                self._kept += size
            while self._kept > self.budget:
                _, (_, dropped) = self._plans.popitem(last=False)
                self._kept -= dropped
        return plan


_NO_PARAMETERS = np.empty(0)
#: what the sparse blocks build when first asked (for compiling, for per-sample gradients),
#: rebuilt if a kept plan's hit asks again: index arrays as large as the weights' elements
_BUILT_ON_FIRST_USE = ("elements", "arrays")
