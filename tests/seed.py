"""The seed's worked cases, with their gradients in closed form (written out by hand)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def sig(s: float) -> float:
    return 1.0 / (1.0 + math.exp(-s))


def dsig(s: float) -> float:
    return sig(s) * (1.0 - sig(s))


@dataclass(frozen=True)
class Case:
    network: dict[str, Any]
    samples: dict[str, Any]
    loss: float
    weight_gradients: list[float]  # in the order of network["weights"]
    deltas: dict[str, float]
    paths: tuple[float, ...] = ()


def _w(source: str, target: str, value: float) -> dict[str, Any]:
    return {"source": source, "target": target, "value": value}


def chain(x: float = 1.5, y: float = 0.25, w_xj: float = 0.5, w_jk: float = -0.3, w_ko: float = 0.8) -> Case:
    """x -> j -> k -> o: sigmoid j and k, linear o, E = 1/2 (yhat - y)^2."""
    s_j = w_xj * x
    z_j = sig(s_j)
    s_k = w_jk * z_j
    z_k = sig(s_k)
    yhat = w_ko * z_k
    d_o = yhat - y
    d_k = dsig(s_k) * w_ko * d_o
    d_j = dsig(s_j) * w_jk * d_k
    return Case(
        network={
            "units": [{"id": "x", "role": "input"}, {"id": "j"}, {"id": "k"}, {"id": "o", "role": "output"}],
            "weights": [_w("x", "j", w_xj), _w("j", "k", w_jk), _w("k", "o", w_ko)],
        },
        samples={"inputs": {"x": [x]}, "targets": {"o": [y]}},
        loss=0.5 * (yhat - y) ** 2,
        weight_gradients=[
            (yhat - y) * w_ko * dsig(s_k) * w_jk * dsig(s_j) * x,
            (yhat - y) * w_ko * dsig(s_k) * z_j,
            (yhat - y) * z_k,
        ],
        deltas={"o": d_o, "k": d_k, "j": d_j},
    )


def two_inputs(x1: float = 0.7, x2: float = -1.2, y: float = 1.0) -> Case:
    """x1 -> j <- x2, j -> o: a unit with two inputs (sigmoid j with a bias, linear o)."""
    w1, w2, b_j, w_jo = 0.4, 0.9, 0.1, -1.3
    s_j = w1 * x1 + w2 * x2 + b_j
    yhat = w_jo * sig(s_j)
    common = (yhat - y) * w_jo * dsig(s_j)
    return Case(
        network={
            "units": [
                {"id": "x1", "role": "input"},
                {"id": "x2", "role": "input"},
                {"id": "j", "bias": b_j},
                {"id": "o", "role": "output"},
            ],
            "weights": [_w("x1", "j", w1), _w("x2", "j", w2), _w("j", "o", w_jo)],
        },
        samples={"inputs": {"x1": [x1], "x2": [x2]}, "targets": {"o": [y]}},
        loss=0.5 * (yhat - y) ** 2,
        weight_gradients=[common * x1, common * x2, (yhat - y) * sig(s_j)],
        deltas={"j": common, "o": yhat - y},
    )


def two_outputs(x: float = 0.9, y: float = -0.4) -> Case:
    """x -> j, j -> k1 -> o and j -> k2 -> o: j has two outputs, its gradient sums both paths."""
    w_xj, w_jk1, w_jk2, w_k1o, w_k2o = 0.6, 1.1, -0.7, 0.5, 1.4
    s_j = w_xj * x
    z_j = sig(s_j)
    s_k1, s_k2 = w_jk1 * z_j, w_jk2 * z_j
    yhat = w_k1o * sig(s_k1) + w_k2o * sig(s_k2)
    e = yhat - y
    path1 = e * w_k1o * dsig(s_k1) * w_jk1 * dsig(s_j) * x
    path2 = e * w_k2o * dsig(s_k2) * w_jk2 * dsig(s_j) * x
    return Case(
        network={
            "units": [
                {"id": "x", "role": "input"},
                {"id": "j"},
                {"id": "k1"},
                {"id": "k2"},
                {"id": "o", "role": "output"},
            ],
            "weights": [
                _w("x", "j", w_xj),
                _w("j", "k1", w_jk1),
                _w("j", "k2", w_jk2),
                _w("k1", "o", w_k1o),
                _w("k2", "o", w_k2o),
            ],
        },
        samples={"inputs": {"x": [x]}, "targets": {"o": [y]}},
        loss=0.5 * e**2,
        weight_gradients=[
            path1 + path2,
            e * w_k1o * dsig(s_k1) * z_j,
            e * w_k2o * dsig(s_k2) * z_j,
            e * sig(s_k1),
            e * sig(s_k2),
        ],
        deltas={"o": e, "j": dsig(s_j) * (w_jk1 * e * w_k1o * dsig(s_k1) + w_jk2 * e * w_k2o * dsig(s_k2))},
        paths=(path1, path2),
    )
