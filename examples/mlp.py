"""The bench's MLP (P2): 784-256-256-10, a batch of 256, its arrays sent and answered as raw
bytes (the binary framing); trained for a few steps, then its gradients' shapes.

    pip install '.[numpy]' && python mlp.py          (GRADSERVE_URL, else http://127.0.0.1:8000)
"""

import numpy as np

from client import Client, mlp, to_numpy

rng = np.random.default_rng(0)
net = mlp([784, 256, 256, 10], seed=0)
x = rng.random((256, 784))
y = np.eye(10)[rng.integers(0, 10, size=256)]
samples = {"inputs": {"input": x}, "targets": {"output": y}}

with Client() as gs:
    grads = gs.gradients(net, samples, include_units=False, array_encoding="binary")
    print([to_numpy(w.value).shape for w in grads.gradients.weights])
    trained = gs.sgd(net, samples, learning_rate=0.1, epochs=5, array_encoding="binary")
    print(f"loss {trained.loss_before:.4f} -> {trained.loss_after:.4f}")
