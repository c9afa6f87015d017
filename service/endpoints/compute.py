"""What each compute endpoint does: a validated request in, a response body out.

The engine works on flat tables; this module runs the engine, refuses results that
overflowed, and cuts the tables back into the per-unit, per-weight form of the wire.
Response bodies hold NumPy arrays, which `service.convert.encoding.dumps` serialises.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service import engine, wire
from service.convert import binding, progress
from service.convert.encoding import encoded
from service.endpoints import training
from service.engine import Batch, Plan, Values
from service.problems import InvalidRequestError, NonFiniteResultError
from service.settings import Limits

#: a JSON object of the answer, its arrays still NumPy (service.convert.encoding.dumps writes it)
JsonObject = dict[str, Any]


def prepare(net: wire.Network, samples: wire.Samples, *, need_targets: bool) -> tuple[Plan, Batch]:
    """Compile the network and bind the samples. The limits were checked, from the request's
    own counts, before it got here (`service.pipeline.refusal.admit`)."""
    plan = binding.compile_network(net)
    batch = binding.bind_samples(plan, samples, need_targets)
    return plan, batch


# ---------------------------------------------------------------- non-finite results


def check_values(plan: Plan, values: Values, delta: np.ndarray | None = None) -> None:
    for name, table in (("s", values.s), ("z", values.z), ("delta", delta)):
        if table is None or np.isfinite(table).all():
            continue
        bad = int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0])  # unit-major: [n_cols, batch]
        unit = plan.unit_at(bad)
        raise NonFiniteResultError(
            f"{name} of unit {unit.id!r} is not finite: the numbers overflowed float64; "
            "scale the weights or inputs down"
        )


def check_params(plan: Plan, theta: np.ndarray, what: str) -> None:
    finite = np.isfinite(theta)
    if not finite.all():
        name = plan.parameter_name(int(np.flatnonzero(~finite.reshape(-1, plan.n_params).all(0))[0]))
        raise NonFiniteResultError(f"the {what} of {name} is not finite: the numbers overflowed float64")


def finite_loss(loss: float) -> float:
    if not np.isfinite(loss):
        raise NonFiniteResultError("the loss is not finite: the numbers overflowed float64")
    return loss


# ---------------------------------------------------------------- response shapes


def _unit_values(plan: Plan, values: Values, delta: np.ndarray | None = None) -> JsonObject:
    out: JsonObject = {}
    for u in plan.units:
        entry: JsonObject = {"z": values.z_of(u)}
        if u.role != "input":
            entry = {"s": values.s_of(u), **entry}
            if delta is not None:
                entry["delta"] = delta[u.cols].T
        out[u.id] = entry
    return out


def columns_of(net: wire.Network) -> wire.WeightColumns | None:
    """The network's weights when they were posted as columns (answers come back in kind)."""
    return net.weights if isinstance(net.weights, wire.WeightColumns) else None


def scalar_or(array: np.ndarray) -> Any:
    """The wire's number for a one-element array, the array otherwise."""
    return float(array.reshape(())) if array.size == 1 else array


def gradient_body(plan: Plan, grad: np.ndarray, columns: wire.WeightColumns | None) -> JsonObject:
    """Weights and biases cut out of a flat gradient [n_params] or [batch, n_params]; the
    weights as columns when they were posted so."""
    lead = grad.shape[:-1]

    def cut(params: slice, shape: tuple[int, ...]) -> Any:
        if not lead and params.stop - params.start == 1:
            return grad.item(params.start)  # a single unit's: the commonest, so the cheapest
        part = grad[..., params]
        if lead:
            return part.reshape(*lead, *shape) if part.shape[-1] > 1 else part[..., 0]
        return part.reshape(shape)

    weights: Any
    if columns is not None:  # single units in the listed order: the first elements of theta
        weights = {
            "source": columns.source,
            "target": columns.target,
            "value": grad[..., : plan.n_weight_params],
        }
    else:
        weights = [
            {"source": w.source, "target": w.target, "value": cut(w.params, w.shape)} for w in plan.weights
        ]
    body: JsonObject = {
        "weights": weights,
        "biases": {u.id: cut(plan.bias_params(u), (u.size,)) for u in plan.units if u.role != "input"},
    }
    if plan.has_responses:
        body["responses"] = {
            u.id: cut(plan.response_params(u), (u.size,)) for u in plan.units if u.role != "input"
        }
    return body


def reduced_loss(plan: Plan, values: Values, batch: Batch, reduction: str) -> float:
    assert batch.y is not None
    per = engine.sample_losses(plan, values, batch.y)
    return finite_loss(float(per.sum() * engine.reduction_scale(reduction, batch.size)))


# ---------------------------------------------------------------- endpoints


def forward(req: wire.ForwardRequest, limits: Limits) -> JsonObject:
    plan, batch = prepare(req.network, req.samples, need_targets=False)
    values = engine.forward(plan, plan.theta, batch.x)
    check_values(plan, values)
    loss = None if batch.y is None else reduced_loss(plan, values, batch, "mean")
    return {
        "outputs": {plan.units[i].id: values.z_of(plan.units[i]) for i in plan.outputs},
        "units": _unit_values(plan, values),
        "loss": loss,
    }


def gradients(req: wire.GradientsRequest, limits: Limits) -> JsonObject:
    plan, batch = prepare(req.network, req.samples, need_targets=True)
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    delta = engine.backward(plan, plan.theta, values, batch.y)
    check_values(plan, values, delta)
    scale = engine.reduction_scale(req.reduction, batch.size)
    grad = engine.gradient(plan, values, delta, scale)
    check_params(plan, grad, "gradient")
    body: JsonObject = {
        "loss": reduced_loss(plan, values, batch, req.reduction),
        "gradients": gradient_body(plan, grad, columns_of(req.network)),
    }
    if req.include_units:
        body["units"] = _unit_values(plan, values, delta)
    per_input = engine.input_gradient(plan, values, delta) if req.wrt_inputs else None
    if per_input is not None:
        check_inputs(plan, per_input)
        body["gradients"]["inputs"] = _input_body(plan, per_input * scale)
    if req.per_sample:
        per = engine.per_sample_gradient(plan, values, delta)
        check_params(plan, per, "per-sample gradient")
        body["per_sample"] = gradient_body(plan, per, columns_of(req.network))
        if per_input is not None:  # each sample's own dE_n/dx_n, not scaled by the reduction
            body["per_sample"]["inputs"] = _input_body(plan, per_input)
    return body


def check_inputs(plan: Plan, per_input: np.ndarray) -> None:
    finite = np.isfinite(per_input).all(axis=0)
    if not finite.all():
        col = int(np.flatnonzero(~finite)[0])
        unit = next(u for u in plan.units if u.role == "input" and u.cols.start <= col < u.cols.stop)
        raise NonFiniteResultError(
            f"the gradient with respect to input {unit.id!r} is not finite: the numbers overflowed float64"
        )


def _input_body(plan: Plan, per_input: np.ndarray) -> JsonObject:
    """dE/dx of each input unit, [batch, size], from the inputs' columns [batch, n_inputs]."""
    return {u.id: per_input[:, u.cols] for u in plan.units if u.role == "input"}


def sgd(req: wire.SgdRequest, limits: Limits, report: progress.Report | None = None) -> JsonObject:
    """SGD; with `report`, its progress too: START once the request is admitted, then each
    epoch's loss as it ends (throttled; a loss that is not finite is not reported, the answer
    says what overflowed)."""
    if report is not None and req.array_encoding == "binary":
        raise InvalidRequestError(
            "a streamed training's result is a JSON event (text/event-stream): ask for "
            "array_encoding 'list' or 'base64', or for the binary answer without the stream"
        )
    options = training.options(req)
    plan, batch = prepare(req.network, req.samples, need_targets=True)
    resumed = training.state(req, options, plan)
    before = engine.forward(plan, plan.theta, batch.x)
    check_values(plan, before)  # name what overflows as posted
    loss_before = reduced_loss(plan, before, batch, req.reduction)
    throttle = None if report is None else progress.Throttle(report)
    if report is not None:
        report(progress.START, None)
    on_epoch = None if throttle is None else _epochs(throttle, req.epochs)
    result = engine.train(plan, batch, options, on_epoch, resumed)
    if throttle is not None:
        throttle.flush()  # the last epoch's loss, before the answer
    check_params(plan, result.theta, "updated value")
    for name, buffer in result.state.buffers.items():
        check_params(plan, buffer, f"optimizer's {name}")
    history = [finite_loss(loss) for loss in result.history]
    first = result.state.epoch - len(history)
    epochs: list[JsonObject] = [{"epoch": first + e, "loss": loss} for e, loss in enumerate(history)]
    if req.schedule is not None:  # (without one, the history is what it always was)
        for entry, rate in zip(epochs, result.rates, strict=True):
            entry["learning_rate"] = rate
    return {
        "network": _updated_network(req.network, plan, result.theta, req.array_encoding),
        "steps": result.steps,
        "loss_before": loss_before,
        "loss_after": history[-1],
        "history": epochs,
        "state": training.answer(plan, result, options, columns_of(req.network) is not None),
    }


def _epochs(throttle: progress.Throttle, epochs: int) -> engine.EpochCallback:
    def on_epoch(epoch: int, steps: int, loss: float) -> None:
        if np.isfinite(loss):
            throttle({"epoch": epoch, "epochs": epochs, "steps": steps, "loss": loss})

    return on_epoch


def _like(original: Any, new: np.ndarray, encoding: wire.ArrayEncoding) -> Any:
    """`new` in the form the client sent `original` in, so the network can be posted again."""
    if encoding != "list":  # every array of the answer encoded, or binary
        return new
    if isinstance(original, wire.EncodedArray):
        return encoded(new.reshape(original.shape))
    if isinstance(original, wire.BinaryReference):
        return new.reshape(original.shape)
    if isinstance(original, list):
        return new.reshape(np.shape(original))
    return scalar_or(new)


def _updated_network(
    net: wire.Network, plan: Plan, theta: np.ndarray, encoding: wire.ArrayEncoding
) -> JsonObject:
    body = net.model_dump(exclude_unset=True)
    if isinstance(net.weights, wire.WeightColumns):
        body["weights"]["value"] = _like(net.weights.value, theta[: plan.n_weight_params], encoding)
    else:
        for entry, weight, placed in zip(body.get("weights", []), net.weights, plan.weights, strict=True):
            entry["value"] = _like(weight.value, theta[placed.params].reshape(placed.shape), encoding)
    for entry, unit, laid_out in zip(body["units"], net.units, plan.units, strict=True):
        if unit.role != "input":
            entry["bias"] = _like(unit.bias, theta[plan.bias_params(laid_out)], encoding)
            if plan.has_responses:
                entry["response"] = _like(unit.response, theta[plan.response_params(laid_out)], encoding)
    return body
