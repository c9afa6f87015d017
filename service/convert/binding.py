"""Binding a request to the engine: a validated wire request turned into the engine's own network and
samples (its arrays decoded), and the engine's errors turned into problems located in the
request's JSON."""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn

import numpy as np

from service import engine, wire
from service.convert.encoding import to_numpy
from service.engine import Batch, EngineError, Plan
from service.problems import (
    DeadlineExceededError,
    InvalidGraphError,
    InvalidSamplesError,
    ProblemError,
    issue,
    raise_collected,
)


def network(net: wire.Network) -> engine.Network:
    """The engine's description of a wire network, its arrays decoded (numbers stay numbers)."""
    given = net.weights
    weights: engine.WeightList | engine.WeightColumns
    if isinstance(given, wire.WeightColumns):
        weights = engine.WeightColumns(
            given.source, given.target, to_numpy(given.value, ["network", "weights", "value"])
        )
    else:
        values: list[Any] = list(map(_value, given))
        if set(map(type, values)) != {float}:  # numbers (single units') stay as they are
            values = [
                v if type(v) is float else to_numpy(v, ["network", "weights", k, "value"])
                for k, v in enumerate(values)
            ]
        weights = engine.WeightList(list(map(_source, given)), list(map(_target, given)), values)
    units = [
        engine.Unit(
            u.id,
            u.role,
            u.size,
            u.resolved_activation,
            None if u.bias is None else to_numpy(u.bias, ["network", "units", i, "bias"]),
            u.slope,
            None if u.response is None else to_numpy(u.response, ["network", "units", i, "response"]),
            u.aggregation or "sum",
        )
        for i, u in enumerate(net.units)
    ]
    return engine.Network(units, weights, net.loss, net.huber_delta)


_source, _target, _value = (operator.attrgetter(name) for name in ("source", "target", "value"))


#: the structures this process compiled last (service.engine.reuse), up to this many bytes of
#: plans (`engine.footprint`): the seed's chain keeps about 3 KB, P3's DAG of 7,800 weights 3.7 MB
PLANS = engine.Plans(budget=32 * 1024 * 1024)


def compile_network(net: wire.Network) -> Plan:
    """Compile a wire network, or reuse the plan of its structure; what is wrong with it is an
    InvalidGraphError."""
    described = network(net)
    try:
        return PLANS.compile(described)
    except engine.GraphError as exc:
        _raise(InvalidGraphError, exc, "network")


class _Decoded(Mapping[str, np.ndarray]):
    """A wire mapping of unit ids to arrays, each decoded when it is read (the engine reads only
    those of units it wants, so an array under a wrong id is reported as that, not decoded)."""

    def __init__(self, given: Mapping[str, Any], kind: str) -> None:
        self._given, self._kind = given, kind

    def __getitem__(self, uid: str) -> np.ndarray:
        return to_numpy(self._given[uid], ["samples", self._kind, uid])

    def __iter__(self) -> Iterator[str]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)

    def __contains__(self, uid: object) -> bool:
        return uid in self._given


def bind_samples(plan: Plan, samples: wire.Samples, need_targets: bool) -> Batch:
    """Bind wire samples to a plan; what does not fit is an InvalidSamplesError."""
    try:
        return engine.bind_samples(
            plan, _Decoded(samples.inputs, "inputs"), _Decoded(samples.targets, "targets"), need_targets
        )
    except engine.SamplesError as exc:
        _raise(InvalidSamplesError, exc, "samples")


def _raise(cls: type[ProblemError], exc: EngineError, where: str) -> NoReturn:
    """Raise the problem for an engine error, its locations put under the request's `where`."""
    items = [issue([where, *p.loc], p.msg) for p in exc.problems]
    if exc.detail is None:
        raise_collected(cls, items)  # the problems say it all, the first ones in the detail
    raise cls(exc.detail or str(exc), items)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Run the engine's passes under a time limit; running past it is a DeadlineExceededError."""
    try:
        with engine.time_limit(seconds):
            yield
    except engine.DeadlineExceeded as exc:
        raise DeadlineExceededError(
            f"the computation ran past the time limit timeout_s = {exc.seconds:g} s (set by "
            "GRADSERVE_TIMEOUT_S) and was stopped; ask for less work (fewer epochs, a smaller batch)"
        ) from None
