"""The losses: one registry entry each, giving every sample's E_n, its gradient at the outputs,
and that gradient's derivative along a direction (for Hessian-vector products).

A loss's gradient is dE_n/dz of the outputs, which backward passes through each output's
activation; or, for a loss *fused* with the activations it accepts, dE_n/ds directly, which
is both simpler and stable where z saturates (cross-entropy after sigmoid is z - y). Adding
a loss is one entry in LOSSES, with its cost (`output_ns`), and its name in the wire's LossName;
everything else reads the registry (tests/test_registries.py shows it).

Every E_n is the sum of per-element terms over all the outputs' entries (so each loss's
Hessian with respect to z is diagonal, but a fused loss's with respect to s need not be).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from service.engine.segments import Segments

Array = np.ndarray


class Outputs:
    """A batch's output units side by side, [batch, outputs], elementwise activations first and
    then the segmented ones (each segment one unit); s and z are taken from the tables on use."""

    def __init__(
        self, s: Array, z: Array, cols: Array, y: Array, split: int, segments: Segments | None
    ) -> None:
        self._s, self._z, self._cols = s, z, cols
        self.y = y
        self.split = split  # the first `split` columns are elementwise outputs
        self.segments = segments  # of the columns from `split` on

    @functools.cached_property
    def s(self) -> Array:
        return self._s[self._cols].T

    @functools.cached_property
    def z(self) -> Array:
        return self._z[self._cols].T


@dataclass(frozen=True)
class Loss:
    """A loss: E_n per sample, [batch], and its gradient, [batch, outputs].

    `accepts` maps each output activation the loss takes to what it then models (None: any);
    `targets` is the range every target must lie in; explanations write the loss's term at an
    output as `coefficient` followed by (yhat - y).
    """

    name: str
    values: Callable[[Outputs], Array]
    gradient: Callable[[Outputs], Array]  # dE_n/dz, or dE_n/ds when fused
    #: (outputs, r) -> the derivative of `gradient` along r, a direction of z (of s when fused),
    #: [batch, outputs]: the Hessian of E_n times r
    curvature: Callable[[Outputs, Array], Array]
    fused: bool = False
    accepts: Mapping[str, str] | None = None
    targets: tuple[float, float] | None = None
    coefficient: str = ""
    #: how explanations name dE/dz at output {o} where it is not `coefficient` (yhat - y): its
    #: text and LaTeX
    term: tuple[str, str] | None = None
    #: its cost, per output entry (counted with its size) and sample, in ns on one core: E_n's
    #: term and its gradient; what the cost model (service.pipeline.costs) counts, calibrated
    #: with `python -m bench.calibrate`
    output_ns: float = field(kw_only=True)


Rule = Callable[[Outputs], Array]
Curvature = Callable[[Outputs, Array], Array]


def _squared(scale: float) -> tuple[Rule, Rule, Curvature]:
    """scale * sum (z - y)^2, its dE/dz = 2 scale (z - y), and its Hessian 2 scale I."""

    def values(out: Outputs) -> Array:
        diff = out.z - out.y
        return scale * np.einsum("ij,ij->i", diff, diff)

    def gradient(out: Outputs) -> Array:
        return 2.0 * scale * (out.z - out.y)

    def curvature(out: Outputs, r: Array) -> Array:
        return 2.0 * scale * r

    return values, gradient, curvature


def _cross_entropy(out: Outputs) -> Array:
    s, y, k = out.s, out.y, out.split
    # binary: -y log(sigmoid s) - (1 - y) log(1 - sigmoid s) = softplus(s) - y s
    losses = (np.logaddexp(0.0, s[:, :k]) - y[:, :k] * s[:, :k]).sum(axis=1)
    if out.segments is not None:
        seg, ys, ss = out.segments, y[:, k:], s[:, k:]
        # categorical: -sum y log softmax(s) = sum(y) logsumexp(s) - sum y s, per output
        losses += (seg.sum(ys) * seg.logsumexp(ss)).sum(axis=1) - np.einsum("ij,ij->i", ys, ss)
    return losses


def _cross_entropy_ds(out: Outputs) -> Array:
    """dE/ds: z - y after sigmoid; sum(y) z - y after softmax (targets need not sum to one)."""
    z, y = out.z, out.y
    ds = z - y
    if out.segments is not None:
        k, seg = out.split, out.segments
        ds[:, k:] = seg.spread(seg.sum(y[:, k:])) * z[:, k:] - y[:, k:]
    return ds


def _cross_entropy_curvature(out: Outputs, r: Array) -> Array:
    """The derivative of dE/ds along r (a direction of s): z (1 - z) r after sigmoid, and
    sum(y) times softmax's Jacobian times r after softmax."""
    z, k = out.z, out.split
    with np.errstate(over="ignore", invalid="ignore"):  # refused by name where not finite
        rds = z * (1.0 - z) * r
        if out.segments is not None:
            seg, zs, rs = out.segments, z[:, k:], r[:, k:]
            jr = zs * (rs - seg.spread(seg.sum(rs * zs)))
            rds[:, k:] = seg.spread(seg.sum(out.y[:, k:])) * jr
    return rds


#: torch's BCELoss clamps each log at this, so that E_n stays finite where z reaches 0 or 1
BCE_LOG_FLOOR = -100.0


def _bce_logs(z: Array) -> tuple[Array, Array, Array, Array]:
    """(log z, log(1 - z), each clamped at -100, and where each is not clamped), as torch's
    BCELoss computes them (log1p(-z) for the second); the derivatives are those of the clamped
    logs: 0 where clamped (torch's clamp passes the gradient where log >= -100)."""
    with np.errstate(divide="ignore"):  # log 0 = -inf, clamped
        log_z, log_1mz = np.log(z), np.log1p(-z)
    live_z, live_1mz = log_z >= BCE_LOG_FLOOR, log_1mz >= BCE_LOG_FLOOR
    return np.maximum(log_z, BCE_LOG_FLOOR), np.maximum(log_1mz, BCE_LOG_FLOOR), live_z, live_1mz


def _bce(out: Outputs) -> Array:
    """-y log z - (1 - y) log(1 - z) per element, its logs clamped at -100, summed per sample."""
    log_z, log_1mz, _, _ = _bce_logs(out.z)
    return ((out.y - 1.0) * log_1mz - out.y * log_z).sum(axis=1)


def _bce_gradient(out: Outputs) -> Array:
    """-y / z + (1 - y) / (1 - z), each term 0 where its log is clamped."""
    z, y = out.z, out.y
    _, _, live_z, live_1mz = _bce_logs(z)
    grad = np.zeros_like(z)
    np.divide(-y, z, out=grad, where=live_z)
    grad += np.divide(1.0 - y, 1.0 - z, out=np.zeros_like(z), where=live_1mz)
    return grad


def _bce_curvature(out: Outputs, r: Array) -> Array:
    """(y / z^2 + (1 - y) / (1 - z)^2) r, each term 0 where its log is clamped (z^2 >= e^-200:
    neither overflows)."""
    z, y = out.z, out.y
    _, _, live_z, live_1mz = _bce_logs(z)
    h = np.zeros_like(z)
    np.divide(y, z * z, out=h, where=live_z)
    h += np.divide(1.0 - y, (1.0 - z) ** 2, out=np.zeros_like(z), where=live_1mz)
    with np.errstate(over="ignore", invalid="ignore"):
        return h * r


_DE_DZ = ("dE/dyhat_{o}", r"\frac{\partial E}{\partial \hat{y}_{o}}")


@functools.lru_cache(maxsize=64)
def huber(delta: float = 1.0) -> Loss:
    """torch's HuberLoss per element: (z - y)^2 / 2 where |z - y| < delta, else
    delta (|z - y| - delta / 2); its derivative z - y clipped to [-delta, delta], and its second
    derivative 1 where |z - y| <= delta (the side the first takes at the seam, as torch's), else 0."""

    def values(out: Outputs) -> Array:
        diff = out.z - out.y
        size = np.abs(diff)
        return np.where(size < delta, 0.5 * diff * diff, delta * (size - 0.5 * delta)).sum(axis=1)

    def gradient(out: Outputs) -> Array:
        return np.clip(out.z - out.y, -delta, delta)

    def curvature(out: Outputs, r: Array) -> Array:
        return np.where(np.abs(out.z - out.y) <= delta, r, 0.0)

    return Loss("huber", values, gradient, curvature, term=_DE_DZ, output_ns=5.0)


#: huber's delta when a network gives none (torch's HuberLoss default)
DEFAULT_HUBER_DELTA = 1.0


def resolve(name: str, huber_delta: float | None = None) -> Loss:
    """A network's loss: the registry's entry, or huber with the network's own delta."""
    if huber_delta is None or name != "huber":
        return LOSSES[name]
    return huber(huber_delta)


#: every loss, in the order the wire and /v1/info list them
LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("half_squared_error", *_squared(0.5), output_ns=5.0),
        Loss("squared_error", *_squared(1.0), coefficient="2", output_ns=5.0),
        Loss(
            "cross_entropy",
            _cross_entropy,
            _cross_entropy_ds,
            _cross_entropy_curvature,
            fused=True,
            accepts={"sigmoid": "binary", "softmax": "categorical"},
            targets=(0.0, 1.0),
            output_ns=5.0,
        ),
        Loss(
            "binary_cross_entropy",
            _bce,
            _bce_gradient,
            _bce_curvature,
            accepts={"sigmoid": "binary", "neat_sigmoid": "binary"},
            targets=(0.0, 1.0),
            term=_DE_DZ,
            output_ns=5.0,
        ),
        huber(DEFAULT_HUBER_DELTA),
    )
}
