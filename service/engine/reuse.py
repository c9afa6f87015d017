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

from service.engine.compile import compile_network, parameters, per_entry, weight_value
from service.engine.errors import Problem
from service.engine.network import Network, WeightColumns
from service.engine.plan import Plan

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
    units, given, shapes = net.units, net.weights, [w.shape for w in plan.weights]
    weights: tuple[np.ndarray, ...] | None
    if isinstance(given, WeightColumns):
        column = np.asarray(given.value, dtype=np.float64)
        weights = (column,) if column.shape == (len(shapes),) else None
    elif shapes.count((1, 1)) == len(shapes) and set(map(type, given.value)) <= {float}:
        weights = (np.array(given.value, dtype=np.float64),)  # single units: one call
    else:
        parts = [
            weight_value(net, k, value, rows, cols, problems)
            for k, (value, (rows, cols)) in enumerate(zip(given.value, shapes, strict=True))
        ]
        weights = None if problems else tuple(p for p in parts if p is not None)
    biases = [per_entry(i, u, "bias", u.bias, problems) for i, u in enumerate(units)]
    responses = [per_entry(i, u, "response", u.response, problems) for i, u in enumerate(units)]
    if problems or weights is None:
        return compile_network(net)  # (which names every problem, in its order)
    theta = parameters(plan.units, weights, biases, responses, plan.n_cols, plan.n_response_params)
    made = dataclasses.replace(plan, theta=theta)
    for name in _STRUCTURAL:  # (built on first use from the structure alone)
        if name in plan.__dict__:
            made.__dict__[name] = plan.__dict__[name]
    return made


class Plans:
    """The structures compiled last, up to `weights` weights in all (a plan's memory grows with
    its weights): `compile` compiles a network whose structure is not among them, and reuses
    the plan of one that is. Safe to share between threads."""

    def __init__(self, weights: int) -> None:
        self.weights = weights
        self._plans: OrderedDict[Hashable, tuple[Plan, int]] = OrderedDict()  # and its weights
        self._kept = 0  # weights of the plans kept
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def compile(self, net: Network) -> Plan:
        n = len(net.weights.source)
        if n > self.weights:
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
        with self._lock:
            self.misses += 1
            if key not in self._plans:  # (another thread may have compiled it meanwhile)
                self._plans[key] = (plan, n)
                self._kept += n
            while self._kept > self.weights:
                _, (_, dropped) = self._plans.popitem(last=False)
                self._kept -= dropped
        return plan
