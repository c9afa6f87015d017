"""/v1/sgd's optimizer, schedule and state between the wire and the engine: the options read
from a request (a hyper-parameter the optimizer does not take is refused by name), a posted
state checked against the network and the optimizer (the first mismatch named) and laid out
flat like theta, and the answer's state cut back into weights, biases and responses."""

from __future__ import annotations

from typing import Any

import numpy as np

from service import engine, wire
from service.convert.encoding import to_numpy
from service.engine import Plan
from service.problems import InvalidRequestError, issue


def _refuse(loc: list[str | int], msg: str) -> InvalidRequestError:
    return InvalidRequestError(msg, [issue(loc, msg)])


def options(req: wire.SgdRequest) -> engine.SgdOptions:
    """The engine's options for a request: its optimizer's hyper-parameters checked (each one
    the optimizer takes, in a combination torch takes), the rest at the optimizer's defaults."""
    optimizer = engine.OPTIMIZERS[req.optimizer]
    given = req.hyper_parameters()
    for name in given:
        if name not in optimizer.hyper:
            takes = ", ".join(optimizer.hyper)
            raise _refuse(
                [name],
                f"{name} is not a hyper-parameter of the optimizer {req.optimizer!r} (it takes {takes}); "
                f"leave {name} out",
            )
    hyper = engine.optimizers.resolved(optimizer, given)
    wrong = optimizer.check(hyper)
    if wrong is not None:
        raise _refuse([], wrong)
    schedule = req.schedule
    return engine.SgdOptions(
        learning_rate=req.learning_rate,
        epochs=req.epochs,
        batch_size=req.batch_size,
        shuffle=req.shuffle,
        seed=req.seed,
        momentum=hyper.get("momentum", 0.0),
        nesterov=hyper.get("nesterov", False),
        weight_decay=hyper.get("weight_decay", 0.0),
        reduction=req.reduction,
        optimizer=req.optimizer,
        hyper=hyper,
        schedule=None if schedule is None else schedule.kind,
        schedule_params={} if schedule is None else schedule.model_dump(exclude={"kind"}),
    )


# ---------------------------------------------------------------- a posted state


def _parameters(plan: Plan, columns: bool) -> list[tuple[str, list[str | int], slice, tuple[int, ...]]]:
    """Every parameter block of theta as a state buffer lists it: its kind, its place in the
    buffer, its slice of theta and its shape."""
    blocks: list[tuple[str, list[str | int], slice, tuple[int, ...]]] = []
    if columns:
        blocks.append(("weights", ["weights"], slice(0, plan.n_weight_params), (plan.n_weight_params,)))
    else:
        blocks += [("weights", ["weights", k], w.params, w.shape) for k, w in enumerate(plan.weights)]
    units = [u for u in plan.units if u.role != "input"]
    blocks += [("biases", ["biases", u.id], plan.bias_params(u), (u.size,)) for u in units]
    if plan.has_responses:
        blocks += [("responses", ["responses", u.id], plan.response_params(u), (u.size,)) for u in units]
    return blocks


def _fits(array: np.ndarray, shape: tuple[int, ...]) -> bool:
    """An array fits a parameter of `shape` as the network's own arrays do: that shape, or a
    number where it has one element."""
    return array.shape == shape or (array.ndim == 0 and int(np.prod(shape)) == 1)


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def state(req: wire.SgdRequest, opt: engine.SgdOptions, plan: Plan) -> engine.OptimizerState | None:
    """The engine's state for the request's `state`, each buffer flat like theta; what does
    not fit the optimizer or the network is refused, naming the first mismatch."""
    given = req.state
    if given is None:
        return None
    if given.optimizer != req.optimizer:
        raise _refuse(
            ["state", "optimizer"],
            f"state.optimizer is {given.optimizer!r} but the request's optimizer is {req.optimizer!r}: "
            "a state continues the optimizer that made it",
        )
    optimizer = engine.OPTIMIZERS[req.optimizer]
    kept = optimizer.buffers(opt.hyper)
    for name in kept:
        if name not in given.buffers:
            raise _refuse(
                ["state", "buffers"],
                f"state.buffers has no {name!r}, which {req.optimizer} keeps with these hyper-parameters",
            )
    for name in given.buffers:
        if name not in kept:
            held = ", ".join(kept) or "none"
            raise _refuse(
                ["state", "buffers", name],
                f"state.buffers.{name} is not a buffer {req.optimizer} keeps with these hyper-parameters "
                f"(it keeps {held})",
            )
    columns = isinstance(req.network.weights, wire.WeightColumns)
    blocks = _parameters(plan, columns)
    buffers = {name: _buffer(plan, given.buffers[name], name, blocks, columns) for name in kept}
    return engine.OptimizerState(given.step, given.epoch, buffers, given.seed)


def _buffer(
    plan: Plan,
    given: wire.Buffer,
    name: str,
    blocks: list[tuple[str, list[str | int], slice, tuple[int, ...]]],
    columns: bool,
) -> np.ndarray:
    where: list[str | int] = ["state", "buffers", name]
    text = f"state.buffers.{name}"
    weights = given.weights
    if not columns and not isinstance(weights, list):
        raise _refuse([*where, "weights"], f"{text}.weights must list an array per weight")
    if columns and isinstance(weights, list) and not all(type(value) is float for value in weights):
        raise _refuse(
            [*where, "weights"], f"{text}.weights must be one column of numbers, as the weights are"
        )
    if not columns and len(weights) != len(plan.weights):  # type: ignore[arg-type]
        raise _refuse(
            [*where, "weights"],
            f"{text}.weights has {len(weights)} arrays; the network has "  # type: ignore[arg-type]
            f"{len(plan.weights)} weights",
        )
    parts = {"biases": given.biases, "responses": given.responses}
    for kind, entries in parts.items():
        has = kind == "biases" or plan.has_responses
        known = {u.id for u in plan.units if u.role != "input"} if has else set()
        for uid in entries:
            if uid not in known:
                raise _refuse(
                    [*where, kind, uid], f"{text}.{kind} names {uid!r}, not a unit with a {kind[:-2]}"
                )
    flat = np.empty(plan.n_params)
    for kind, loc, params, shape in blocks:
        at = [*where, *loc]
        if kind == "weights":
            value: Any = weights if columns else weights[loc[1]]  # type: ignore[index]
        else:
            value = parts[kind].get(str(loc[1]))
            if value is None:
                raise _refuse(at, f"{text}.{kind} has no entry for unit {loc[1]!r}")
        array = to_numpy(value, at)
        if not _fits(array, shape):
            where_text = ".".join(map(str, at))
            raise _refuse(
                at, f"{where_text} has shape {_shape(array.shape)}; the network's is {_shape(shape)}"
            )
        flat[params] = array.reshape(-1)
    return flat


# ---------------------------------------------------------------- the answer's state


def answer(plan: Plan, result: engine.Training, opt: engine.SgdOptions, columns: bool) -> dict[str, Any]:
    """The answer's `state`: the optimizer, its counters, each buffer cut like the network's
    arrays (numbers for single units; one column for weights posted as columns), and the
    shuffle's seed when there is one."""
    buffers: dict[str, Any] = {}
    for name, flat in result.state.buffers.items():
        body: dict[str, Any] = {"weights": [], "biases": {}, "responses": {}}
        for kind, loc, params, shape in _parameters(plan, columns):
            if kind == "weights" and columns:
                body["weights"] = flat[params]
                continue
            value = (
                flat.item(params.start) if params.stop - params.start == 1 else flat[params].reshape(shape)
            )
            if kind == "weights":
                body["weights"].append(value)
            else:
                body[kind][loc[1]] = value
        buffers[name] = body
    out: dict[str, Any] = {
        "optimizer": opt.optimizer,
        "step": result.state.step,
        "epoch": result.state.epoch,
        "buffers": buffers,
    }
    if result.state.seed is not None:
        out["seed"] = result.state.seed
    return out
