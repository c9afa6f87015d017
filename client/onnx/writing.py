"""`to_onnx`: a network written as an ONNX model, exactly, or refused naming the unit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from client.arrays import to_numpy
from client.onnx.common import (
    DEFAULT_SLOPE,
    LOSS_KEY,
    OPERATOR_OF,
    OPSET,
    OnnxError,
    load_onnx,
)
from service.wire import Network, Unit

if TYPE_CHECKING:
    import numpy as np
    import onnx


def _matrix(value: Any, rows: int, columns: int, what: str) -> np.ndarray:
    array = to_numpy(value)
    if array.size != rows * columns or (array.ndim == 2 and array.shape != (rows, columns)) or array.ndim > 2:
        raise OnnxError(f"{what} has shape {list(array.shape)}, not [{rows}, {columns}]")
    return array.reshape(rows, columns)


def _edges(network: Network) -> list[tuple[str, str, Any]]:
    weights = network.weights
    if isinstance(weights, list):
        return [(w.source, w.target, w.value) for w in weights]
    values = to_numpy(weights.value).reshape(-1)
    if values.size != len(weights.source):
        raise OnnxError(f"the weight columns hold {len(weights.source)} ids and {values.size} values")
    return list(zip(weights.source, weights.target, values.tolist(), strict=True))


def _order(units: Mapping[str, Unit], edges: list[tuple[str, str, Any]]) -> list[str]:
    """The unit ids in a topological order (the order they are given where it leaves a choice)."""
    pending = {uid: 0 for uid in units}
    successors: dict[str, list[str]] = {uid: [] for uid in units}
    for source, target, _ in edges:
        pending[target] += 1
        successors[source].append(target)
    ready = [uid for uid, count in pending.items() if count == 0]
    order: list[str] = []
    while ready:
        uid = ready.pop(0)
        order.append(uid)
        for target in successors[uid]:
            pending[target] -= 1
            if pending[target] == 0:
                ready.append(target)
    if len(order) != len(units):
        stuck = sorted(uid for uid, count in pending.items() if count > 0)
        raise OnnxError(f"the weights form a cycle through {', '.join(map(repr, stuck))}")
    return order


def _unit_fields(unit: Unit) -> dict[str, Any]:
    """The unit's fields that ONNX must express, refused by name where it cannot."""
    activation = unit.resolved_activation
    if activation not in OPERATOR_OF and activation != "identity":
        raise OnnxError(f"unit {unit.id!r}: ONNX has no operator for the activation {activation!r}")
    slope = DEFAULT_SLOPE if unit.slope is None else unit.slope
    if unit.response is not None and not (to_numpy(unit.response) == 1.0).all():
        raise OnnxError(f"unit {unit.id!r}: a response other than 1: ONNX's layers have none")
    if unit.aggregation not in (None, "sum"):
        raise OnnxError(
            f"unit {unit.id!r}: the aggregation {unit.aggregation!r}: ONNX's layers sum their inputs"
        )
    return {"activation": activation, "slope": slope}


def to_onnx(network: Network | Mapping[str, Any]) -> onnx.ModelProto:
    """The network as an ONNX model (float64, opset 17) that computes the same outputs.

    One graph input per input unit and one graph output per output unit, named by their ids,
    each of shape [batch, size]; a unit's s is MatMuls of its sources' z by its weights, added
    up, plus its bias, and its z an activation node (Identity, Relu, LeakyRelu with alpha = the
    slope, Sigmoid, Tanh, Softplus, Softmax on the last axis). An activation or a field ONNX has
    no exact form for raises OnnxError naming the unit. The loss is kept in the model's
    metadata, so `from_onnx` gives the same network back.
    """
    ox = load_onnx()
    import numpy as np

    helper = ox.helper
    double = ox.TensorProto.DOUBLE
    net = network if isinstance(network, Network) else Network.model_validate(network)
    units = {unit.id: unit for unit in net.units}
    edges = _edges(net)
    for source, target, _ in edges:
        for uid in (source, target):
            if uid not in units:
                raise OnnxError(f"weight {source!r} -> {target!r} names no unit {uid!r}")
    incoming: dict[str, list[tuple[str, np.ndarray]]] = {uid: [] for uid in units}
    for source, target, value in edges:
        what = f"weight {source!r} -> {target!r}"
        incoming[target].append((source, _matrix(value, units[source].size, units[target].size, what)))

    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    inputs: list[onnx.ValueInfoProto] = []
    outputs: list[onnx.ValueInfoProto] = []

    def shape(unit: Unit) -> onnx.ValueInfoProto:
        info: onnx.ValueInfoProto = helper.make_tensor_value_info(unit.id, double, ["batch", unit.size])
        return info

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(ox.numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float64), name))
        return name

    for uid in _order(units, edges):
        unit = units[uid]
        if unit.role == "input":
            inputs.append(shape(unit))
            continue
        spec = _unit_fields(unit)
        if not incoming[uid]:
            raise OnnxError(
                f"unit {uid!r} has no incoming weight: its value does not depend on the inputs, "
                "and an ONNX tensor of it would have no batch axis"
            )
        final = f"{uid}/s"
        last = len(incoming[uid]) == 1 and unit.bias is None
        terms = []
        for source, matrix in incoming[uid]:
            term = final if last else f"{uid}/matmul:{source}"
            nodes.append(helper.make_node("MatMul", [source, constant(f"{source}->{uid}", matrix)], [term]))
            terms.append(term)
        total = terms[0]
        for k, term in enumerate(terms[1:], start=1):
            summed = final if k == len(terms) - 1 and unit.bias is None else f"{uid}/sum:{k}"
            nodes.append(helper.make_node("Add", [total, term], [summed]))
            total = summed
        if unit.bias is not None:
            bias = to_numpy(unit.bias)
            if bias.size != unit.size or bias.ndim > 1:
                raise OnnxError(f"unit {uid!r}: its bias has shape {list(bias.shape)}, not [{unit.size}]")
            nodes.append(helper.make_node("Add", [total, constant(f"{uid}/bias", bias.reshape(-1))], [final]))
        activation = spec["activation"]
        operator = "Identity" if activation == "identity" else OPERATOR_OF[activation]
        operands, attributes = [final], {}
        if operator == "Softmax":
            attributes["axis"] = -1
        elif operator == "LeakyRelu" and float(np.float32(spec["slope"])) == spec["slope"]:
            attributes["alpha"] = spec["slope"]
        elif operator == "LeakyRelu":  # alpha is float32, which the slope is not: PRelu takes float64
            operator = "PRelu"
            operands.append(constant(f"{uid}/slope", np.array(spec["slope"])))
        nodes.append(helper.make_node(operator, operands, [uid], **attributes))
        if unit.role == "output":
            outputs.append(shape(unit))

    graph = helper.make_graph(nodes, "gradserve", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", OPSET)]
    model: onnx.ModelProto = helper.make_model(
        graph, opset_imports=opsets, producer_name="gradserve", ir_version=8
    )  # IR 8 is opset 17's: readers as old as the opset can load it
    helper.set_model_props(model, {LOSS_KEY: net.loss})
    ox.checker.check_model(model, full_check=True)
    return model
