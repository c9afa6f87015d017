"""A network's parameter values read for theta: each checked against the shape its structure
gives it (a problem located in the network when it does not fit), and copied once, into theta
(`parameters`). Compiling reads them so (service.engine.compile), and so does a structure's
kept plan taking a new network's values (service.engine.reuse): one reading for both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.engine.errors import Problem, enough
from service.engine.network import Network, Unit, Value, WeightColumns
from service.engine.plan import UnitInfo

Array = np.ndarray


def _per_entry(i: int, u: Unit, name: str, value: Value | None, problems: list[Problem]) -> Array | None:
    """A unit's bias or response as an array [size] (a number for a single unit), or None."""
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0 and u.size == 1:
        array = array.reshape(1)
    if array.shape != (u.size,):
        problems.append(
            Problem(
                ("units", i, name), f"{name} of {u.id!r} has shape {list(array.shape)}, expected [{u.size}]"
            )
        )
    return array


def weight_value(
    net: Network, k: int, value: Value, rows: int, cols: int, problems: list[Problem]
) -> Array | None:
    """Weight k's value as a [rows, cols] array, or None (and a problem) if it is not that shape."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0 and rows == cols == 1:
        array = array.reshape(1, 1)
    if array.shape != (rows, cols):
        a, b = net.weights.source[k], net.weights.target[k]
        problems.append(
            Problem(
                ("weights", k, "value"),
                f"weight {a}->{b} has shape {list(array.shape)}, expected [{rows}, {cols}] "
                f"([{a}.size, {b}.size])",
            )
        )
        return None
    return array


def weight_values(
    net: Network, rows: Sequence[int], cols: Sequence[int], problems: list[Problem]
) -> tuple[Array, ...] | None:
    """The weights' values as theta takes them (`parameters`), weight k of shape [rows[k],
    cols[k]]: one array for weights given as columns or as single units' numbers, else one a
    weight. None when there is a problem (a value that does not fit its shape is reported)."""
    given = net.weights
    if isinstance(given, WeightColumns):
        values = np.asarray(given.value, dtype=np.float64)
        if values.shape == (len(rows),):
            return (values,)
        problems.append(
            Problem(
                ("weights", "value"),
                f"weights.value has shape {list(values.shape)}, expected [{len(rows)}]: "
                "one number per weight",
            )
        )
        return None
    raw = given.value
    if rows.count(1) == len(rows) == cols.count(1) and set(map(type, raw)) <= {float}:
        return (np.array(raw, dtype=np.float64),)  # single units: one call
    parts = []
    for k, (value, m, n) in enumerate(zip(raw, rows, cols, strict=True)):
        if enough(problems):
            return None
        parts.append(weight_value(net, k, value, m, n, problems))
    return None if problems else tuple(p for p in parts if p is not None)


def unit_values(
    units: Sequence[Unit], problems: list[Problem]
) -> tuple[list[Array | None], list[Array | None]]:
    """Each unit's bias and response as theta takes them (`parameters`), or None where it gives none."""
    biases = [_per_entry(i, u, "bias", u.bias, problems) for i, u in enumerate(units)]
    responses = [_per_entry(i, u, "response", u.response, problems) for i, u in enumerate(units)]
    return biases, responses


def parameters(
    info: Sequence[UnitInfo],
    weights: Sequence[Array],
    biases: Sequence[Array | None],
    responses: Sequence[Array | None],
    n_cols: int,
    n_response_params: int,
) -> Array:
    """theta: every weight's elements (`weights`: arrays whose elements, row-major, follow one
    another), a bias per column (0 where none is given), then a response per column when the
    network gives any (1 where none is given); `info`, `biases` and `responses` in the listed
    order of the units. Each value is copied once, into theta: nothing is joined on the way."""
    n_weight_params = sum(w.size for w in weights)
    theta = np.zeros(n_weight_params + n_cols + n_response_params)
    if weights:
        np.concatenate([w.reshape(-1) for w in weights], out=theta[:n_weight_params])
    theta[n_weight_params + n_cols :] = 1.0
    for unit, bias, response in zip(info, biases, responses, strict=True):
        if bias is not None:
            theta[n_weight_params + unit.cols.start : n_weight_params + unit.cols.stop] = bias
        if response is not None:
            start = n_weight_params + n_cols
            theta[start + unit.cols.start : start + unit.cols.stop] = response
    return theta
