"""The activations: one registry entry each, its rule beside its first and second
derivatives, its vector-Jacobian product and that product's own derivative (for Hessian-vector
products), and how explanations write it.

Every rule works on the value tables' layout, unit-major [size, batch], and writes into
`out` (a new array when it is None): a pass over a level then allocates nothing but its
tables. Adding an activation is one entry in ACTIVATIONS, with its costs (`forward_ns`,
`backward_ns`), and its name in the wire's ActivationName; everything else reads the registry
(tests/test_registries.py shows it). neat-python's scaled and clamped rules are in
`service.engine.neat_rules`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.engine import neat_rules as neat
from service.engine.segments import Segments

Array = np.ndarray


Forward = Callable[..., Array]  # (s, out=None, segments=None) -> z = f(s)
Derivative = Callable[..., Array]  # (s, z, out=None) -> f'(s), elementwise
Vjp = Callable[[Array, Array, Array, Array, "Segments | None"], None]  # (g, s, z, out, segments)
#: (g, s, z, r, out, segments): d/dt of J(s + t r)^T g at t = 0, into out
Curvature = Callable[[Array, Array, Array, Array, Array, "Segments | None"], None]


@dataclass(frozen=True)
class Activation:
    """An activation: z = f(s), and dE/ds from g = dE/dz.

    `derivative` is f'(s) elementwise (for a segmented activation, the diagonal of its
    Jacobian, which explanations show); `vjp` writes dE/ds = J^T g into `out`, and is f'(s) g
    for an elementwise one. `text` and `latex` name f' in explanations' paths (None: f' = 1,
    left out of them); `delta_rule` says how dE/ds is made of g, with g written as `{g}`.

    For second order (Pearlmutter's R-operator, service.engine.curvature): `second_derivative`
    is f''(s) elementwise (a segmented one's: d^2 z_i / ds_i^2), and `curvature` the derivative
    of the vjp along a direction r of s with g held fixed, f''(s) r g for an elementwise one.
    Every Jacobian here is symmetric (diagonal, or softmax's diag(z) - z z^T), so `vjp` is also
    the Jacobian-vector product R{z} = J R{s}. An entry without them (None) computes forward
    and backward; /v1/hvp then refuses a network that uses it, naming it.
    """

    name: str
    forward: Forward
    derivative: Derivative
    vjp: Vjp
    text: str | None
    latex: str | None
    delta_rule: str = "f'(s) * ({g})"
    segmented: bool = False  # normalises over each unit's entries: forward and vjp need the segments
    second_derivative: Derivative | None = None
    curvature: Curvature | None = None
    #: its cost, per unit entry (counted with its size) and sample, in ns on one core: of a
    #: forward pass (s, then z = f(s)) and of a backward pass (delta from dE/dz); what the cost
    #: model (service.pipeline.costs) counts, calibrated with `python -m bench.calibrate`
    forward_ns: float = field(kw_only=True)
    backward_ns: float = field(kw_only=True)


def _new(s: Array, out: Array | None) -> Array:
    return np.empty_like(s) if out is None else out


def elementwise(
    name: str,
    forward: Forward,
    derivative: Derivative,
    text: str | None,
    latex: str | None,
    second_derivative: Derivative | None = None,
    *,
    ns: tuple[float, float],
) -> Activation:
    """An elementwise activation, whose vector-Jacobian product is f'(s) g, and whose product's
    derivative along r is f''(s) r g (when its second derivative is given); `ns` is its costs,
    (`forward_ns`, `backward_ns`) (`Activation`'s)."""

    def vjp(g: Array, s: Array, z: Array, out: Array, segments: Segments | None = None) -> None:
        derivative(s, z, out=out)
        out *= g

    curvature: Curvature | None = None
    if second_derivative is not None:
        second = second_derivative

        def curvature(
            g: Array, s: Array, z: Array, r: Array, out: Array, segments: Segments | None = None
        ) -> None:
            second(s, z, out=out)
            with np.errstate(over="ignore", invalid="ignore"):  # refused by name where not finite
                out *= r
                out *= g

    return Activation(
        name,
        forward,
        derivative,
        vjp,
        text,
        latex,
        second_derivative=second_derivative,
        curvature=curvature,
        forward_ns=ns[0],
        backward_ns=ns[1],
    )


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


def _sigmoid_second(s: Array, z: Array, out: Array | None = None) -> Array:
    # d/ds z (1 - z) = (1 - 2 z) z (1 - z)
    return np.multiply(np.multiply(z, np.subtract(1.0, z)), np.subtract(1.0, np.multiply(z, 2.0)), out=out)


def _zeros(s: Array, z: Array, out: Array | None = None) -> Array:
    """The second derivative of a piecewise-linear rule: 0 (a.e.; at a kink too, one-sided)."""
    out = _new(s, out)
    out.fill(0.0)
    return out


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


def _no_curvature(
    g: Array, s: Array, z: Array, r: Array, out: Array, segments: Segments | None = None
) -> None:
    out.fill(0.0)


def _tanh(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.tanh(s, out=out)


def _tanh_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.subtract(1.0, np.multiply(z, z, out=out), out=out)  # tanh' = 1 - z^2


def _tanh_second(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.multiply(np.subtract(1.0, np.multiply(z, z)), np.multiply(z, -2.0), out=out)  # -2 z (1 - z^2)


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

    return elementwise(
        "leaky_relu", forward, derivative, "leaky_relu'", r"\mathrm{lrelu}'", _zeros, ns=(8.0, 9.0)
    )


def _softplus(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.logaddexp(0.0, s, out=out)


def _softplus_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return sigmoid(s, out)


def _softplus_second(s: Array, z: Array, out: Array | None = None) -> Array:
    sig = sigmoid(s)
    return np.multiply(sig, np.subtract(1.0, sig), out=out)  # sigma (1 - sigma)


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


def _softmax_second(s: Array, z: Array, out: Array | None = None) -> Array:
    # d^2 z_i / ds_i^2 = z_i (1 - z_i) (1 - 2 z_i), the diagonal (as `derivative` is)
    return _sigmoid_second(s, z, out)


def _softmax_curvature(
    g: Array, s: Array, z: Array, r: Array, out: Array, segments: Segments | None = None
) -> None:
    """d/dt of z_i (g_i - <g, z>) along s + t r: with z' = z (r - <r, z>) (the Jacobian times r),
    z'_i (g_i - <g, z>) - z_i <g, z'>, within each segment."""
    assert segments is not None
    zt, gt, rt = z.T, g.T, r.T
    spread, total = segments.spread, segments.sum
    dz = zt * (rt - spread(total(rt * zt)))
    out.T[...] = dz * (gt - spread(total(gt * zt))) - zt * spread(total(gt * dz))


#: every activation, in the order the wire and /v1/info list them
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation(
            "identity",
            _identity,
            _ones,
            _identity_vjp,
            None,
            None,
            second_derivative=_zeros,
            curvature=_no_curvature,
            forward_ns=5.0,
            backward_ns=2.0,
        ),
        elementwise(
            "sigmoid", sigmoid, _sigmoid_derivative, "sigmoid'", r"\sigma'", _sigmoid_second, ns=(14.0, 5.0)
        ),
        elementwise("tanh", _tanh, _tanh_derivative, "tanh'", r"\tanh'", _tanh_second, ns=(21.0, 4.0)),
        elementwise("relu", _relu, _relu_derivative, "relu'", r"\mathrm{relu}'", _zeros, ns=(6.0, 4.0)),
        leaky_relu(),
        elementwise(
            "softplus",
            _softplus,
            _softplus_derivative,
            "softplus'",
            r"\mathrm{softplus}'",
            _softplus_second,
            ns=(30.0, 14.0),
        ),
        Activation(
            "softmax",
            _softmax,
            _softmax_diagonal,
            _softmax_vjp,
            "softmax'",
            r"\mathrm{softmax}'",
            delta_rule="z * (g - sum(g * z)) with g = {g}",
            segmented=True,
            second_derivative=_softmax_second,
            curvature=_softmax_curvature,
            forward_ns=25.0,
            backward_ns=22.0,
        ),
        elementwise(
            "elu", neat.elu, neat.elu_derivative, "elu'", r"\mathrm{elu}'", neat.elu_second, ns=(30.0, 25.0)
        ),
        elementwise(
            "selu",
            neat.selu,
            neat.selu_derivative,
            "selu'",
            r"\mathrm{selu}'",
            neat.selu_second,
            ns=(32.0, 27.0),
        ),
        elementwise("abs", neat.abs, neat.sign, "sign", r"\operatorname{sign}", _zeros, ns=(6.0, 6.0)),
        elementwise("square", neat.square, neat.square_derivative, "2 s", "2 s", neat.twos, ns=(6.0, 5.0)),
        elementwise(
            "cube", neat.cube, neat.cube_derivative, "3 s^2", "3 s^2", neat.cube_second, ns=(20.0, 8.0)
        ),
        elementwise(
            "clamped",
            neat.clamped,
            neat.clamped_derivative,
            "clamped'",
            r"\mathrm{clamped}'",
            _zeros,
            ns=(8.0, 8.0),
        ),
        elementwise("hat", neat.hat, neat.hat_derivative, "hat'", r"\mathrm{hat}'", _zeros, ns=(10.0, 14.0)),
        elementwise(
            "neat_sigmoid",
            neat.neat_sigmoid,
            neat.neat_sigmoid_derivative,
            "neat_sigmoid'",
            r"\sigma_5'",
            neat.neat_sigmoid_second,
            ns=(25.0, 20.0),
        ),
        elementwise(
            "neat_tanh",
            neat.neat_tanh,
            neat.neat_tanh_derivative,
            "neat_tanh'",
            r"\tanh_{2.5}'",
            neat.neat_tanh_second,
            ns=(30.0, 20.0),
        ),
        elementwise(
            "neat_softplus",
            neat.neat_softplus,
            neat.neat_softplus_derivative,
            "neat_softplus'",
            r"\mathrm{softplus}_5'",
            neat.neat_softplus_second,
            ns=(45.0, 45.0),
        ),
        elementwise(
            "neat_sin",
            neat.neat_sin,
            neat.neat_sin_derivative,
            "neat_sin'",
            r"\sin_5'",
            neat.neat_sin_second,
            ns=(30.0, 30.0),
        ),
        elementwise(
            "neat_gauss",
            neat.neat_gauss,
            neat.neat_gauss_derivative,
            "neat_gauss'",
            r"\mathrm{gauss}'",
            neat.neat_gauss_second,
            ns=(30.0, 20.0),
        ),
        elementwise(
            "neat_exp",
            neat.neat_exp,
            neat.neat_exp_derivative,
            "neat_exp'",
            r"\exp_{60}'",
            neat.neat_exp_second,
            ns=(25.0, 15.0),
        ),
        elementwise(
            "neat_log",
            neat.neat_log,
            neat.neat_log_derivative,
            "neat_log'",
            r"\log_{10^{-7}}'",
            neat.neat_log_second,
            ns=(25.0, 20.0),
        ),
        elementwise(
            "neat_inv",
            neat.neat_inv,
            neat.neat_inv_derivative,
            "neat_inv'",
            r"\mathrm{inv}'",
            neat.neat_inv_second,
            ns=(12.0, 12.0),
        ),
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
