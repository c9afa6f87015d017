"""ONNX in and out (issue 16): models built with onnx.helper, read by client.from_onnx and
computed by a live server, against onnxruntime; networks written by client.to_onnx, computed by
onnxruntime, against the server; round trips; and refusals that name the node and operator."""

from __future__ import annotations

import inspect
import io
import json
import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import client  # noqa: E402
from client.cli import main as cli_main  # noqa: E402
from client.onnx import OnnxError, from_onnx, to_onnx  # noqa: E402

RTOL = 1e-12
#: the largest relative error of each comparison with the reference, printed at the end (-s)
ERRORS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if ERRORS:
        worst = max(ERRORS, key=ERRORS.__getitem__)
        print(f"\ntest_onnx: largest relative error {ERRORS[worst]:.3g} ({worst}), {len(ERRORS)} comparisons")


# ---------------------------------------------------------------- helpers


def model(
    nodes: list[Any],
    inputs: dict[str, list[Any]],
    outputs: dict[str, list[Any]],
    initializers: dict[str, np.ndarray],
    *,
    dtype: int = TensorProto.DOUBLE,
    opset: int = 17,
    check: bool = True,
) -> Any:
    """A checked ONNX model: graph inputs and outputs by name and shape, initialisers as given."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(name, dtype, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, dtype, shape) for name, shape in outputs.items()],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    if check:
        onnx.checker.check_model(made, full_check=True)
    return made


def as_float64(made: Any) -> Any:
    """The model with every float32 tensor float64 (the same numbers): what the service computes."""
    copy = onnx.ModelProto()
    copy.CopyFrom(made)
    graph = copy.graph
    for k, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            value = numpy_helper.to_array(tensor).astype(np.float64)
            graph.initializer[k].CopyFrom(numpy_helper.from_array(value, tensor.name))
    for node in graph.node:
        if node.op_type == "Constant":
            (attribute,) = node.attribute
            value = helper.get_attribute_value(attribute)
            value = numpy_helper.to_array(value) if attribute.name == "value" else np.asarray(value)
            del node.attribute[:]
            node.attribute.append(
                helper.make_attribute("value", numpy_helper.from_array(value.astype(np.float64)))
            )
    for info in [*graph.input, *graph.output]:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT:
            info.type.tensor_type.elem_type = TensorProto.DOUBLE
    return copy


def reference(made: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs in float64: onnxruntime, or for Softplus (onnxruntime has no float64
    kernel for it) the onnx package's reference evaluator. Both lose relative accuracy far out
    on the flat side (onnxruntime's float64 Sigmoid and the evaluator's log(exp(x) + 1) near 0),
    so the tests' pre-activations stay within a few units of 0."""
    made = as_float64(made)
    names = [output.name for output in made.graph.output]
    if any(node.op_type == "Softplus" for node in made.graph.node):
        results = ReferenceEvaluator(made).run(None, feeds)
    else:
        session = ort.InferenceSession(made.SerializeToString(), providers=["CPUExecutionProvider"])
        results = session.run(None, feeds)
    return dict(zip(names, results, strict=True))


def forward(
    http: httpx.Client, network: client.Network, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """/v1/forward's outputs, from a live server."""
    body = {
        "network": json.loads(network.model_dump_json(exclude_none=True)),
        "samples": {"inputs": {name: value.tolist() for name, value in inputs.items()}},
    }
    r = http.post("/v1/forward", json=body)
    assert r.status_code == 200, r.text
    return {name: np.asarray(value) for name, value in r.json()["outputs"].items()}


def assert_close(label: str, got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    worst = 0.0
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        scale = np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
        worst = max(worst, float(np.max(np.abs(got[name] - expected) / scale)))
    ERRORS[label] = worst
    assert worst <= RTOL, f"{label}: relative error {worst:.3g}"


def check_import(http: httpx.Client, label: str, made: Any, feeds: dict[str, np.ndarray]) -> client.Network:
    """from_onnx's network computed by the server against the model computed by the reference."""
    network = from_onnx(made)
    assert_close(label, forward(http, network, feeds), reference(made, feeds))
    return network


def check_export(
    http: httpx.Client, label: str, network: client.Network, feeds: dict[str, np.ndarray]
) -> Any:
    """to_onnx's model computed by the reference against the network computed by the server."""
    made = to_onnx(network)
    onnx.checker.check_model(made, full_check=True)
    assert made.opset_import[0].version >= 17
    assert_close(label, reference(made, feeds), forward(http, network, feeds))
    return made


rng = np.random.default_rng(16)


@pytest.fixture(autouse=True)
def _seeded(request: pytest.FixtureRequest) -> None:
    """Each test draws the same numbers however the tests are ordered or selected."""
    global rng
    rng = np.random.default_rng(zlib.crc32(request.node.name.encode()))


def normal(*shape: int) -> np.ndarray:
    return rng.normal(size=shape)


def unit(network: client.Network, uid: str) -> client.Unit:
    return next(u for u in network.units if u.id == uid)


# ---------------------------------------------------------------- import


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm_mlp_with_transb_alpha_and_beta(http: httpx.Client, dtype: type) -> None:
    """Gemm as the spec defines it (Y = alpha A B' + beta C, B transposed), float32 taken exactly."""
    weights = {
        "W1": normal(5, 4).astype(dtype),  # [out, in]: transB=1, as torch writes Linear
        "b1": normal(5).astype(dtype),
        "W2": normal(3, 5).astype(dtype),
        "b2": normal(1, 3).astype(dtype),  # [1, N] broadcasts as a bias too
    }
    made = model(
        [
            helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1, alpha=0.7, beta=1.3, name="fc1"),
            helper.make_node("Relu", ["h"], ["hidden"], name="relu"),
            helper.make_node("Gemm", ["hidden", "W2", "b2"], ["logits"], transB=1, alpha=-1.25, beta=0.5),
            helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
        ],
        {"x": ["N", 4]},
        {"y": ["N", 3]},
        weights,
        dtype=TensorProto.FLOAT if dtype is np.float32 else TensorProto.DOUBLE,
    )
    x = normal(7, 4).astype(dtype).astype(np.float64)
    network = check_import(http, f"gemm mlp {np.dtype(dtype).name}", made, {"x": x})
    assert [(u.id, u.role, u.size, u.activation) for u in network.units] == [
        ("x", "input", 4, None),
        ("hidden", "hidden", 5, "relu"),
        ("y", "output", 3, "softmax"),
    ]
    assert [(w.source, w.target) for w in network.weights] == [("x", "hidden"), ("hidden", "y")]
    # the weight is alpha B' and the bias beta C, each the float64 product of the stored numbers
    first = client.to_numpy(network.weights[0].value)
    np.testing.assert_array_equal(first, np.float64(np.float32(0.7)) * weights["W1"].astype(np.float64).T)
    bias = client.to_numpy(unit(network, "y").bias)
    np.testing.assert_array_equal(bias, np.float64(np.float32(0.5)) * weights["b2"].astype(np.float64)[0])
    if dtype is np.float32:  # and the float32 model itself agrees to float32's precision
        session = ort.InferenceSession(made.SerializeToString(), providers=["CPUExecutionProvider"])
        (y32,) = session.run(None, {"x": x.astype(np.float32)})
        np.testing.assert_allclose(forward(http, network, {"x": x})["y"], y32, rtol=1e-5, atol=1e-6)


def test_matmul_and_bias_add(http: httpx.Client) -> None:
    made = model(
        [
            helper.make_node("MatMul", ["x", "W1"], ["m1"]),
            helper.make_node("Add", ["b1", "m1"], ["s1"]),  # the bias on either side
            helper.make_node("Sigmoid", ["s1"], ["h"]),
            helper.make_node("MatMul", ["h", "W2"], ["m2"]),
            helper.make_node("Add", ["m2", "b2"], ["y"]),  # a linear output
        ],
        {"x": ["batch", 3]},
        {"y": ["batch", 2]},
        {"W1": normal(3, 6), "b1": normal(6), "W2": normal(6, 2), "b2": normal(2)},
    )
    network = check_import(http, "matmul + bias", made, {"x": normal(5, 3)})
    assert unit(network, "y").activation == "identity"
    assert unit(network, "y").role == "output"
    assert unit(network, "h").activation == "sigmoid"


def test_two_branches_added_make_a_unit_with_several_inputs(http: httpx.Client) -> None:
    """a = tanh(x A), b = relu(x B); y = sigmoid(a Wa + b Wb + x Wx + c) + x (a residual)."""
    made = model(
        [
            helper.make_node("Gemm", ["x", "A", "cA"], ["sa"]),
            helper.make_node("Tanh", ["sa"], ["a"]),
            helper.make_node("MatMul", ["x", "B"], ["sb"]),
            helper.make_node("Relu", ["sb"], ["b"]),
            helper.make_node("MatMul", ["a", "Wa"], ["ma"]),
            helper.make_node("MatMul", ["b", "Wb"], ["mb"]),
            helper.make_node("Add", ["ma", "mb"], ["sum1"], name="join"),
            helper.make_node("Gemm", ["x", "Wx", "sum1"], ["sum2"]),  # C a branch: beta 1 adds it
            helper.make_node("Add", ["sum2", "c"], ["s"]),
            helper.make_node("Sigmoid", ["s"], ["g"]),
            helper.make_node("Add", ["g", "x"], ["y"], name="residual"),
        ],
        {"x": ["N", 3]},
        {"y": ["N", 3]},
        {"A": normal(3, 4), "cA": normal(4), "B": normal(3, 2), "Wa": normal(4, 3), "Wb": normal(2, 3),
         "Wx": normal(3, 3), "c": normal(3)},
    )  # fmt: skip
    network = check_import(http, "two branches", made, {"x": normal(6, 3)})
    into = {(w.source, w.target) for w in network.weights}
    assert {("a", "g"), ("b", "g"), ("x", "g")} <= into
    assert {("g", "y"), ("x", "y")} <= into  # the residual: identity weights into an identity unit


@pytest.mark.parametrize(
    ("operator", "attributes"),
    [
        ("Relu", {}),
        ("LeakyRelu", {}),
        ("Sigmoid", {}),
        ("Tanh", {}),
        ("Softplus", {}),
        ("Softmax", {}),
        ("Softmax", {"axis": 1}),
        ("Identity", {}),
    ],
)
def test_every_activation(http: httpx.Client, operator: str, attributes: dict[str, Any]) -> None:
    made = model(
        [
            helper.make_node("Gemm", ["x", "W", "b"], ["s"], transB=1),
            helper.make_node(operator, ["s"], ["h"], **attributes),
            helper.make_node("MatMul", ["h", "V"], ["y"]),
        ],
        {"x": ["N", 3]},
        {"y": ["N", 2], "h": ["N", 4]},
        {"W": 2 * normal(4, 3), "b": normal(4), "V": normal(4, 2)},
    )
    network = check_import(http, operator, made, {"x": normal(9, 3)})
    expected = {"Identity": "identity"}.get(operator) or client.onnx.ACTIVATION_OF[operator]
    assert unit(network, "h").activation == expected
    assert unit(network, "h").role == "output"
    if operator == "LeakyRelu":  # ONNX's default alpha, 0.01, is a float32 attribute
        assert unit(network, "h").slope == float(np.float32(0.01))


@pytest.mark.parametrize("alpha", [0.2, 1.5])
def test_leaky_relu_alpha_is_the_slope(http: httpx.Client, alpha: float) -> None:
    made = model(
        [
            helper.make_node("MatMul", ["x", "W"], ["s"]),
            helper.make_node("LeakyRelu", ["s"], ["y"], alpha=alpha),
        ],
        {"x": ["N", 2]},
        {"y": ["N", 3]},
        {"W": normal(2, 3)},
    )
    network = check_import(http, f"LeakyRelu alpha {alpha}", made, {"x": normal(8, 2)})
    assert unit(network, "y").slope == float(np.float32(alpha))  # the float32 attribute's value


def test_prelu_with_one_float64_slope(http: httpx.Client) -> None:
    """PRelu with one slope for the layer is leaky_relu; 0.01 in float64 is the wire's default."""
    made = model(
        [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("PRelu", ["s", "a"], ["y"])],
        {"x": ["N", 2]},
        {"y": ["N", 3]},
        {"W": normal(2, 3), "a": np.full((1, 3), 0.01)},
    )
    network = check_import(http, "PRelu", made, {"x": normal(8, 2)})
    assert unit(network, "y").activation == "leaky_relu"
    per_unit = {"W": np.eye(2), "a": np.array([0.01, 0.02])}
    message = refused([helper.make_node("PRelu", ["x", "a"], ["y"], name="p")], per_unit)
    assert "node 'p' (PRelu)" in message
    assert "a slope per unit" in message


def test_opset_11_softmax_flattens_from_axis_1_which_is_the_last(http: httpx.Client) -> None:
    made = model(
        [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("Softmax", ["s"], ["y"])],
        {"x": ["N", 2]},
        {"y": ["N", 5]},
        {"W": 3 * normal(2, 5)},
        opset=11,
    )
    check_import(http, "Softmax opset 11", made, {"x": normal(4, 2)})


def test_a_symbolic_width_is_taken_from_the_first_weight(http: httpx.Client) -> None:
    made = model(
        [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("Tanh", ["s"], ["y"])],
        {"x": ["N", "features"]},
        {"y": ["N", 2]},
        {"W": normal(3, 2)},
    )
    network = check_import(http, "symbolic width", made, {"x": normal(2, 3)})
    assert unit(network, "x").size == 3


def test_constant_nodes_and_identity_are_weights_too(http: httpx.Client) -> None:
    made = model(
        [
            helper.make_node(
                "Constant", [], ["W"], value=numpy_helper.from_array(normal(2, 3).astype(np.float32))
            ),
            helper.make_node("Identity", ["W"], ["W_alias"]),
            helper.make_node("Constant", [], ["b"], value_floats=[0.5, -1.0, 2.0]),
            helper.make_node("MatMul", ["x", "W_alias"], ["s"]),
            helper.make_node("Add", ["s", "b"], ["t"]),
            helper.make_node("Identity", ["t"], ["y"]),
        ],
        {"x": ["N", 2]},
        {"y": ["N", 3]},
        {},
        dtype=TensorProto.FLOAT,
    )
    network = check_import(http, "Constant + Identity", made, {"x": normal(3, 2)})
    assert [u.id for u in network.units] == ["x", "y"]


def test_ids_are_sanitised_and_unique() -> None:
    long = "block/" + "x" * 80
    made = model(
        [
            helper.make_node("MatMul", ["in put", "W1"], ["/fc1/MatMul_output_0"]),
            helper.make_node("Relu", ["/fc1/MatMul_output_0"], [long]),
            helper.make_node("MatMul", [long, "W2"], ["m"]),
            helper.make_node("Sigmoid", ["m"], [long + "y"]),
            helper.make_node("MatMul", [long + "y", "W3"], ["m3"]),
            helper.make_node("Tanh", ["m3"], ["in_put"]),
        ],
        {"in put": ["N", 2]},
        {"in_put": ["N", 1]},
        {"W1": normal(2, 2), "W2": normal(2, 2), "W3": normal(2, 1)},
    )
    ids = [u.id for u in from_onnx(made).units]
    assert ids[0] == "in_put"  # the input first, as the model names it (made valid)
    assert ids[-1] == "in_put_2"  # the output next, unique
    assert len(set(ids)) == len(ids) == 4
    assert all(len(uid) <= 64 for uid in ids)
    assert ids[1] == "block_" + "x" * 58
    assert ids[2] == "block_" + "x" * 56 + "_2"


def test_paths_and_bytes_are_read(tmp_path: Path) -> None:
    made = model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], {"x": ["N", 1]}, {"y": ["N", 1]}, {"W": normal(1, 1)}
    )
    path = tmp_path / "m.onnx"
    onnx.save(made, path)
    assert from_onnx(path) == from_onnx(str(path)) == from_onnx(made.SerializeToString()) == from_onnx(made)
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 not a model")
    with pytest.raises(OnnxError, match="is not an ONNX model"):
        from_onnx(tmp_path / "junk.onnx")


def test_before_ir_4_initialisers_listed_as_inputs_are_constants(http: httpx.Client) -> None:
    made = model(
        [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("Tanh", ["s"], ["y"])],
        {"x": ["N", 2], "W": [2, 3]},
        {"y": ["N", 3]},
        {"W": normal(2, 3)},
        check=False,
    )
    made.ir_version = 3
    network = check_import(http, "IR 3", made, {"x": normal(3, 2)})
    assert [u.id for u in network.units] == ["x", "y"]


def test_a_graph_input_passed_out_is_copied_by_an_identity_unit(http: httpx.Client) -> None:
    made = model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], {"x": ["N", 2]}, {"y": ["N", 1], "x": ["N", 2]},
        {"W": normal(2, 1)},
    )  # fmt: skip
    network = from_onnx(made)
    assert [(u.id, u.role) for u in network.units] == [("x", "input"), ("y", "output"), ("x_2", "output")]
    x = normal(3, 2)
    np.testing.assert_array_equal(forward(http, network, {"x": x})["x_2"], x)


def test_importing_the_client_does_not_import_onnx() -> None:
    code = "import sys, client; sys.exit('onnx' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------- refusals


def refused(nodes: list[Any], initializers: dict[str, np.ndarray], **kwargs: Any) -> str:
    inputs = kwargs.pop("inputs", {"x": ["N", 2]})
    made = model(nodes, inputs, kwargs.pop("outputs", {"y": ["N", 2]}), initializers, **kwargs)
    with pytest.raises(OnnxError) as info:
        from_onnx(made)
    return str(info.value)


W22 = {"W": np.eye(2)}


def test_an_unknown_operator_is_refused_by_node_and_operator() -> None:
    message = refused(
        [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("Elu", ["s"], ["y"], name="act3")],
        W22,
    )
    assert "node 'act3' (Elu)" in message
    assert "Gemm" in message


def test_a_weight_computed_at_run_time_is_refused() -> None:
    message = refused(
        [helper.make_node("MatMul", ["x", "v"], ["y"], name="mm")], {}, inputs={"x": ["N", 2], "v": [2, 2]}
    )
    assert "node 'mm' (MatMul)" in message
    assert "initialiser or a Constant" in message


def test_an_initialiser_a_caller_may_override_is_not_a_constant() -> None:
    message = refused(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], W22, inputs={"x": ["N", 2], "W": [2, 2]}
    )
    assert "node 'mm' (MatMul)" in message
    assert "not a constant" in message
    assert "'W'" in message


def test_an_unresolved_symbolic_width_is_refused() -> None:
    message = refused([helper.make_node("Relu", ["x"], ["y"], name="r")], {}, inputs={"x": ["N", "F"]})
    assert "node 'r' (Relu)" in message
    assert "symbolic" in message


def test_transa_is_refused() -> None:
    message = refused([helper.make_node("Gemm", ["x", "W"], ["y"], transA=1, name="g")], W22)
    assert "node 'g' (Gemm)" in message
    assert "transA" in message


def test_softmax_across_the_batch_is_refused() -> None:
    message = refused(
        [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=0)],
        W22,
    )
    assert "(Softmax)" in message
    assert "axis 0" in message


def test_integer_initialisers_and_unknown_attributes_are_refused() -> None:
    integers = {"W": np.eye(2, dtype=np.int64)}  # (the checker refuses them too)
    message = refused([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], integers, check=False)
    assert "initialiser 'W'" in message
    assert "int64" in message
    legacy = [helper.make_node("Add", ["x", "W"], ["y"], name="add", broadcast=1, axis=1)]  # opset 6's
    message = refused(legacy, W22, opset=6)
    assert "node 'add' (Add)" in message
    assert "'axis'" in message


def test_a_bias_that_varies_along_the_batch_is_refused() -> None:
    message = refused(
        [helper.make_node("MatMul", ["x", "W"], ["s"]), helper.make_node("Add", ["s", "B"], ["y"], name="b")],
        {"W": np.eye(2), "B": np.ones((3, 2))},
    )
    assert "node 'b' (Add)" in message
    assert "[3, 2]" in message


def test_an_error_without_onnx_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'gradserve\[onnx\]'"):
        from_onnx("model.onnx")
    with pytest.raises(ImportError, match=r"gradserve\[onnx\]"):
        to_onnx(client.mlp([1, 1]))


# ---------------------------------------------------------------- export


def skip_dag() -> client.Network:
    """x (3) -> h1 (4, tanh) -> h2 (3, relu) -> y (2, softmax), with skips x -> h2 and x -> y,
    a second input z -> h2, an identity hidden unit with a second output q after it, and
    leaky_relu units of slopes 0.01, 0.25 and 0.3 on the ways from h1 to y."""
    return client.Network.model_validate(
        {
            "units": [
                {"id": "y", "role": "output", "size": 2, "activation": "softmax", "bias": normal(2).tolist()},
                {"id": "x", "role": "input", "size": 3},
                {"id": "z", "role": "input", "size": 1},
                {"id": "h1", "size": 4, "activation": "tanh", "bias": normal(4).tolist()},
                {"id": "h2", "size": 3, "activation": "relu"},
                {"id": "lin", "size": 2, "activation": "identity", "bias": [0.25, -0.5]},
                {"id": "q", "role": "output", "activation": "sigmoid"},
                {"id": "lk", "size": 2, "activation": "leaky_relu"},
                {"id": "lk2", "size": 3, "activation": "leaky_relu", "slope": 0.25},
                {"id": "lk3", "size": 2, "activation": "leaky_relu", "slope": 0.3},
            ],
            "weights": [
                {"source": "x", "target": "h1", "value": normal(3, 4).tolist()},
                {"source": "h1", "target": "h2", "value": normal(4, 3).tolist()},
                {"source": "x", "target": "h2", "value": normal(3, 3).tolist()},
                {"source": "z", "target": "h2", "value": normal(1, 3).tolist()},
                {"source": "h2", "target": "y", "value": normal(3, 2).tolist()},
                {"source": "x", "target": "y", "value": normal(3, 2).tolist()},
                {"source": "h1", "target": "lin", "value": normal(4, 2).tolist()},
                {"source": "lin", "target": "lk", "value": normal(2, 2).tolist()},
                {"source": "lk", "target": "y", "value": normal(2, 2).tolist()},
                {"source": "lin", "target": "q", "value": [[0.5], [-2.0]]},
                {"source": "h1", "target": "lk2", "value": normal(4, 3).tolist()},
                {"source": "lk2", "target": "lk3", "value": normal(3, 2).tolist()},
                {"source": "lk3", "target": "y", "value": normal(2, 2).tolist()},
            ],
            "loss": "half_squared_error",
        }
    )


def test_export_of_a_dag_with_skip_connections(http: httpx.Client) -> None:
    network = skip_dag()
    made = check_export(http, "export skip DAG", network, {"x": normal(6, 3), "z": normal(6, 1)})
    assert [i.name for i in made.graph.input] == ["x", "z"]
    assert sorted(o.name for o in made.graph.output) == ["q", "y"]
    operators = {node.op_type for node in made.graph.node}
    assert {"MatMul", "Add", "Tanh", "Relu", "Softmax", "Sigmoid", "Identity"} <= operators
    # LeakyRelu's alpha is float32: slope 0.25 is one, 0.01 and 0.3 are not, so they go as PRelu
    made_by = {node.output[0]: node.op_type for node in made.graph.node}
    assert (made_by["lk"], made_by["lk2"], made_by["lk3"]) == ("PRelu", "LeakyRelu", "PRelu")
    assert all(tensor.data_type == TensorProto.DOUBLE for tensor in made.graph.initializer)


@pytest.mark.parametrize(
    "activation", ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "softmax"]
)
def test_export_of_every_activation(http: httpx.Client, activation: str) -> None:
    network = client.mlp([3, 4, 2], activation=activation, output_activation="sigmoid", seed=3)
    check_export(http, f"export {activation}", network, {"input": 2 * normal(5, 3)})


def test_export_of_single_units_in_columns(http: httpx.Client) -> None:
    network = client.single_units(
        {"x->j": 0.5, "j->k": -0.3, "k->o": 0.8, "x->o": 0.1},
        inputs=["x"],
        outputs=["o"],
        biases={"j": 0.1},
        columns=True,
    )
    check_export(http, "export columns", network, {"x": normal(4, 1)})


def test_round_trip_gives_the_network_back() -> None:
    network = skip_dag().model_copy(update={"loss": "squared_error"})
    back = from_onnx(to_onnx(network))
    assert back.loss == "squared_error"

    def units(net: client.Network) -> dict[str, Any]:
        return {u.id: (u.role, u.size, u.resolved_activation, u.bias, u.slope) for u in net.units}

    def weights(net: client.Network) -> dict[tuple[str, str], Any]:
        assert isinstance(net.weights, list)
        return {(w.source, w.target): client.to_numpy(w.value).tolist() for w in net.weights}

    assert units(back) == units(network)
    assert weights(back) == weights(network)


def test_export_refusals_name_the_unit() -> None:
    lonely = client.Network.model_validate(
        {"units": [{"id": "x", "role": "input"}, {"id": "c", "role": "output", "bias": 1.0}], "weights": []}
    )
    with pytest.raises(OnnxError, match="unit 'c' has no incoming weight"):
        to_onnx(lonely)
    wrong = client.Network.model_validate(
        {
            "units": [{"id": "x", "role": "input", "size": 2}, {"id": "o", "role": "output"}],
            "weights": [{"source": "x", "target": "o", "value": [1.0, 2.0, 3.0]}],
        }
    )
    with pytest.raises(OnnxError, match=r"weight 'x' -> 'o' has shape \[3\], not \[2, 1\]"):
        to_onnx(wrong)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"activation": "neat_sin"}, "unit 'o': ONNX has no operator for the activation 'neat_sin'"),
        ({"activation": "elu"}, "unit 'o': ONNX has no operator for the activation 'elu'"),
        ({"response": [1.0, 2.0]}, "unit 'o': a response other than 1"),
        ({"aggregation": "mean"}, "unit 'o': the aggregation 'mean'"),
    ],
)
def test_what_onnx_lacks_is_refused_by_name(fields: dict[str, Any], message: str) -> None:
    network = client.Network.model_validate(
        {
            "units": [
                {"id": "x", "role": "input", "size": 2},
                {"id": "o", "role": "output", "size": 2, **fields},
            ],
            "weights": [{"source": "x", "target": "o", "value": [[1.0, 0.0], [0.0, 1.0]]}],
        }
    )
    with pytest.raises(OnnxError, match=re.escape(message)):
        to_onnx(network)


def test_a_response_of_ones_and_the_sum_change_nothing_and_are_written(http: httpx.Client) -> None:
    network = client.Network.model_validate(
        {
            "units": [
                {"id": "x", "role": "input", "size": 2},
                {"id": "o", "role": "output", "size": 2, "activation": "tanh", "response": [1.0, 1.0],
                 "aggregation": "sum"},
            ],
            "weights": [{"source": "x", "target": "o", "value": [[1.0, -0.5], [0.25, 1.0]]}],
        }
    )  # fmt: skip
    check_export(http, "export response 1", network, {"x": normal(3, 2)})


# ---------------------------------------------------------------- the CLI, and torch


def test_cli_import_and_export(tmp_path: Path, http: httpx.Client) -> None:
    network = skip_dag()
    (tmp_path / "net.json").write_text(json.dumps({"network": json.loads(network.model_dump_json())}))
    assert cli_main(["export", "onnx", str(tmp_path / "net.json"), "-o", str(tmp_path / "m.onnx")]) == 0
    out = io.StringIO()
    assert cli_main(["import", "onnx", str(tmp_path / "m.onnx")], stdout=out) == 0
    assert client.Network.model_validate_json(out.getvalue()) == from_onnx(to_onnx(network))
    (tmp_path / "bad.onnx").write_bytes(b"nonsense")
    assert cli_main(["import", "onnx", str(tmp_path / "bad.onnx")], stdout=io.StringIO()) == 1
    assert cli_main(["import", "onnx", str(tmp_path / "missing.onnx")], stdout=io.StringIO()) == 1


def test_cli_refusals_exit_1_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made = model([helper.make_node("Elu", ["x"], ["y"], name="e")], {"x": ["N", 2]}, {"y": ["N", 2]}, {})
    onnx.save(made, tmp_path / "elu.onnx")
    assert cli_main(["import", "onnx", str(tmp_path / "elu.onnx")], stdout=io.StringIO()) == 1
    assert "node 'e' (Elu)" in capsys.readouterr().err


# torch's TorchScript exporter warns that it, and functions it calls, are deprecated (the dynamo
# exporter needs onnxscript, not installed): their warnings are torch's, not this project's
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torch_model_exported_by_torch_onnx(http: httpx.Client, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6),
        torch.nn.LeakyReLU(0.25),  # a float32 number: ONNX's alpha holds it exactly
        torch.nn.Linear(6, 3), torch.nn.Softmax(dim=-1),
    ).double()  # fmt: skip
    path = tmp_path / "torch.onnx"
    # the TorchScript exporter (torch >= 2.5 would pick the dynamo one by default)
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(
        net, (torch.zeros(2, 4, dtype=torch.float64),), str(path), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, **legacy,
    )  # fmt: skip
    made = onnx.load(path)
    x = normal(5, 4)
    network = check_import(http, "torch", made, {"x": x})
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(forward(http, network, {"x": x})["y"], expected, rtol=1e-12)
