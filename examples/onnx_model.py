"""Write mlp.onnx: a 784-32-10 MLP (tanh, then a linear output) as an ONNX model, the kind
torch.onnx.export writes, for `from_onnx("mlp.onnx")` and `gradserve-client import onnx`.

    pip install '.[onnx]' && python onnx_model.py
"""

import onnx

from client import mlp, to_onnx

model = to_onnx(mlp([784, 32, 10], activation="tanh", seed=0))
onnx.save(model, "mlp.onnx")
print(f"mlp.onnx: {len(model.graph.node)} nodes")
