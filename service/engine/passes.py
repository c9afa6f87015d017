"""The passes over a plan: forward, backward, the gradient and the per-sample gradient.

Forward fills a level at a time. Backward walks the levels in reverse: each level's groups turn
g = dE/dz into delta = dE/ds through their activation's vector-Jacobian product, and each
block sends W delta back, *accumulated* into the g of every unit feeding it (a unit with many
successors sums what each sends back). Every parameter lives in one flat vector theta, so the
gradients are plain vector arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.engine.deadline import checkpoint
from service.engine.losses import Outputs
from service.engine.plan import Plan, UnitInfo
from service.engine.samples import Batch

Array = np.ndarray


@dataclass(frozen=True)
class Values:
    """A batch's inputs x [batch, n_inputs], and every other unit's s and z *unit-major*,
    [n_cols, batch]: a level's columns are then contiguous rows, so its activations run over
    one contiguous block and a sparse level gathers rows, not columns."""

    x: Array
    s: Array
    z: Array
    matrices: tuple[Array, ...] = ()  # each block's weight matrix, in level order, for backward
    #: what multiplies each column's weighted sum (plan.column_scale), [n_cols]; None: 1
    scale: Array | None = None
    #: each column's aggregate (the weighted sum, or mean), [n_cols, batch], when the plan has
    #: responses: dE/dr_j = delta_j * aggregate_j
    aggregate: Array | None = None

    def z_of(self, unit: UnitInfo) -> Array:
        """A unit's z, [batch, size] (a view)."""
        return self.x[:, unit.cols] if unit.role == "input" else self.z[unit.cols].T

    def s_of(self, unit: UnitInfo) -> Array:
        """A non-input unit's s, [batch, size] (a view)."""
        return self.s[unit.cols].T


def _theta0(plan: Plan, theta: Array) -> Array | None:
    return np.append(theta, 0.0) if plan.has_gathered_blocks else None


@dataclass(frozen=True)
class Offsets:
    """An amount added to one column of s in each row: row n gets `values[n]` at `cols[n]`.

    Perturbing w_{i->j}[a, b] by e is exactly adding e * z_i[n, a] to s_j[n, b] for every
    sample n, since nothing upstream of j changes; so finite differences for many parameters
    run as one pass over replicas of the batch, each replica carrying its own offset.
    """

    cols: Array
    values: Array


def forward(plan: Plan, theta: Array, x: Array, offsets: Offsets | None = None) -> Values:
    """s and z of every unit, a level at a time over the whole batch."""
    rows = x.shape[0]
    s = np.empty((plan.n_cols, rows))
    z = np.empty((plan.n_cols, rows))
    x_t = x.T
    bias = theta[plan.n_weight_params :, None]
    theta0 = _theta0(plan, theta)
    scale = plan.column_scale(theta)
    aggregate = np.zeros((plan.n_cols, rows)) if plan.has_responses else None
    matrices = []
    for level in plan.levels:
        checkpoint()
        if not level.blocks:
            s[level.cols] = bias[level.cols]
        for block in level.blocks:
            w = block.matrix(theta, theta0)
            matrices.append(w)
            out = s[block.tgt]
            if block.src_z is None:
                np.matmul(w.T, x_t[block.src_x], out=out)
            elif block.src_x is None:
                np.matmul(w.T, z[block.src_z], out=out)
            else:
                np.matmul(w[: block.split].T, x_t[block.src_x], out=out)
                out += w[block.split :].T @ z[block.src_z]
        if level.blocks:
            if scale is not None:
                _scale_sums(plan, s, scale, aggregate, level.cols)
            s[level.cols] += bias[level.cols]
        if offsets is not None:
            at = np.flatnonzero((offsets.cols >= level.cols.start) & (offsets.cols < level.cols.stop))
            s[offsets.cols[at], at] += offsets.values[at]
        for group in level.groups:
            group.forward(s[group.cols], z[group.cols])
    return Values(x, s, z, tuple(matrices), scale, aggregate)


def _scale_sums(plan: Plan, s: Array, scale: Array, aggregate: Array | None, cols: slice) -> None:
    """Turn a level's weighted sums into response * aggregate, keeping the aggregates."""
    with np.errstate(over="ignore"):  # overflows only where the true value does (then refused)
        if aggregate is not None:
            if plan.mean_scale is None:
                aggregate[cols] = s[cols]
            else:
                np.multiply(s[cols], plan.mean_scale[cols, None], out=aggregate[cols])
        s[cols] *= scale[cols, None]


def summed_delta(values: Values, delta: Array) -> Array:
    """dE/d(weighted sum) = scale * delta: what the weights' gradients and the units feeding
    each unit see (delta itself when the scale is 1)."""
    if values.scale is None:
        return delta
    with np.errstate(over="ignore", invalid="ignore"):
        return delta * values.scale[:, None]


def _outputs(plan: Plan, values: Values, y: Array) -> Outputs:
    return Outputs(values.s, values.z, plan.out_cols, y, plan.out_split, plan.out_segments)


def sample_losses(plan: Plan, values: Values, y: Array) -> Array:
    """E_n for every sample n."""
    return plan.objective.values(_outputs(plan, values, y))


def loss_gradient(plan: Plan, values: Values, y: Array) -> Array:
    """The loss's gradient at the outputs, [batch, outputs]: dE_n/dz, or dE_n/ds when the loss
    is fused with the outputs' activations (plan.objective.fused)."""
    return plan.objective.gradient(_outputs(plan, values, y))


def backward(plan: Plan, theta: Array, values: Values, y: Array) -> Array:
    """delta = dE_n/ds of every non-input unit and sample, unit-major: [n_cols, batch]."""
    return backward_terms(plan, theta, values, y)[1]


def backward_terms(plan: Plan, theta: Array, values: Values, y: Array) -> tuple[Array, Array]:
    """(g, delta), both unit-major [n_cols, batch]: g = dE_n/dz as the successors (and a loss
    that is not fused) send it back, and delta = dE_n/ds, the activation's vjp of g (plus a fused
    loss's own dE/ds at the outputs). Second-order passes need g beside delta."""
    rows = values.z.shape[1]
    g = np.zeros((plan.n_cols, rows))  # dE_n/dz, accumulated over every successor
    delta = np.empty((plan.n_cols, rows))
    at_outputs = loss_gradient(plan, values, y).T
    loss_ds = None  # a fused loss's dE/ds, added to delta where the outputs' levels are reached
    if plan.objective.fused:
        loss_ds = np.zeros((plan.n_cols, rows))
        loss_ds[plan.out_cols] = at_outputs
    else:
        g[plan.out_cols] = at_outputs
    matrices = iter(reversed(values.matrices))  # as forward gathered them, walked back
    scale = values.scale
    sent = delta if scale is None else np.empty_like(delta)  # dE/d(weighted sum): scale * delta
    for level in reversed(plan.levels):
        checkpoint()
        for group in level.groups:
            c = group.cols
            group.vjp(g[c], values.s[c], values.z[c], delta[c])
        if loss_ds is not None:
            delta[level.cols] += loss_ds[level.cols]
        if scale is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                np.multiply(delta[level.cols], scale[level.cols, None], out=sent[level.cols])
        for block, w in zip(reversed(level.blocks), matrices, strict=False):
            if block.src_z is not None:  # nothing flows back into the inputs (input_gradient)
                g[block.src_z] += w[block.split :] @ sent[block.tgt]
    return g, delta


def input_gradient(plan: Plan, values: Values, delta: Array) -> Array:
    """dE_n/dx_n of every sample, [batch, n_inputs]: what each input column sends back, the sum
    over the blocks it feeds of W (scale * delta), as backward sends it to any other unit."""
    gx = np.zeros((plan.n_inputs, delta.shape[1]))
    sent = summed_delta(values, delta)
    matrices = iter(values.matrices)  # in level order, as forward gathered them
    for level in plan.levels:
        for block in level.blocks:
            w = next(matrices)
            if block.src_x is not None:  # a block's source columns are distinct
                gx[block.src_x] += w[: block.split] @ sent[block.tgt]
    return gx.T


def gradient(plan: Plan, values: Values, delta: Array, scale: float) -> Array:
    """scale * sum_n dE_n/dtheta: every weight's z_i delta_j and every bias's delta_j.

    A block at a time: one product for its whole matrix, from which a gathered block's real
    weights are picked out.
    """
    grad = np.empty(plan.n_params)
    x_t = values.x.T
    sent = summed_delta(values, delta)
    for level in plan.levels:
        for block in level.blocks:
            d = sent[block.tgt].T
            if isinstance(block.params, slice):  # one whole weight, from one unit
                source = values.z[block.src_z] if block.src_x is None else x_t[block.src_x]
                np.matmul(source, d, out=grad[block.params].reshape(block.shape))
                continue
            dw = np.empty(block.shape)
            if block.src_x is not None:
                np.matmul(x_t[block.src_x], d, out=dw[: block.split])
            if block.src_z is not None:
                np.matmul(values.z[block.src_z], d, out=dw[block.split :])
            grad[block.cell_params] = dw.ravel()[block.cells]
    biases = slice(plan.n_weight_params, plan.n_weight_params + plan.n_cols)
    delta.sum(axis=1, out=grad[biases])
    if values.aggregate is not None:  # dE/dr_j = delta_j * aggregate_j
        with np.errstate(over="ignore", invalid="ignore"):
            np.einsum("cb,cb->c", delta, values.aggregate, out=grad[biases.stop :])
    grad *= scale
    return grad


def per_sample_gradient(plan: Plan, values: Values, delta: Array) -> Array:
    """dE_n/dtheta for every sample n: [batch, n_params]."""
    rows = delta.shape[1]
    grad = np.empty((rows, plan.n_params))
    sent = summed_delta(values, delta)
    for wg in plan.weight_groups:
        z = values.x.T if wg.from_inputs else values.z
        if isinstance(wg.src, slice):
            per = z[wg.src].T[:, :, None] * sent[wg.tgt].T[:, None, :]
            grad[:, wg.params] = per.reshape(rows, -1)
        else:
            per = np.einsum("emb,enb->bemn", z[wg.src], sent[wg.tgt])
            grad[:, wg.params] = per.reshape(rows, len(wg.weights), -1)
    biases = slice(plan.n_weight_params, plan.n_weight_params + plan.n_cols)
    grad[:, biases] = delta.T
    if values.aggregate is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(delta.T, values.aggregate.T, out=grad[:, biases.stop :])
    return grad


def reduction_scale(reduction: str, rows: int) -> float:
    return 1.0 / rows if reduction == "mean" else 1.0


def loss_value(plan: Plan, theta: Array, batch: Batch, reduction: str) -> float:
    """The reduced loss of a batch."""
    assert batch.y is not None
    losses = sample_losses(plan, forward(plan, theta, batch.x), batch.y)
    return float(losses.sum() * reduction_scale(reduction, batch.size))
