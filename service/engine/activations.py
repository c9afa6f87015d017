"""The activations: one registry entry each, its rule beside its derivative and its
vector-Jacobian product, and how explanations write it.

Every rule works on the value tables' layout, unit-major [size, batch], and writes into
`out` (a new array when it is None): a pass over a level then allocates nothing but its
tables. Adding an activation is one entry in ACTIVATIONS (and its name in the wire's
ActivationName), plus its tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class Segments:
    """Consecutive segments of the columns of a [batch, size] array, one per unit entry: what
    a segmented activation (softmax) normalises over."""

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


def segments(sizes: list[int]) -> Segments:
    """The segments of units of these sizes, laid side by side."""
    sizes_arr = np.asarray(sizes, dtype=np.intp)
    return Segments(starts=np.concatenate([[0], np.cumsum(sizes_arr)[:-1]]).astype(np.intp), sizes=sizes_arr)


Forward = Callable[..., Array]  # (s, out=None, segments=None) -> z = f(s)
Derivative = Callable[..., Array]  # (s, z, out=None) -> f'(s), elementwise
Vjp = Callable[[Array, Array, Array, Array, "Segments | None"], None]  # (g, s, z, out, segments)


@dataclass(frozen=True)
class Activation:
    """An activation: z = f(s), and dE/ds from g = dE/dz.

    `derivative` is f'(s) elementwise (for a segmented activation, the diagonal of its
    Jacobian, which explanations show); `vjp` writes dE/ds = J^T g into `out`, and is f'(s) g
    for an elementwise one. `text` and `latex` name f' in explanations' paths (None: f' = 1,
    left out of them); `delta_rule` says how dE/ds is made of g, with g written as `{g}`.
    """

    name: str
    forward: Forward
    derivative: Derivative
    vjp: Vjp
    text: str | None
    latex: str | None
    delta_rule: str = "f'(s) * ({g})"
    segmented: bool = False  # normalises over each unit's entries: forward and vjp need the segments


def _new(s: Array, out: Array | None) -> Array:
    return np.empty_like(s) if out is None else out


def elementwise(
    name: str, forward: Forward, derivative: Derivative, text: str | None, latex: str | None
) -> Activation:
    """An elementwise activation, whose vector-Jacobian product is f'(s) g."""

    def vjp(g: Array, s: Array, z: Array, out: Array, segments: Segments | None = None) -> None:
        derivative(s, z, out=out)
        out *= g

    return Activation(name, forward, derivative, vjp, text, latex)


# ---------------------------------------------------------------- the rules


def sigmoid(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    """The logistic function 1 / (1 + e^-s), exact for every finite s."""
    # -s as s * -1 (exact): NumPy 2.4's np.negative writes wrong numbers when both its input and
    # its `out` are strided, e.g. one column of the tables (tests/test_engine.py checks it)
    t = np.multiply(s, -1.0, out=out)
    with np.errstate(over="ignore"):  # e^-s = inf where s < -709: 1 / (1 + inf) = 0, as it should be
        np.exp(t, out=t)
    t += 1.0
    return np.reciprocal(t, out=t)


def _sigmoid_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.multiply(z, np.subtract(1.0, z, out=out), out=out)  # sigma' = z (1 - z)


def _identity(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    out = _new(s, out)
    np.copyto(out, s)
    return out


def _ones(s: Array, z: Array, out: Array | None = None) -> Array:
    out = _new(s, out)
    out.fill(1.0)
    return out


def _identity_vjp(g: Array, s: Array, z: Array, out: Array, segments: Segments | None = None) -> None:
    out[...] = g


def _tanh(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.tanh(s, out=out)


def _tanh_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.subtract(1.0, np.multiply(z, z, out=out), out=out)  # tanh' = 1 - z^2


def _relu(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.maximum(s, 0.0, out=out)


def _relu_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.greater(s, 0.0, out=_new(s, out))


def _leaky_relu(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.maximum(s, np.multiply(s, 0.01, out=out), out=out)  # max(s, 0.01 s): the slope is < 1


def _leaky_relu_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = _new(s, out)
    out.fill(0.01)
    np.copyto(out, 1.0, where=s > 0)
    return out


def _softplus(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.logaddexp(0.0, s, out=out)


def _softplus_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return sigmoid(s, out)


def softmax(s: Array, seg: Segments) -> Array:
    """Softmax within each segment of the columns of s [batch, size], from the shifted s."""
    e = np.exp(seg.shifted(s)[0])
    return e / seg.spread(seg.sum(e))


def _softmax(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    assert segments is not None
    z = softmax(s.T, segments).T  # the segments run along the columns of [batch, size]
    if out is None:
        return z
    out[...] = z
    return out


def _softmax_diagonal(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.multiply(z, np.subtract(1.0, z, out=out), out=out)  # dz_i/ds_i = z_i (1 - z_i)


def _softmax_vjp(g: Array, s: Array, z: Array, out: Array, segments: Segments | None = None) -> None:
    assert segments is not None
    zt, gt = z.T, g.T  # dE/ds_i = z_i (g_i - sum_k g_k z_k), within each segment
    out.T[...] = zt * (gt - segments.spread(segments.sum(gt * zt)))


#: every activation, in the order the wire and /v1/info list them
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _identity, _ones, _identity_vjp, None, None),
        elementwise("sigmoid", sigmoid, _sigmoid_derivative, "sigmoid'", r"\sigma'"),
        elementwise("tanh", _tanh, _tanh_derivative, "tanh'", r"\tanh'"),
        elementwise("relu", _relu, _relu_derivative, "relu'", r"\mathrm{relu}'"),
        elementwise("leaky_relu", _leaky_relu, _leaky_relu_derivative, "leaky_relu'", r"\mathrm{lrelu}'"),
        elementwise("softplus", _softplus, _softplus_derivative, "softplus'", r"\mathrm{softplus}'"),
        Activation(
            "softmax",
            _softmax,
            _softmax_diagonal,
            _softmax_vjp,
            "softmax'",
            r"\mathrm{softmax}'",
            delta_rule="z * (g - sum(g * z)) with g = {g}",
            segmented=True,
        ),
    )
}

#: the activations computed entry by entry
ELEMENTWISE: dict[str, Activation] = {name: a for name, a in ACTIVATIONS.items() if not a.segmented}


def derivative(activation: str, s: Array, z: Array) -> Array:
    """f'(s) elementwise; for a segmented activation, the diagonal of its Jacobian."""
    return ACTIVATIONS[activation].derivative(s, z)
