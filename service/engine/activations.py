"""The activations: one registry entry each, its rule beside its derivative and its
vector-Jacobian product, and how explanations write it.

Every rule works on the value tables' layout, unit-major [size, batch], and writes into
`out` (a new array when it is None): a pass over a level then allocates nothing but its
tables. Adding an activation is one entry in ACTIVATIONS (and its name in the wire's
ActivationName), plus its tests.
"""

from __future__ import annotations

import functools
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


#: leaky_relu's slope for s <= 0 when a unit gives none
DEFAULT_SLOPE = 0.01


@functools.lru_cache(maxsize=256)
def leaky_relu(slope: float = DEFAULT_SLOPE) -> Activation:
    """leaky_relu with this slope for s <= 0 (ONNX's LeakyRelu alpha; neat-python's lelu is 0.005)."""

    def forward(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
        with np.errstate(over="ignore"):  # a slope > 1 can overflow where the true value does
            out = np.multiply(s, slope, out=out)
        np.copyto(out, s, where=s > 0)
        return out

    def derivative(s: Array, z: Array, out: Array | None = None) -> Array:
        out = _new(s, out)
        out.fill(slope)
        np.copyto(out, 1.0, where=s > 0)
        return out

    return elementwise("leaky_relu", forward, derivative, "leaky_relu'", r"\mathrm{lrelu}'")


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


# ---------------------------------------------------------------- neat-python's activations
# Where neat-python 2.0 (neat/activations.py) computes the usual function, the usual name is
# used (elu, selu, abs, square, cube, clamped, hat); where it scales or clamps its argument,
# the entry is neat_<its name> and computes exactly neat's formula. Each derivative is exact,
# and 0 wherever a clamp makes the function flat.


def _clamped_scaled(s: Array, scale: float, bound: float) -> tuple[Array, Array]:
    """(clamp(scale * s, -bound, bound), where the clamp is not flat), as neat-python computes
    them: the product first (it may overflow to +-inf, which the clamp brings back)."""
    with np.errstate(over="ignore"):
        t = np.multiply(s, scale)
    inside = (t > -bound) & (t < bound)
    np.clip(t, -bound, bound, out=t)
    return t, inside


def _flat_outside(out: Array, inside: Array) -> Array:
    np.copyto(out, 0.0, where=~inside)
    return out


def _neat_sigmoid(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    t, _ = _clamped_scaled(s, 5.0, 60.0)  # 1 / (1 + e^-t), |t| <= 60: e^-t cannot overflow
    t *= -1.0
    np.exp(t, out=t)
    t += 1.0
    return np.divide(1.0, t, out=out)


def _neat_sigmoid_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.multiply(z, np.subtract(1.0, z)), 5.0, out=out)
    return _flat_outside(out, _clamped_scaled(s, 5.0, 60.0)[1])


def _neat_tanh(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.tanh(_clamped_scaled(s, 2.5, 60.0)[0], out=out)


def _neat_tanh_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.subtract(1.0, np.multiply(z, z)), 2.5, out=out)
    return _flat_outside(out, _clamped_scaled(s, 2.5, 60.0)[1])


def _neat_sin(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.sin(_clamped_scaled(s, 5.0, 60.0)[0], out=out)


def _neat_sin_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    t, inside = _clamped_scaled(s, 5.0, 60.0)
    return _flat_outside(np.multiply(np.cos(t), 5.0, out=out), inside)


def _neat_gauss(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    t, _ = _clamped_scaled(s, 1.0, 3.4)
    return np.exp(np.multiply(np.multiply(t, t), -5.0), out=out)


def _neat_gauss_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    t, inside = _clamped_scaled(s, 1.0, 3.4)
    return _flat_outside(np.multiply(np.multiply(t, z), -10.0, out=out), inside)


def _neat_softplus(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    t, _ = _clamped_scaled(s, 5.0, 60.0)
    return np.multiply(np.log1p(np.exp(t)), 0.2, out=out)  # 0.2 log(1 + e^t)


def _neat_softplus_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    t, inside = _clamped_scaled(s, 5.0, 60.0)
    return _flat_outside(sigmoid(t, out), inside)  # 0.2 * 5 * sigma(t)


def _neat_exp(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.exp(_clamped_scaled(s, 1.0, 60.0)[0], out=out)


def _neat_exp_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = _new(s, out)
    np.copyto(out, z)
    return _flat_outside(out, _clamped_scaled(s, 1.0, 60.0)[1])


NEAT_LOG_FLOOR = 1e-7  # neat-python's log takes log(max(1e-7, s))


def _neat_log(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.log(np.maximum(s, NEAT_LOG_FLOOR), out=out)


def _neat_log_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.divide(1.0, np.maximum(s, NEAT_LOG_FLOOR), out=out)
    return _flat_outside(out, s > NEAT_LOG_FLOOR)


def _neat_inv(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    """1/s, and 0 at s = 0 (neat-python's answer to the division by zero)."""
    out = _new(s, out)
    out.fill(0.0)
    with np.errstate(over="ignore"):  # 1/s overflows to +-inf for |s| < 2^-1024, as in neat
        np.divide(1.0, s, out=out, where=s != 0)
    return out


def _neat_inv_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    with np.errstate(over="ignore"):  # -1/s^2 = -z^2, 0 where inv is its constant 0
        out = np.multiply(np.multiply(z, z), -1.0, out=out)
    return _flat_outside(out, s != 0)


def _elu(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    out = np.expm1(np.minimum(s, 0.0), out=out)  # e^s - 1 below 0 (computed only there)
    np.copyto(out, s, where=s > 0)
    return out


def _elu_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.exp(np.minimum(s, 0.0), out=out)
    np.copyto(out, 1.0, where=s > 0)
    return out


SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def _selu(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    out = np.multiply(np.expm1(np.minimum(s, 0.0)), SELU_LAMBDA * SELU_ALPHA, out=out)
    with np.errstate(over="ignore"):  # lambda s overflows only where the true value does
        np.copyto(out, np.multiply(s, SELU_LAMBDA), where=s > 0)
    return out


def _selu_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.exp(np.minimum(s, 0.0)), SELU_LAMBDA * SELU_ALPHA, out=out)
    np.copyto(out, SELU_LAMBDA, where=s > 0)
    return out


def _abs(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.abs(s, out=out)


def _sign(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.sign(s, out=out)


def _square(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    with np.errstate(over="ignore"):
        return np.multiply(s, s, out=out)


def _square_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    with np.errstate(over="ignore"):
        return np.multiply(s, 2.0, out=out)


def _cube(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    with np.errstate(over="ignore"):
        return np.power(s, 3, out=out)


def _cube_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    with np.errstate(over="ignore"):
        return np.multiply(np.multiply(s, s), 3.0, out=out)


def _clamped(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.clip(s, -1.0, 1.0, out=out)


def _clamped_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.less(np.abs(s), 1.0, out=_new(s, out))


def _hat(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.maximum(np.subtract(1.0, np.abs(s)), 0.0, out=out)  # max(0, 1 - |s|)


def _hat_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.sign(s), -1.0, out=out)  # -sign(s) on the slopes, 0 beyond |s| = 1
    return _flat_outside(out, np.abs(s) < 1.0)


#: every activation, in the order the wire and /v1/info list them
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("identity", _identity, _ones, _identity_vjp, None, None),
        elementwise("sigmoid", sigmoid, _sigmoid_derivative, "sigmoid'", r"\sigma'"),
        elementwise("tanh", _tanh, _tanh_derivative, "tanh'", r"\tanh'"),
        elementwise("relu", _relu, _relu_derivative, "relu'", r"\mathrm{relu}'"),
        leaky_relu(),
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
        elementwise("elu", _elu, _elu_derivative, "elu'", r"\mathrm{elu}'"),
        elementwise("selu", _selu, _selu_derivative, "selu'", r"\mathrm{selu}'"),
        elementwise("abs", _abs, _sign, "sign", r"\operatorname{sign}"),
        elementwise("square", _square, _square_derivative, "2 s", "2 s"),
        elementwise("cube", _cube, _cube_derivative, "3 s^2", "3 s^2"),
        elementwise("clamped", _clamped, _clamped_derivative, "clamped'", r"\mathrm{clamped}'"),
        elementwise("hat", _hat, _hat_derivative, "hat'", r"\mathrm{hat}'"),
        elementwise("neat_sigmoid", _neat_sigmoid, _neat_sigmoid_derivative, "neat_sigmoid'", r"\sigma_5'"),
        elementwise("neat_tanh", _neat_tanh, _neat_tanh_derivative, "neat_tanh'", r"\tanh_{2.5}'"),
        elementwise(
            "neat_softplus",
            _neat_softplus,
            _neat_softplus_derivative,
            "neat_softplus'",
            r"\mathrm{softplus}_5'",
        ),
        elementwise("neat_sin", _neat_sin, _neat_sin_derivative, "neat_sin'", r"\sin_5'"),
        elementwise("neat_gauss", _neat_gauss, _neat_gauss_derivative, "neat_gauss'", r"\mathrm{gauss}'"),
        elementwise("neat_exp", _neat_exp, _neat_exp_derivative, "neat_exp'", r"\exp_{60}'"),
        elementwise("neat_log", _neat_log, _neat_log_derivative, "neat_log'", r"\log_{10^{-7}}'"),
        elementwise("neat_inv", _neat_inv, _neat_inv_derivative, "neat_inv'", r"\mathrm{inv}'"),
    )
}

#: the activations computed entry by entry
ELEMENTWISE: dict[str, Activation] = {name: a for name, a in ACTIVATIONS.items() if not a.segmented}


def resolve(name: str, slope: float | None = None) -> Activation:
    """A unit's activation: the registry's entry, or leaky_relu with the unit's own slope."""
    if slope is None or name != "leaky_relu":
        return ACTIVATIONS[name]
    return leaky_relu(slope)


def derivative(activation: str, s: Array, z: Array, slope: float | None = None) -> Array:
    """f'(s) elementwise; for a segmented activation, the diagonal of its Jacobian."""
    return resolve(activation, slope).derivative(s, z)
