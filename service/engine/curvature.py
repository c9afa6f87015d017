"""Hessian-vector products, exactly, by Pearlmutter's R-operator (1994): forward over reverse.

R{q} is the derivative of a quantity q of the passes along a direction v of theta, d/dt q at
theta + t v. Differentiating each step of the passes gives its R-step, which the passes below
take level by level over the whole batch, as the passes they follow do:

- forward: R{a_j} = sum_i (v_{i->j} z_i + w_{i->j} R{z_i}) (R{x} = 0), then
  R{s_j} = scale_j R{a_j} + v_r_j m_j a_j + v_b_j (a response r_j scales the aggregate m_j a_j,
  m_j being 1 or the mean's 1/n_j), and R{z_j} = J_f R{s_j} (the activation's vjp: every
  Jacobian here is symmetric);
- the loss: R{dE/dz} = (its Hessian) R{z}, or R{dE/ds} from R{s} for a fused loss;
- backward: R{g_i} = sum_j (v_{i->j} sent_j + w_{i->j} R{sent_j}), with sent_j = scale_j delta_j,
  and R{delta} = J_f^T R{g} + (d/dt J_f^T) g, the activation's `curvature` of g along R{s};
- then H v is the R of each gradient: R{z_i} sent_j + z_i R{sent_j} for a weight, R{delta_j}
  for a bias, R{delta_j} m_j a_j + delta_j m_j R{a_j} for a response.

Every product is computed as its own formula, not by differences; a quantity that overflows
comes out as inf or NaN, which the caller refuses by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.engine.deadline import checkpoint
from service.engine.errors import GraphError, Problem
from service.engine.losses import Outputs
from service.engine.passes import Values, _theta0, backward_terms, summed_delta
from service.engine.plan import Plan

Array = np.ndarray


@dataclass(frozen=True)
class Curvature:
    """A batch's Hessian-vector product: H v of the summed loss sum_n E_n, [n_params], and the
    backward pass it was taken around (delta, for the gradient)."""

    hv: Array
    delta: Array


def check_second_order(plan: Plan) -> None:
    """Refuse a network using an activation whose registry entry gives no second derivative."""
    for level in plan.levels:
        for group in level.groups:
            if group.activation.curvature is None:
                u = plan.unit_at(group.cols.start)
                msg = f"activation {u.activation} of unit {u.id!r} gives no second derivative"
                raise GraphError(msg, [Problem(("units", plan.unit_index[u.id], "activation"), msg)])


def hvp(plan: Plan, theta: Array, values: Values, y: Array, v: Array) -> Curvature:
    """H v for the batch's summed loss, with H the Hessian with respect to theta and v a
    direction of theta ([n_params]); the delta of the same backward pass beside it."""
    check_second_order(plan)
    with np.errstate(over="ignore", invalid="ignore"):  # refused by name where not finite
        g, delta = backward_terms(plan, theta, values, y)
        rs, rz, ra, v_matrices = _r_forward(plan, theta, values, v)
        r_delta, r_sent = _r_backward(plan, values, y, v, g, delta, rs, rz, v_matrices)
        return Curvature(_r_gradient(plan, values, delta, rz, ra, r_delta, r_sent), delta)


def _r_forward(
    plan: Plan, theta: Array, values: Values, v: Array
) -> tuple[Array, Array, Array | None, list[Array]]:
    """R{s}, R{z} (unit-major), R{aggregate} where responses are parameters, and each block's
    matrix of v (in level order, as forward gathers the weights)."""
    rows = values.z.shape[1]
    rs, rz = np.empty((plan.n_cols, rows)), np.empty((plan.n_cols, rows))
    ra = np.zeros((plan.n_cols, rows)) if values.aggregate is not None else None  # 0: no weights
    x_t, z = values.x.T, values.z
    v_bias = v[plan.n_weight_params : plan.n_weight_params + plan.n_cols, None]
    v_response = v[plan.n_weight_params + plan.n_cols :, None]
    v0 = _theta0(plan, v)
    matrices = iter(values.matrices)
    v_matrices = []
    for level in plan.levels:
        checkpoint()
        cols = level.cols
        if not level.blocks:
            rs[cols] = v_bias[cols]
        for block in level.blocks:
            w, vw = next(matrices), block.matrix(v, v0)
            v_matrices.append(vw)
            out, split = rs[block.tgt], block.split
            if block.src_x is not None:
                np.matmul(vw[:split].T, x_t[block.src_x], out=out)
            else:
                out.fill(0.0)
            if block.src_z is not None:
                out += vw[split:].T @ z[block.src_z] + w[split:].T @ rz[block.src_z]
        if level.blocks:
            if ra is not None:  # R{aggregate} = m R{a}, then R{s} gains v_r * aggregate
                assert values.aggregate is not None
                ra[cols] = rs[cols] if plan.mean_scale is None else rs[cols] * plan.mean_scale[cols, None]
            if values.scale is not None:
                rs[cols] *= values.scale[cols, None]
            if ra is not None:
                assert values.aggregate is not None
                rs[cols] += v_response[cols] * values.aggregate[cols]
            rs[cols] += v_bias[cols]
        for group in level.groups:
            c = group.cols
            group.activation.vjp(rs[c], values.s[c], values.z[c], rz[c], group.segments)
    return rs, rz, ra, v_matrices


def _r_backward(
    plan: Plan,
    values: Values,
    y: Array,
    v: Array,
    g: Array,
    delta: Array,
    rs: Array,
    rz: Array,
    v_matrices: list[Array],
) -> tuple[Array, Array]:
    """R{delta} and R{sent} (R of scale * delta), unit-major."""
    rows = delta.shape[1]
    loss = plan.objective
    outputs = Outputs(values.s, values.z, plan.out_cols, y, plan.out_split, plan.out_segments)
    along = (rs if loss.fused else rz)[plan.out_cols].T
    at_outputs = loss.curvature(outputs, along).T
    r_g = np.zeros((plan.n_cols, rows))
    r_loss_ds = None
    if loss.fused:
        r_loss_ds = np.zeros((plan.n_cols, rows))
        r_loss_ds[plan.out_cols] = at_outputs
    else:
        r_g[plan.out_cols] = at_outputs
    r_delta, second = np.empty((plan.n_cols, rows)), np.empty((plan.n_cols, rows))
    scale = values.scale
    sent = summed_delta(values, delta)
    r_sent = r_delta if scale is None else np.empty_like(r_delta)
    # R{scale} = v_r m where responses are parameters (the mean's m is fixed)
    r_scale = None
    if plan.has_responses:
        r_scale = v[plan.n_weight_params + plan.n_cols :]
        if plan.mean_scale is not None:
            r_scale = r_scale * plan.mean_scale
    matrices, v_back = iter(reversed(values.matrices)), iter(reversed(v_matrices))
    for level in reversed(plan.levels):
        checkpoint()
        for group in level.groups:
            c, act = group.cols, group.activation
            act.vjp(r_g[c], values.s[c], values.z[c], r_delta[c], group.segments)
            assert act.curvature is not None  # (check_second_order)
            act.curvature(g[c], values.s[c], values.z[c], rs[c], second[c], group.segments)
            r_delta[c] += second[c]
        cols = level.cols
        if r_loss_ds is not None:
            r_delta[cols] += r_loss_ds[cols]
        if scale is not None:
            np.multiply(r_delta[cols], scale[cols, None], out=r_sent[cols])
            if r_scale is not None:
                r_sent[cols] += delta[cols] * r_scale[cols, None]
        for block, w, vw in zip(reversed(level.blocks), matrices, v_back, strict=False):
            if block.src_z is not None:
                split, tgt = block.split, block.tgt
                r_g[block.src_z] += vw[split:] @ sent[tgt] + w[split:] @ r_sent[tgt]
    return r_delta, r_sent


def _r_gradient(
    plan: Plan,
    values: Values,
    delta: Array,
    rz: Array,
    ra: Array | None,
    r_delta: Array,
    r_sent: Array,
) -> Array:
    """The R of every gradient of the summed loss: H v, [n_params]."""
    hv = np.empty(plan.n_params)
    x_t, z = values.x.T, values.z
    sent = summed_delta(values, delta)
    for level in plan.levels:
        for block in level.blocks:
            d, rd, split = sent[block.tgt].T, r_sent[block.tgt].T, block.split
            dw = np.empty(block.shape)
            if block.src_x is not None:
                np.matmul(x_t[block.src_x], rd, out=dw[:split])
            if block.src_z is not None:
                np.matmul(z[block.src_z], rd, out=dw[split:])
                dw[split:] += rz[block.src_z] @ d
            if isinstance(block.params, slice):  # one whole weight
                hv[block.params] = dw.ravel()
            else:
                hv[block.cell_params] = dw.ravel()[block.cells]
    biases = slice(plan.n_weight_params, plan.n_weight_params + plan.n_cols)
    r_delta.sum(axis=1, out=hv[biases])
    if ra is not None:  # R{delta_j m_j a_j}
        assert values.aggregate is not None
        hv[biases.stop :] = np.einsum("cb,cb->c", r_delta, values.aggregate) + np.einsum(
            "cb,cb->c", delta, ra
        )
    return hv
