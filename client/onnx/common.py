"""What reading and writing ONNX share: the operators and opset, the error, the lazy import."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client._constants import install_hint
from client._errors import NetworkImportError

if TYPE_CHECKING:
    pass

#: the opset `to_onnx` writes (its Softmax normalises along one axis, not a flattened block)
OPSET = 17
#: where `to_onnx` keeps the network's loss, which ONNX has no place for
LOSS_KEY = "gradserve.loss"
#: what `from_onnx` reads, each with the attributes it understands
OPERATORS: dict[str, frozenset[str]] = {
    "Gemm": frozenset({"alpha", "beta", "transA", "transB"}),
    "MatMul": frozenset(),
    "Add": frozenset(),
    "Identity": frozenset(),
    "Constant": frozenset({"value", "value_float", "value_floats"}),
    "Relu": frozenset(),
    "LeakyRelu": frozenset({"alpha"}),
    "PRelu": frozenset(),
    "Sigmoid": frozenset(),
    "Tanh": frozenset(),
    "Softplus": frozenset(),
    "Softmax": frozenset({"axis"}),
}
#: ONNX activation operator <-> gradserve activation (LeakyRelu's alpha is the unit's slope)
ACTIVATION_OF = {
    "Relu": "relu",
    "LeakyRelu": "leaky_relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softplus": "softplus",
    "Softmax": "softmax",
}
OPERATOR_OF = {name: op for op, name in ACTIVATION_OF.items()}
#: leaky_relu's negative slope where the unit does not set one (the wire's default)
DEFAULT_SLOPE = 0.01
#: LeakyRelu's alpha where the node gives none: ONNX attributes are float32, so 0.01 in float32
ONNX_DEFAULT_ALPHA = 0.009999999776482582


class OnnxError(NetworkImportError):
    """A model `from_onnx` cannot read exactly, or a network `to_onnx` cannot write exactly."""


def load_onnx() -> Any:
    """The onnx package, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"ONNX import and export need the onnx package: {install_hint('onnx')}") from None
    return onnx
