"""`/v1/hvp`: the Hessian of the reduced loss times the caller's vector, by the engine's
R-operator (service.engine.curvature), beside the gradients /v1/gradients would give."""

from __future__ import annotations

from typing import Any

import numpy as np

from service import engine, wire
from service.convert import binding
from service.convert.encoding import to_numpy
from service.endpoints import compute
from service.engine import Plan
from service.problems import InvalidGraphError, InvalidRequestError, NonFiniteResultError, issue
from service.settings import Limits


def _refuse(loc: list[str | int], msg: str) -> InvalidRequestError:
    return InvalidRequestError(msg, [issue(loc, msg)])


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _fits(array: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether an Array has this shape, a number standing for one element."""
    return array.shape == shape or (array.ndim == 0 and np.prod(shape) == 1)


def vector(plan: Plan, given: wire.ParameterVector) -> np.ndarray:
    """The vector as a direction of theta; a missing bias or response is 0, a wrong shape or an
    entry the network does not have is a 422 naming it."""
    v = np.zeros(plan.n_params)
    weights = plan.weights
    if isinstance(given.weights, list):
        if len(given.weights) != len(weights):
            raise _refuse(
                ["vector", "weights"],
                f"vector.weights has {len(given.weights)} entries, and the network {len(weights)} "
                "weights: give one per weight, in the network's order",
            )
        for k, (value, w) in enumerate(zip(given.weights, weights, strict=True)):
            array = np.asarray(value, dtype=np.float64) if type(value) is float else None
            if array is None:
                array = to_numpy(value, ["vector", "weights", k])
            if not _fits(array, w.shape):
                raise _refuse(
                    ["vector", "weights", k],
                    f"vector.weights[{k}] has shape {_shape(array.shape)}, and weight "
                    f"{w.source}->{w.target} has shape {_shape(w.shape)}",
                )
            v[w.params] = array.ravel()
    else:
        array = to_numpy(given.weights, ["vector", "weights"])
        if plan.n_weight_params != len(weights):
            raise _refuse(
                ["vector", "weights"],
                "vector.weights is one array, which stands only for weights that all join single "
                "units; this network has a layer's weight: give one Array per weight",
            )
        if array.shape != (len(weights),):
            raise _refuse(
                ["vector", "weights"],
                f"vector.weights has shape {_shape(array.shape)}, expected [{len(weights)}]: one "
                "number per weight",
            )
        v[: plan.n_weight_params] = array
    _per_unit(plan, given.biases, "biases", plan.bias_params, v)
    if given.responses and not plan.has_responses:
        uid = next(iter(given.responses))
        raise _refuse(
            ["vector", "responses", uid],
            "vector.responses: the network gives no response, so responses are not parameters",
        )
    if plan.has_responses:
        _per_unit(plan, given.responses, "responses", plan.response_params, v)
    return v


def _per_unit(plan: Plan, given: dict[str, Any], key: str, params: Any, v: np.ndarray) -> None:
    for uid, value in given.items():
        loc: list[str | int] = ["vector", key, uid]
        index = plan.unit_index.get(uid)
        if index is None or plan.units[index].role == "input":
            why = "an input unit" if index is not None else "not a unit of the network"
            raise _refuse(loc, f"vector.{key}[{uid!r}]: {uid!r} is {why}")
        u = plan.units[index]
        array = to_numpy(value, loc)
        if not _fits(array, (u.size,)):
            raise _refuse(loc, f"vector.{key}[{uid!r}] has shape {_shape(array.shape)}, expected [{u.size}]")
        v[params(u)] = array.ravel()


def _product_body(plan: Plan, hv: np.ndarray) -> compute.JsonObject:
    """H v cut into the parameters' form: weights as a list in the network's order."""

    def cut(params: slice, shape: tuple[int, ...]) -> Any:
        part = hv[params]
        return compute.scalar_or(part) if part.size == 1 else part.reshape(shape)

    body: compute.JsonObject = {
        "weights": [cut(w.params, w.shape) for w in plan.weights],
        "biases": {u.id: cut(plan.bias_params(u), (u.size,)) for u in plan.units if u.role != "input"},
    }
    if plan.has_responses:
        body["responses"] = {
            u.id: cut(plan.response_params(u), (u.size,)) for u in plan.units if u.role != "input"
        }
    return body


def hvp(req: wire.HvpRequest, limits: Limits) -> compute.JsonObject:
    plan, batch = compute.prepare(req.network, req.samples, need_targets=True)
    assert batch.y is not None
    try:
        engine.check_second_order(plan)
    except engine.GraphError as exc:
        binding._raise(InvalidGraphError, exc, "network")
    v = vector(plan, req.vector)
    values = engine.forward(plan, plan.theta, batch.x)
    curvature = engine.hvp(plan, plan.theta, values, batch.y, v)
    delta = curvature.delta  # the backward pass /v1/gradients takes, so its gradients are the same
    compute.check_values(plan, values, delta)
    scale = engine.reduction_scale(req.reduction, batch.size)
    grad = engine.gradient(plan, values, delta, scale)
    compute.check_params(plan, grad, "gradient")
    hv = curvature.hv * scale
    compute.check_params(plan, hv, "Hessian-vector product")
    vhv = float(v @ hv)
    if not np.isfinite(vhv):
        raise NonFiniteResultError("v . H v is not finite: the numbers overflowed float64")
    return {
        "loss": compute.reduced_loss(plan, values, batch, req.reduction),
        "gradients": compute.gradient_body(plan, grad, compute.columns_of(req.network)),
        "hvp": _product_body(plan, hv),
        "vhv": vhv,
    }
