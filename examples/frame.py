# frame.py: writes body.bin and prints the length of its JSON document
import json, struct

x = [1.5]
ref = {"datatype": "FP64", "shape": [len(x)], "parameters": {"binary_data_size": 8 * len(x)}}
units = [{"id": "x", "role": "input"}, {"id": "j"}, {"id": "k"}, {"id": "o", "role": "output"}]
weights = [{"source": "x", "target": "j", "value": 0.5}, {"source": "j", "target": "k", "value": -0.3},
           {"source": "k", "target": "o", "value": 0.8}]
request = {"network": {"units": units, "weights": weights},
           "samples": {"inputs": {"x": ref}, "targets": {"o": [0.25]}}}
document = json.dumps(request).encode()
with open("body.bin", "wb") as body:
    body.write(document + struct.pack(f"<{len(x)}d", *x))
print(len(document))
