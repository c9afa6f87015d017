"""`from_onnx`: an ONNX model read into a network, exactly, or refused naming the node."""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING, Any

from client.onnx.common import (
    ACTIVATION_OF,
    DEFAULT_SLOPE,
    LOSS_KEY,
    ONNX_DEFAULT_ALPHA,
    OPERATORS,
    OnnxError,
    load_onnx,
)
from client.onnx.units import Const, Linear, Unit, Value, Z, network_of
from service.wire import Network

if TYPE_CHECKING:
    import numpy as np
    import onnx


def _describe(node: onnx.NodeProto, index: int) -> str:
    name = node.name or f"#{index}"
    return f"node {name!r} ({node.op_type})"


class _Reader:
    """Walks an ONNX graph once, in its (topological) node order, building units and weights."""

    def __init__(self, model: onnx.ModelProto) -> None:
        import numpy as np

        self.np = np
        self.onnx = load_onnx()
        self.model = model
        graph = model.graph
        self.opset = next(
            (entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 1
        )
        self.units: list[Unit] = []
        self.values: dict[str, Value] = {}
        self.materialised: dict[str, int] = {}
        input_names = {graph_input.name for graph_input in graph.input}
        # Before IR 4 every initialiser was listed among the inputs too; from IR 4 on, one that is
        # also an input is only a default that the caller may replace: not a constant.
        overridable = model.ir_version >= 4
        self.overridable: set[str] = set()
        for tensor in graph.initializer:
            if tensor.name in input_names and overridable:
                self.overridable.add(tensor.name)
            else:
                self.values[tensor.name] = Const(self._array(tensor, f"initialiser {tensor.name!r}"))
        for graph_input in graph.input:
            if graph_input.name not in self.values and graph_input.name not in self.overridable:
                self.values[graph_input.name] = Z(self._graph_input(graph_input))

    # -- arrays and shapes

    def _array(self, tensor: onnx.TensorProto, what: str) -> np.ndarray:
        kinds = {self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE}
        if tensor.data_type not in kinds:
            kind = self.onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
            raise OnnxError(f"{what} is {kind}: gradserve reads float32 and float64 tensors")
        try:
            raw = self.onnx.numpy_helper.to_array(tensor)
        except Exception as exc:  # external data not loaded, a truncated buffer
            raise OnnxError(f"{what} cannot be read: {exc}") from None
        value: np.ndarray = raw.astype(self.np.float64)  # float32 values are the float64 numbers they are
        if not self.np.isfinite(value).all():
            raise OnnxError(f"{what} holds a NaN or an infinity")
        return value

    def _graph_input(self, graph_input: onnx.ValueInfoProto) -> int:
        what = f"graph input {graph_input.name!r}"
        kind = graph_input.type.WhichOneof("value")
        tensor = graph_input.type.tensor_type
        if kind != "tensor_type":
            raise OnnxError(f"{what} is a {kind}, not a tensor")
        if tensor.elem_type not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE):
            dtype = self.onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
            raise OnnxError(f"{what} is {dtype}: gradserve reads float32 and float64 inputs")
        if not tensor.HasField("shape") or len(tensor.shape.dim) != 2:
            rank = len(tensor.shape.dim) if tensor.HasField("shape") else "unknown"
            raise OnnxError(f"{what} has rank {rank}: gradserve reads inputs of shape [batch, size]")
        last = tensor.shape.dim[1]
        size = last.dim_value if last.HasField("dim_value") and last.dim_value > 0 else None
        return self._new_unit(graph_input.name, "input", size)

    def _new_unit(self, name: str, role: str, size: int | None, **fields: Any) -> int:
        self.units.append(Unit(name, role, size, **fields))
        return len(self.units) - 1

    def _size(self, unit: int, where: str, wanted: int | None = None) -> int:
        """The width of a unit; a graph input of symbolic width takes `wanted`, its first use's."""
        known = self.units[unit].size
        if known is None:
            if wanted is None:
                raise OnnxError(
                    f"{where}: the width of graph input {self.units[unit].name!r} is symbolic "
                    "and nothing before here fixes it"
                )
            self.units[unit].size = wanted
            return wanted
        if wanted is not None and wanted != known:
            raise OnnxError(f"{where}: {self.units[unit].name!r} has width {known}, not {wanted}")
        return known

    def _bias(self, value: np.ndarray, size: int, where: str) -> np.ndarray:
        """A constant added to [batch, size] as a bias of shape [size] (broadcast as ONNX does)."""
        vector = value
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim == 0 or vector.shape == (1,):
            return self.np.full(size, float(vector.reshape(())), dtype=self.np.float64)
        if vector.shape == (size,):
            return vector
        raise OnnxError(
            f"{where}: a constant of shape {list(value.shape)} is no bias for a width of {size} "
            f"(one value, or [{size}], or [1, {size}])"
        )

    # -- values

    def _value(self, name: str, where: str) -> Value:
        if name in self.overridable:
            raise OnnxError(
                f"{where}: initialiser {name!r} is also a graph input, so a caller may replace it "
                "at run time: it is not a constant"
            )
        if name not in self.values:
            raise OnnxError(
                f"{where}: its input {name!r} is neither a graph input, an initialiser, a Constant "
                "nor the output of a node before it"
            )
        return self.values[name]

    def _linear(self, value: Value, where: str) -> Linear:
        """A value as a pre-activation: a unit's z is z @ I (exact: one product by 1, the rest by 0)."""
        if isinstance(value, Linear):
            return value
        if isinstance(value, Z):
            size = self._size(value.unit, where)
            return Linear({value.unit: self.np.eye(size)}, None, size, self.units[value.unit].name)
        raise OnnxError(f"{where}: this input is a constant, where gradserve needs activations")

    def _unit_of(self, value: Value, where: str) -> int:
        """The unit whose z a weight multiplies: a pre-activation becomes an identity unit once."""
        if isinstance(value, Z):
            return value.unit
        if isinstance(value, Linear):
            if value.name not in self.materialised:
                self.materialised[value.name] = self._new_unit(
                    value.name, "hidden", value.size, activation="identity", bias=value.bias,
                    inputs=dict(value.terms),
                )  # fmt: skip
            return self.materialised[value.name]
        raise OnnxError(
            f"{where}: the activations must be the left operand and the weights (a constant) the right one"
        )

    def _weights(self, value: Value, where: str, role: str) -> np.ndarray:
        if not isinstance(value, Const):
            raise OnnxError(
                f"{where}: its {role} must be an initialiser or a Constant (a weight matrix), "
                "not a computed tensor"
            )
        if value.value.ndim != 2:
            raise OnnxError(f"{where}: its {role} has shape {list(value.value.shape)}, not a matrix")
        return value.value

    # -- operators

    def read(self) -> Network:
        for index, node in enumerate(self.model.graph.node):
            where = _describe(node, index)
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPERATORS:
                domain = f" of domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
                raise OnnxError(
                    f"{where}: the operator {node.op_type}{domain} is not one gradserve reads "
                    f"({', '.join(OPERATORS)})"
                )
            attributes = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
            unknown = sorted(set(attributes) - OPERATORS[node.op_type])
            if unknown:
                raise OnnxError(f"{where}: attribute {unknown[0]!r} of {node.op_type} is not supported")
            if len(node.output) != 1:
                raise OnnxError(f"{where}: it has {len(node.output)} outputs, where one is expected")
            self.values[node.output[0]] = self._node(node, where, attributes)
        return self._network()

    def _node(self, node: onnx.NodeProto, where: str, attributes: dict[str, Any]) -> Value:
        op, out = node.op_type, node.output[0]
        if op == "Constant":
            return self._constant(attributes, where)
        inputs = [self._value(name, where) if name else None for name in node.input]
        if op == "Gemm":
            return self._gemm(inputs, attributes, where, out)
        if None in inputs:
            raise OnnxError(f"{where}: an input is left out, which {op} does not allow")
        present = [value for value in inputs if value is not None]
        expected = 2 if op in ("MatMul", "Add", "PRelu") else 1
        if len(present) != expected:
            raise OnnxError(f"{where}: it has {len(present)} inputs, where {op} takes {expected}")
        if op == "Identity":
            only = present[0]
            return Linear(only.terms, only.bias, only.size, out) if isinstance(only, Linear) else only
        if op == "MatMul":
            weights = self._weights(present[1], where, "second input")
            source = self._unit_of(present[0], where)
            self._size(source, where, weights.shape[0])
            return Linear({source: weights}, None, weights.shape[1], out)
        if op == "Add":
            return self._add(present[0], present[1], where, out)
        if op == "PRelu":
            attributes = {"alpha": self._slope(present[1], where)}
        return self._activation(op, present[0], attributes, where, out)

    def _slope(self, value: Value, where: str) -> float:
        """PRelu's slope: a constant, one number for every unit of the layer."""
        if not isinstance(value, Const):
            raise OnnxError(f"{where}: its slope must be an initialiser or a Constant")
        slopes = value.value.reshape(-1)
        if slopes.size == 0 or (slopes != slopes[0]).any():
            raise OnnxError(f"{where}: a slope per unit ({slopes.size} of them): a layer has one slope")
        return float(slopes[0])

    def _constant(self, attributes: dict[str, Any], where: str) -> Const:
        if len(attributes) != 1:
            raise OnnxError(f"{where}: a Constant needs exactly one value attribute")
        ((name, value),) = attributes.items()
        if name == "value":
            return Const(self._array(value, where))
        return Const(self.np.asarray(value, dtype=self.np.float64))

    def _gemm(self, inputs: list[Value | None], attributes: dict[str, Any], where: str, out: str) -> Value:
        if len(inputs) not in (2, 3) or inputs[0] is None or inputs[1] is None:
            raise OnnxError(f"{where}: Gemm takes A, B and an optional C")
        if attributes.get("transA", 0):
            raise OnnxError(
                f"{where}: transA=1 would multiply across the batch (A holds one sample a row); "
                "gradserve reads Gemm with the activations as A, untransposed"
            )
        weights = self._weights(inputs[1], where, "B")
        if attributes.get("transB", 0):
            weights = weights.T
        alpha = float(attributes.get("alpha", 1.0))
        beta = float(attributes.get("beta", 1.0))
        if alpha != 1.0:
            weights = alpha * weights  # Y = (alpha B')-weighted A: the weight is alpha B'
        source = self._unit_of(inputs[0], where)
        self._size(source, where, weights.shape[0])
        product = Linear({source: self.np.ascontiguousarray(weights)}, None, weights.shape[1], out)
        c = inputs[2] if len(inputs) == 3 else None
        if c is None:
            return product
        if isinstance(c, Const):
            return Linear(product.terms, self._bias(beta * c.value, product.size, where), product.size, out)
        if beta != 1.0:
            raise OnnxError(f"{where}: C is not a constant, so beta must be 1 (it is {beta})")
        return self._add(product, c, where, out)

    def _add(self, left: Value, right: Value, where: str, out: str) -> Value:
        if isinstance(left, Const) and isinstance(right, Const):
            try:
                return Const(left.value + right.value)
            except ValueError:
                raise OnnxError(f"{where}: the two constants do not broadcast") from None
        if isinstance(left, Const):
            left, right = right, left
        if isinstance(right, Const):
            linear = self._linear(left, where)
            bias = self._bias(right.value, linear.size, where)
            total = bias if linear.bias is None else linear.bias + bias
            return Linear(linear.terms, total, linear.size, out)
        # two branches: a unit with several inputs (a pre-activation is a sum of its terms)
        widths = [self._known_width(value) for value in (left, right)]
        width = next((w for w in widths if w is not None), None)
        for value in (left, right):
            if isinstance(value, Z):
                self._size(value.unit, where, width)
        a, b = self._linear(left, where), self._linear(right, where)
        if a.size != b.size:
            raise OnnxError(f"{where}: it adds widths {a.size} and {b.size}; gradserve does not broadcast")
        terms = dict(a.terms)
        for source, matrix in b.terms.items():
            terms[source] = terms[source] + matrix if source in terms else matrix
        biases = [bias for bias in (a.bias, b.bias) if bias is not None]
        summed = None if not biases else biases[0] if len(biases) == 1 else biases[0] + biases[1]
        return Linear(terms, summed, a.size, out)

    def _known_width(self, value: Value) -> int | None:
        if isinstance(value, Linear):
            return value.size
        if isinstance(value, Z):
            return self.units[value.unit].size
        return None

    def _activation(self, op: str, value: Value, attributes: dict[str, Any], where: str, out: str) -> Z:
        linear = self._linear(value, where)
        fields: dict[str, Any] = {}
        if op == "Softmax":
            # Before opset 13 the input is flattened to 2-D from `axis` on (default 1); from 13 on
            # `axis` (default -1) is the one axis normalised. On [batch, size] both are the last axis.
            axis = int(attributes.get("axis", 1 if self.opset < 13 else -1))
            if axis not in (1, -1):
                raise OnnxError(f"{where}: softmax over axis {axis}: gradserve normalises over a unit's size")
        if op in ("LeakyRelu", "PRelu"):
            # alpha is a float32 attribute, taken as the float64 number it is (as runtimes do)
            slope = float(attributes.get("alpha", ONNX_DEFAULT_ALPHA))
            if slope != DEFAULT_SLOPE:
                fields["slope"] = slope
        unit = self._new_unit(
            out, "hidden", linear.size, activation=ACTIVATION_OF.get(op, "leaky_relu"), bias=linear.bias,
            inputs=dict(linear.terms), **fields,
        )  # fmt: skip
        return Z(unit)

    # -- the network

    def _network(self) -> Network:
        graph = self.model.graph
        for graph_output in graph.output:
            where = f"graph output {graph_output.name!r}"
            value = self.values.get(graph_output.name)
            if value is None or isinstance(value, Const):
                raise OnnxError(f"{where} is {'a constant' if value is not None else 'never computed'}")
            if isinstance(value, Z) and self.units[value.unit].role == "hidden":
                unit = value.unit
            elif isinstance(value, Z):  # a graph input, or an output again: an identity copy
                size = self._size(value.unit, where)
                unit = self._new_unit(
                    graph_output.name, "hidden", size, activation="identity",
                    inputs={value.unit: self.np.eye(size)},
                )  # fmt: skip
            else:
                unit = self._unit_of(value, where)
            self.units[unit].role = "output"
            self.units[unit].name = graph_output.name  # samples' targets are keyed by this name
        for key, each in enumerate(self.units):
            self._size(key, f"graph input {each.name!r}")
        loss = next((entry.value for entry in self.model.metadata_props if entry.key == LOSS_KEY), None)
        return network_of(self.units, loss)


def from_onnx(model_or_path: onnx.ModelProto | str | PathLike[str] | bytes) -> Network:
    """A network from an ONNX model (a ModelProto, a file's path, or its bytes).

    The graph may hold Gemm, MatMul, Add (bias adds, and sums of branches: a unit with several
    inputs), Identity, Constant and the activations Relu, LeakyRelu, PRelu (one slope for the
    layer), Sigmoid, Tanh, Softplus and Softmax (last axis), with float32 or float64
    initialisers. Graph inputs (shape [batch, size]) become input units, graph outputs output
    units, each activation's output a unit and each weight matrix a weight; an output with no
    activation is an identity unit. Unit ids are the tensor names made valid and unique.
    Anything else raises OnnxError naming the node and its operator.
    """
    ox = load_onnx()
    if isinstance(model_or_path, ox.ModelProto):
        return _Reader(model_or_path).read()
    what = "these bytes" if isinstance(model_or_path, bytes) else repr(str(model_or_path))
    try:
        if isinstance(model_or_path, bytes):
            model = ox.load_from_string(model_or_path)
        else:
            model = ox.load(model_or_path)
    except OSError:
        raise
    except Exception as exc:  # protobuf's DecodeError, or onnx's on external data it cannot find
        raise OnnxError(f"{what} is not an ONNX model: {exc}") from None
    return _Reader(model).read()
