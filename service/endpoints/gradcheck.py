"""/v1/check: gradients checked by central finite differences in float64.

Every weight and bias is perturbed by +-epsilon. Perturbing w_{i->j}[a, b] is exactly adding
epsilon * z_i[n, a] to s_j[n, b] in every sample n (nothing upstream of j moves), and a bias
is epsilon added to its own s; so all perturbations run as forward passes over replicas of
the batch, each replica carrying its own offset: a few NumPy passes, not two per parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service import engine, wire
from service.convert.encoding import ensure_finite, to_numpy
from service.endpoints import compute
from service.engine import Batch, Plan
from service.problems import InvalidRequestError, issue, raise_collected
from service.settings import Limits

#: a JSON object of the answer, its arrays still NumPy (service.convert.encoding.dumps writes it)
JsonObject = dict[str, Any]


def check(req: wire.CheckRequest, limits: Limits) -> JsonObject:
    plan, batch = compute.prepare(req.network, req.samples, need_targets=True)
    assert batch.y is not None
    scale = engine.reduction_scale(req.reduction, batch.size)
    values = engine.forward(plan, plan.theta, batch.x)
    compute.check_values(plan, values)
    if req.gradients is None:
        delta = engine.backward(plan, plan.theta, values, batch.y)
        compute.check_values(plan, values, delta)
        checked = engine.gradient(plan, values, delta, scale)
        compute.check_params(plan, checked, "gradient")  # as /v1/gradients refuses it
        claimed = np.ones(plan.n_params, dtype=bool)
    else:
        checked, claimed = _claimed(plan, req.gradients)
    numeric = central_differences(plan, batch, values, scale, req.epsilon, limits)
    compute.check_params(plan, numeric, "numeric gradient")
    error = np.abs(checked - numeric)
    compute.check_params(plan, error, "error (checked - numeric)")  # finite apart, yet too far apart
    ok = (error <= req.atol + req.rtol * np.abs(numeric)) | ~claimed
    # relative error only where it means something: an entry whose values are both within atol
    # of zero (a zero gradient, whose central difference is rounding noise of ~1e-11) would
    # read "relative 1" for an error of 1e-15; atol alone decides those
    size = np.maximum(np.abs(checked), np.abs(numeric))
    relative = np.divide(error, size, out=np.zeros_like(error), where=size > req.atol)

    def entry(params: slice, shape: tuple[int, ...]) -> JsonObject:
        return {
            "checked": compute.scalar_or(checked[params].reshape(shape)),
            "numeric": compute.scalar_or(numeric[params].reshape(shape)),
            "ok": bool(ok[params].all()),
        }

    columns = compute.columns_of(req.network)
    weights: Any
    if columns is not None:  # in kind: single units, theta's first elements in the listed order
        keep = np.flatnonzero(claimed[: plan.n_weight_params])
        weights = {
            "source": [columns.source[k] for k in keep.tolist()],
            "target": [columns.target[k] for k in keep.tolist()],
            "checked": checked[keep],
            "numeric": numeric[keep],
            "ok": ok[keep].tolist(),
        }
    else:
        weights = [
            {"source": w.source, "target": w.target, **entry(w.params, w.shape)}
            for w in plan.weights
            if claimed[w.params].all()
        ]
    body: JsonObject = {
        "ok": bool(ok.all()),
        "max_abs_error": float(error[claimed].max(initial=0.0)),
        "max_rel_error": float(relative[claimed].max(initial=0.0)),
        "weights": weights,
        "biases": {
            u.id: entry(plan.bias_params(u), (u.size,))
            for u in plan.units
            if u.role != "input" and claimed[plan.bias_params(u)].all()
        },
    }
    if plan.has_responses:
        body["responses"] = {
            u.id: entry(plan.response_params(u), (u.size,))
            for u in plan.units
            if u.role != "input" and claimed[plan.response_params(u)].all()
        }
    ensure_finite(body)
    return body


def central_differences(
    plan: Plan, batch: Batch, values: engine.Values, scale: float, epsilon: float, limits: Limits
) -> np.ndarray:
    """(E(theta + e) - E(theta - e)) / 2e for every parameter, the loss reduced by `scale`."""
    assert batch.y is not None
    rows = batch.size
    # for each parameter: the column of s it moves and, per sample, by how much per unit of epsilon
    cols = np.empty(plan.n_params, dtype=np.intp)
    slopes = np.empty((plan.n_params, rows))
    for w in plan.weights:
        source = plan.units[plan.unit_index[w.source]]
        target = plan.units[plan.unit_index[w.target]]
        m, n = w.shape
        cols[w.params] = np.tile(np.arange(target.cols.start, target.cols.stop), m)
        slopes[w.params] = np.repeat(values.z_of(source).T, n, axis=0)  # row a*n+b: z_i[:, a]
        if values.scale is not None:  # s_j moves by response_j / (its connections, for a mean) * z_i
            slopes[w.params] *= np.tile(values.scale[target.cols], m)[:, None]
    biases = slice(plan.n_weight_params, plan.n_weight_params + plan.n_cols)
    cols[biases] = np.arange(plan.n_cols)
    slopes[biases] = 1.0
    if values.aggregate is not None:  # perturbing response_j moves s_j by epsilon * aggregate_j
        cols[biases.stop :] = np.arange(plan.n_cols)
        slopes[biases.stop :] = values.aggregate
    numeric = np.empty(plan.n_params)
    per_chunk = max(1, limits.max_activation_elements // max(1, 2 * rows * plan.n_cols))
    for start in range(0, plan.n_params, per_chunk):
        chunk = slice(start, min(start + per_chunk, plan.n_params))
        k = chunk.stop - chunk.start
        signs = np.repeat([1.0, -1.0], k * rows)  # replicas: k pushed up, then k pushed down
        offsets = engine.Offsets(
            cols=np.tile(np.repeat(cols[chunk], rows), 2),
            values=signs * epsilon * np.tile(slopes[chunk].ravel(), 2),
        )
        x = np.tile(batch.x, (2 * k, 1))
        losses = engine.sample_losses(
            plan, engine.forward(plan, plan.theta, x, offsets), np.tile(batch.y, (2 * k, 1))
        )
        per_replica = losses.reshape(2 * k, rows).sum(axis=1) * scale
        numeric[chunk] = (per_replica[:k] - per_replica[k:]) / (2 * epsilon)
    return numeric


def _claimed(plan: Plan, claimed: wire.ClaimedGradients) -> tuple[np.ndarray, np.ndarray]:
    """The caller's gradients in theta's layout, and which entries they cover."""
    values = np.zeros(plan.n_params)
    covered = np.zeros(plan.n_params, dtype=bool)
    problems: list[dict[str, Any]] = []
    weights = {(w.source, w.target): w for w in plan.weights}
    for loc, source, target, value in _claimed_weights(claimed.weights, problems):
        w = weights.get((source, target))
        if w is None:
            problems.append(issue(loc, f"the network has no weight {source}->{target}"))
            continue
        if value.size != w.params.stop - w.params.start or (value.ndim == 2 and value.shape != w.shape):
            msg = (
                f"the gradient of {source}->{target} has shape {list(value.shape)}, expected {list(w.shape)}"
            )
            problems.append(issue(loc, msg))
            continue
        values[w.params], covered[w.params] = value.ravel(), True
    per_unit = [("bias", "biases", claimed.biases, plan.bias_params, True)]
    per_unit.append(("response", "responses", claimed.responses, plan.response_params, plan.has_responses))
    for kind, key, given, params, held in per_unit:
        for uid, entry in given.items():
            loc = ["gradients", key, uid]
            if not held or uid not in plan.unit_index or plan.units[plan.unit_index[uid]].role == "input":
                why = "" if held else f" (the network gives no unit a {kind})"
                problems.append(issue(loc, f"{uid!r} is not a unit with a {kind}{why}"))
                continue
            unit = plan.units[plan.unit_index[uid]]
            value = to_numpy(entry, loc).ravel()
            if value.size != unit.size:
                msg = f"the {kind} gradient of {uid!r} has {value.size} entries, expected {unit.size}"
                problems.append(issue(loc, msg))
                continue
            values[params(unit)], covered[params(unit)] = value, True
    raise_collected(InvalidRequestError, problems)
    if not covered.any():
        raise InvalidRequestError("gradients holds nothing to check: give weights or biases, or leave it out")
    return values, covered


def _claimed_weights(
    given: list[wire.Weight] | wire.WeightColumns, problems: list[dict[str, Any]]
) -> list[tuple[list[str | int], str, str, np.ndarray]]:
    """Each claimed weight gradient as (where it was given, source, target, value)."""
    if not isinstance(given, wire.WeightColumns):
        return [
            (
                ["gradients", "weights", k],
                w.source,
                w.target,
                to_numpy(w.value, ["gradients", "weights", k, "value"]),
            )
            for k, w in enumerate(given)
        ]
    column = to_numpy(given.value, ["gradients", "weights", "value"])
    if column.size != len(given.source) or column.ndim > 1:
        msg = f"gradients.weights.value has shape {list(column.shape)}, expected [{len(given.source)}]"
        problems.append(issue(["gradients", "weights", "value"], msg))
        return []
    column = column.reshape(-1)
    pairs = zip(given.source, given.target, strict=True)
    return [
        (["gradients", "weights", "source", k], a, b, column[k : k + 1]) for k, (a, b) in enumerate(pairs)
    ]
