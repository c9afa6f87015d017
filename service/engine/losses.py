"""The losses: one registry entry each, giving every sample's E_n and its gradient at the
outputs.

A loss's gradient is dE_n/dz of the outputs, which backward passes through each output's
activation; or, for a loss *fused* with the activations it accepts, dE_n/ds directly, which
is both simpler and stable where z saturates (cross-entropy after sigmoid is z - y). Adding
a loss is one entry in LOSSES (and its name in the wire's LossName), plus its tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from service.engine.activations import Segments

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
    fused: bool = False
    accepts: Mapping[str, str] | None = None
    targets: tuple[float, float] | None = None
    coefficient: str = ""


def _squared(scale: float) -> tuple[Callable[[Outputs], Array], Callable[[Outputs], Array]]:
    """scale * sum (z - y)^2, and its dE/dz = 2 scale (z - y)."""

    def values(out: Outputs) -> Array:
        diff = out.z - out.y
        return scale * np.einsum("ij,ij->i", diff, diff)

    def gradient(out: Outputs) -> Array:
        return 2.0 * scale * (out.z - out.y)

    return values, gradient


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


#: every loss, in the order the wire and /v1/info list them
LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("half_squared_error", *_squared(0.5)),
        Loss("squared_error", *_squared(1.0), coefficient="2"),
        Loss(
            "cross_entropy",
            _cross_entropy,
            _cross_entropy_ds,
            fused=True,
            accepts={"sigmoid": "binary", "softmax": "categorical"},
            targets=(0.0, 1.0),
        ),
    )
}
