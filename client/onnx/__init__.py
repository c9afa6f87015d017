"""Networks from and to ONNX: `from_onnx(model_or_path)` and `to_onnx(network)`.

The `onnx` package is an optional extra (`pip install '.[onnx]'` from a checkout), imported only when
one of these is called. Both directions are exact: what they cannot express exactly (an
operator, an attribute, a shape) is refused with an `OnnxError` that names the node and its
operator, or the unit and its field.

from client import from_onnx, to_onnx
network = from_onnx("model.onnx")   # a Network, to post to any endpoint
model = to_onnx(network)            # an onnx.ModelProto, for onnxruntime or onnx.save
"""

from client.onnx.common import ACTIVATION_OF, OPERATOR_OF, OPERATORS, OPSET, OnnxError
from client.onnx.reading import from_onnx
from client.onnx.writing import to_onnx

__all__ = ["ACTIVATION_OF", "OPERATORS", "OPERATOR_OF", "OPSET", "OnnxError", "from_onnx", "to_onnx"]
