"""neat-python 2.0's activations (neat/activations.py) beyond the usual ones: each rule, its
derivative and its second derivative, for the registry in `service.engine.activations`.

Where neat computes the usual function, the entry has the usual name (elu, selu, abs, square,
cube, clamped, hat); where it scales, clamps or floors its argument, the entry is
neat_<its name>, and computes exactly neat's formula. Each derivative is exact, and the first and second are 0
wherever a clamp makes the function flat; on a clamp's edge both take the flat side, so the
second derivative follows the first's one-sided convention. The layout and the `out`
convention are the registry's: unit-major [size, batch], written into `out` when given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray


def _new(s: Array, out: Array | None) -> Array:
    return np.empty_like(s) if out is None else out


def _clamped_scaled(s: Array, scale: float, bound: float) -> tuple[Array, Array]:
    """(clamp(scale * s, -bound, bound), where the clamp is not flat), as neat-python computes
    them: the product first (it may overflow to +-inf, which the clamp brings back)."""
    with np.errstate(over="ignore"):
        t = np.multiply(s, scale)
    inside = (t > -bound) & (t < bound)
    np.clip(t, -bound, bound, out=t)
    return t, inside


def flat_outside(out: Array, inside: Array) -> Array:
    np.copyto(out, 0.0, where=~inside)
    return out


def _logistic(t: Array, out: Array | None = None) -> Array:
    """1 / (1 + e^-t) for |t| <= 60 (e^-t cannot overflow), as the registry's sigmoid computes it."""
    u = np.multiply(t, -1.0, out=out)
    np.exp(u, out=u)
    u += 1.0
    return np.reciprocal(u, out=u)


# ---------------------------------------------------------------- neat_*: scaled and clamped


def neat_sigmoid(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    t, _ = _clamped_scaled(s, 5.0, 60.0)  # 1 / (1 + e^-t), |t| <= 60: e^-t cannot overflow
    t *= -1.0
    np.exp(t, out=t)
    t += 1.0
    return np.divide(1.0, t, out=out)


def neat_sigmoid_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.multiply(z, np.subtract(1.0, z)), 5.0, out=out)
    return flat_outside(out, _clamped_scaled(s, 5.0, 60.0)[1])


def neat_sigmoid_second(s: Array, z: Array, out: Array | None = None) -> Array:
    # d/ds of 5 z (1 - z) = 5 (1 - 2 z) * 5 z (1 - z)
    out = np.multiply(np.multiply(z, np.subtract(1.0, z)), np.subtract(1.0, np.multiply(z, 2.0)), out=out)
    out *= 25.0
    return flat_outside(out, _clamped_scaled(s, 5.0, 60.0)[1])


def neat_tanh(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    return np.tanh(_clamped_scaled(s, 2.5, 60.0)[0], out=out)


def neat_tanh_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.subtract(1.0, np.multiply(z, z)), 2.5, out=out)
    return flat_outside(out, _clamped_scaled(s, 2.5, 60.0)[1])


def neat_tanh_second(s: Array, z: Array, out: Array | None = None) -> Array:
    # d/ds of 2.5 (1 - z^2) = -5 z * 2.5 (1 - z^2)
    out = np.multiply(np.subtract(1.0, np.multiply(z, z)), np.multiply(z, -12.5), out=out)
    return flat_outside(out, _clamped_scaled(s, 2.5, 60.0)[1])


def neat_sin(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    return np.sin(_clamped_scaled(s, 5.0, 60.0)[0], out=out)


def neat_sin_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    t, inside = _clamped_scaled(s, 5.0, 60.0)
    return flat_outside(np.multiply(np.cos(t), 5.0, out=out), inside)


def neat_sin_second(s: Array, z: Array, out: Array | None = None) -> Array:
    t, inside = _clamped_scaled(s, 5.0, 60.0)
    return flat_outside(np.multiply(np.sin(t), -25.0, out=out), inside)


def neat_gauss(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    t, _ = _clamped_scaled(s, 1.0, 3.4)
    return np.exp(np.multiply(np.multiply(t, t), -5.0), out=out)


def neat_gauss_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    t, inside = _clamped_scaled(s, 1.0, 3.4)
    return flat_outside(np.multiply(np.multiply(t, z), -10.0, out=out), inside)


def neat_gauss_second(s: Array, z: Array, out: Array | None = None) -> Array:
    # d/ds of -10 t z = -10 z + (-10 t)^2 z = z (100 t^2 - 10)
    t, inside = _clamped_scaled(s, 1.0, 3.4)
    out = np.multiply(np.subtract(np.multiply(np.multiply(t, t), 100.0), 10.0), z, out=out)
    return flat_outside(out, inside)


def neat_softplus(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    t, _ = _clamped_scaled(s, 5.0, 60.0)
    return np.multiply(np.log1p(np.exp(t)), 0.2, out=out)  # 0.2 log(1 + e^t)


def neat_softplus_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    t, inside = _clamped_scaled(s, 5.0, 60.0)
    return flat_outside(_logistic(t, out), inside)  # 0.2 * 5 * sigma(t)


def neat_softplus_second(s: Array, z: Array, out: Array | None = None) -> Array:
    t, inside = _clamped_scaled(s, 5.0, 60.0)
    sig = _logistic(t)  # d/ds sigma(5 s) = 5 sigma (1 - sigma)
    out = np.multiply(np.multiply(sig, np.subtract(1.0, sig)), 5.0, out=out)
    return flat_outside(out, inside)


def neat_exp(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    return np.exp(_clamped_scaled(s, 1.0, 60.0)[0], out=out)


def neat_exp_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = _new(s, out)
    np.copyto(out, z)
    return flat_outside(out, _clamped_scaled(s, 1.0, 60.0)[1])


neat_exp_second = neat_exp_derivative  # e^s is its own derivative, and flat beyond the same clamp

NEAT_LOG_FLOOR = 1e-7  # neat-python's log takes log(max(1e-7, s))


def neat_log(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    return np.log(np.maximum(s, NEAT_LOG_FLOOR), out=out)


def neat_log_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.divide(1.0, np.maximum(s, NEAT_LOG_FLOOR), out=out)
    return flat_outside(out, s > NEAT_LOG_FLOOR)


def neat_log_second(s: Array, z: Array, out: Array | None = None) -> Array:
    inv = np.divide(1.0, np.maximum(s, NEAT_LOG_FLOOR))  # -1/s^2, at most 1e14 in size
    out = np.multiply(np.multiply(inv, inv), -1.0, out=out)
    return flat_outside(out, s > NEAT_LOG_FLOOR)


def neat_inv(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    """1/s, and 0 at s = 0 (neat-python's answer to the division by zero)."""
    out = _new(s, out)
    out.fill(0.0)
    with np.errstate(over="ignore"):  # 1/s overflows to +-inf for |s| < 2^-1024, as in neat
        np.divide(1.0, s, out=out, where=s != 0)
    return out


def neat_inv_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    with np.errstate(over="ignore"):  # -1/s^2 = -z^2, 0 where inv is its constant 0
        out = np.multiply(np.multiply(z, z), -1.0, out=out)
    return flat_outside(out, s != 0)


def neat_inv_second(s: Array, z: Array, out: Array | None = None) -> Array:
    with np.errstate(over="ignore", invalid="ignore"):  # 2/s^3 = 2 z^3 (refused where it overflows)
        out = np.multiply(np.multiply(np.multiply(z, z), z), 2.0, out=out)
    return flat_outside(out, s != 0)


# ---------------------------------------------------------------- the usual functions, as neat has them


def elu(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    out = np.expm1(np.minimum(s, 0.0), out=out)  # e^s - 1 below 0 (computed only there)
    np.copyto(out, s, where=s > 0)
    return out


def elu_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.exp(np.minimum(s, 0.0), out=out)
    np.copyto(out, 1.0, where=s > 0)
    return out


def elu_second(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.exp(np.minimum(s, 0.0), out=out)  # e^s where s <= 0 (the first's side), 0 above
    np.copyto(out, 0.0, where=s > 0)
    return out


SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def selu(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    out = np.multiply(np.expm1(np.minimum(s, 0.0)), SELU_LAMBDA * SELU_ALPHA, out=out)
    with np.errstate(over="ignore"):  # lambda s overflows only where the true value does
        np.copyto(out, np.multiply(s, SELU_LAMBDA), where=s > 0)
    return out


def selu_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.exp(np.minimum(s, 0.0)), SELU_LAMBDA * SELU_ALPHA, out=out)
    np.copyto(out, SELU_LAMBDA, where=s > 0)
    return out


def selu_second(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.exp(np.minimum(s, 0.0)), SELU_LAMBDA * SELU_ALPHA, out=out)
    np.copyto(out, 0.0, where=s > 0)
    return out


def abs(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    return np.abs(s, out=out)


def sign(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.sign(s, out=out)


def square(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    with np.errstate(over="ignore"):
        return np.multiply(s, s, out=out)


def square_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    with np.errstate(over="ignore"):
        return np.multiply(s, 2.0, out=out)


def twos(s: Array, z: Array, out: Array | None = None) -> Array:
    out = _new(s, out)
    out.fill(2.0)
    return out


def cube(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    with np.errstate(over="ignore"):
        return np.power(s, 3, out=out)


def cube_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    with np.errstate(over="ignore"):
        return np.multiply(np.multiply(s, s), 3.0, out=out)


def cube_second(s: Array, z: Array, out: Array | None = None) -> Array:
    with np.errstate(over="ignore"):
        return np.multiply(s, 6.0, out=out)


def clamped(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    return np.clip(s, -1.0, 1.0, out=out)


def clamped_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.less(np.abs(s), 1.0, out=_new(s, out))


def hat(s: Array, out: Array | None = None, segments: Any = None) -> Array:
    return np.maximum(np.subtract(1.0, np.abs(s)), 0.0, out=out)  # max(0, 1 - |s|)


def hat_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    out = np.multiply(np.sign(s), -1.0, out=out)  # -sign(s) on the slopes, 0 beyond |s| = 1
    return flat_outside(out, np.abs(s) < 1.0)
