"""Adding an activation, a loss or a compute endpoint is done in the places the README's
"Adding an activation or a loss" and "Adding an endpoint" name, and nowhere else.

Each test copies `service/` aside, makes exactly those edits to the copy's text (each anchored
on text found once), and starts a real server from the copy (`service.launcher.start_server`,
in a subprocess whose `service` is the copy): the new entry is then validated, costed,
computed and listed through the real path. Were a second place needed (a table of costs, a
list of names, a branch on an endpoint's name), the copy would refuse the request or fail.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import engine

ROOT = Path(__file__).resolve().parents[1]
EPS = 1e-6

pytestmark = pytest.mark.slow  # (each starts a server from a copy of the code)

Edit = tuple[str, str, str]  # (file in service/, text found exactly once, text it becomes)


def _copy_with(tmp_path: Path, edits: list[Edit], new_files: dict[str, str] | None = None) -> Path:
    """A copy of `service/` under `tmp_path` with these edits made (and these files added)."""
    shutil.copytree(ROOT / "service", tmp_path / "service", ignore=shutil.ignore_patterns("__pycache__"))
    for name, anchor, replacement in edits:
        path = tmp_path / "service" / name
        text = path.read_text()
        assert text.count(anchor) == 1, f"{name}: the anchor {anchor!r} is not found exactly once"
        path.write_text(text.replace(anchor, replacement))
    for name, text in (new_files or {}).items():
        (tmp_path / "service" / name).write_text(textwrap.dedent(text))
    return tmp_path


DRIVER_HEAD = """
import json, sys
import httpx
import service
from service.launcher import start_server

assert service.__file__.startswith(sys.argv[1]), service.__file__  # the copy, not the checkout
facts = {}
"""


def _run(root: Path, body: str) -> dict[str, Any]:
    """Run `body` (after DRIVER_HEAD) with the copy at `root` as `service`; what it put in `facts`."""
    script = root / "driver.py"
    script.write_text(DRIVER_HEAD + textwrap.dedent(body) + "\nprint(json.dumps(facts))\n")
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(script), str(root)], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-4000:]
    facts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


def _chain(activation: str = "tanh", loss: str = "half_squared_error") -> dict[str, Any]:
    """x -> h (2 units, `activation`) -> o, trained on `loss`; a batch of 3."""
    return {
        "network": {
            "units": [
                {"id": "x", "role": "input"},
                {"id": "h", "size": 2, "activation": activation, "bias": [0.1, -0.3]},
                {"id": "o", "role": "output", "activation": "sigmoid", "bias": 0.2},
            ],
            "weights": [
                {"source": "x", "target": "h", "value": [[0.7, -1.3]]},
                {"source": "h", "target": "o", "value": [[0.9], [-0.4]]},
            ],
            "loss": loss,
        },
        "samples": {"inputs": {"x": [0.5, -1.5, 2.0]}, "targets": {"o": [0.2, 0.9, 0.4]}},
    }


def _numeric_gradients(request: dict[str, Any], act: Any, loss: Any) -> list[float]:
    """Central differences of the mean loss of `_chain`'s network, written here in NumPy with
    the activation `act` and the per-element loss `loss(z, y)`: w_xh, w_ho, b_h, b_o."""
    x = np.array(request["samples"]["inputs"]["x"])[:, None]
    y = np.array(request["samples"]["targets"]["o"])[:, None]
    net = request["network"]
    theta = np.array(
        [
            *net["weights"][0]["value"][0],
            *(row[0] for row in net["weights"][1]["value"]),
            *net["units"][1]["bias"],
            net["units"][2]["bias"],
        ]
    )

    def mean_loss(t: np.ndarray) -> float:
        h = act(x @ t[0:2][None, :] + t[4:6])
        z = 1 / (1 + np.exp(-(h @ t[2:4][:, None] + t[6])))
        return float(loss(z, y).sum(axis=1).mean())

    steps = np.eye(theta.size) * EPS
    return [(mean_loss(theta + e) - mean_loss(theta - e)) / (2 * EPS) for e in steps]


def _served_gradients(answer: dict[str, Any]) -> list[float]:
    weights = {(w["source"], w["target"]): np.array(w["value"]) for w in answer["gradients"]["weights"]}
    biases = answer["gradients"]["biases"]
    return [
        *weights["x", "h"].ravel(),
        *weights["h", "o"].ravel(),
        *np.ravel(biases["h"]),
        *np.ravel(biases["o"]),
    ]


# ---------------------------------------------------------------- an activation

SOFTSIGN_RULES = """
def _softsign(s: Array, out: Array | None = None, segments: Segments | None = None) -> Array:
    return np.divide(s, np.add(np.abs(s), 1.0), out=out)


def _softsign_derivative(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.reciprocal(np.square(np.add(np.abs(s), 1.0)), out=out)


def _softsign_second(s: Array, z: Array, out: Array | None = None) -> Array:
    return np.multiply(np.sign(s), -2.0 / (np.abs(s) + 1.0) ** 3, out=out)


"""

#: the README's two places: an entry (its rules and costs) in the registry, its name in the wire
SOFTSIGN: list[Edit] = [
    (
        "engine/activations.py",
        "#: every activation, in the order the wire and /v1/info list them\n",
        SOFTSIGN_RULES + "#: every activation, in the order the wire and /v1/info list them\n",
    ),
    (
        "engine/activations.py",
        "    )\n}\n\n#: the activations computed entry by entry",
        "        elementwise(\n"
        '            "softsign", _softsign, _softsign_derivative, "softsign\'",\n'
        '            r"\\mathrm{softsign}\'", _softsign_second, ns=(41.0, 43.0),\n'
        "        ),\n"
        "    )\n}\n\n#: the activations computed entry by entry",
    ),
    ("wire/base.py", '    "neat_inv",\n]', '    "neat_inv",\n    "softsign",\n]'),
]


def test_an_activation_is_one_registry_entry_with_its_costs_and_its_wire_name(tmp_path: Path) -> None:
    root = _copy_with(tmp_path, SOFTSIGN)
    request = _chain("softsign")
    single = _chain("softsign")  # explain lists paths through single units: h of size 1
    single["network"]["units"][1].update(size=1, bias=[0.1])
    single["network"]["weights"] = [
        {"source": "x", "target": "h", "value": 0.7},
        {"source": "h", "target": "o", "value": 0.9},
    ]
    facts = _run(
        root,
        f"""
        from service import engine, wire
        from service.pipeline import costs
        request, single = {request!r}, {single!r}
        shape = lambda r: costs.shape_of(wire.Network.model_validate(r["network"]), None)
        plain = {{**request, "network": {{**request["network"], "units": [
            {{**u, "activation": "identity"}} if u["id"] == "h" else u for u in request["network"]["units"]
        ]}}}}
        facts["forward_ns"] = shape(request).forward_ns - shape(plain).forward_ns
        facts["backward_ns"] = shape(request).backward_ns - shape(plain).backward_ns
        identity = engine.ACTIVATIONS["identity"]
        facts["identity"] = [identity.forward_ns, identity.backward_ns]
        server = start_server()
        try:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                facts["info"] = http.get("/v1/info").json()["activations"]
                gradients = http.post("/v1/gradients", json=request)
                facts["gradients"] = [gradients.status_code, gradients.json()]
                check = http.post("/v1/check", json=request)
                facts["check"] = [check.status_code, check.json()]
                vector = {{"weights": [[[1.0, 0.5]], [[0.2], [-1.0]]], "biases": {{"h": [0.3, 0.1]}}}}
                hvp = {{**request, "vector": vector}}
                facts["hvp"] = http.post("/v1/hvp", json=hvp).status_code
                explain = http.post("/v1/explain", json=single)
                facts["explain"] = [explain.status_code, explain.text]
                other = {{**request, "network": {{**request["network"], "units": [
                    {{**u, "activation": "softsign2"}} for u in request["network"]["units"]
                ]}}}}
                facts["unknown"] = http.post("/v1/gradients", json=other).status_code
        finally:
            server.stop()
        """,
    )
    identity_forward, identity_backward = facts["identity"]
    assert facts["forward_ns"] == pytest.approx(2 * (41.0 - identity_forward))  # h counts 2 units
    assert facts["backward_ns"] == pytest.approx(2 * (43.0 - identity_backward))
    assert facts["info"][-1] == "softsign"
    status, answer = facts["gradients"]
    assert status == 200, answer

    def softsign(s: np.ndarray) -> np.ndarray:
        return s / (1 + np.abs(s))

    def half_squared(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 0.5 * (z - y) ** 2

    numeric = _numeric_gradients(request, softsign, half_squared)
    np.testing.assert_allclose(_served_gradients(answer), numeric, rtol=1e-6, atol=1e-9)
    assert facts["check"][0] == 200
    assert facts["check"][1]["ok"] is True
    assert facts["hvp"] == 200  # its second derivative given: /v1/hvp takes it
    assert facts["explain"][0] == 200
    assert "softsign'" in facts["explain"][1]
    assert facts["unknown"] == 422


# ---------------------------------------------------------------- a loss

LOG_COSH_RULES = """
def _log_cosh(out: Outputs) -> Array:
    d = np.abs(out.z - out.y)
    return (d + np.log1p(np.exp(-2.0 * d)) - np.log(2.0)).sum(axis=1)


def _log_cosh_gradient(out: Outputs) -> Array:
    return np.tanh(out.z - out.y)


def _log_cosh_curvature(out: Outputs, r: Array) -> Array:
    return (1.0 - np.tanh(out.z - out.y) ** 2) * r


"""

LOG_COSH: list[Edit] = [
    (
        "engine/losses.py",
        "#: every loss, in the order the wire and /v1/info list them\n",
        LOG_COSH_RULES + "#: every loss, in the order the wire and /v1/info list them\n",
    ),
    (
        "engine/losses.py",
        "        huber(DEFAULT_HUBER_DELTA),\n    )\n}",
        "        huber(DEFAULT_HUBER_DELTA),\n"
        '        Loss("log_cosh", _log_cosh, _log_cosh_gradient, _log_cosh_curvature, output_ns=23.0),\n'
        "    )\n}",
    ),
    ("wire/base.py", '"binary_cross_entropy", "huber"]', '"binary_cross_entropy", "huber", "log_cosh"]'),
]


def test_a_loss_is_one_registry_entry_with_its_cost_and_its_wire_name(tmp_path: Path) -> None:
    root = _copy_with(tmp_path, LOG_COSH)
    request = _chain("tanh", "log_cosh")
    facts = _run(
        root,
        f"""
        from service import wire
        from service.pipeline import costs
        request = {request!r}
        shape = lambda r: costs.shape_of(wire.Network.model_validate(r["network"]), None)
        facts["loss_ns"] = shape(request).loss_ns
        server = start_server()
        try:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                facts["info"] = http.get("/v1/info").json()["losses"]
                gradients = http.post("/v1/gradients", json=request)
                facts["gradients"] = [gradients.status_code, gradients.json()]
                check = http.post("/v1/check", json=request)
                facts["check"] = [check.status_code, check.json()]
                sgd = http.post("/v1/sgd", json={{**request, "epochs": 3, "learning_rate": 0.1}})
                facts["sgd"] = sgd.status_code
        finally:
            server.stop()
        """,
    )
    assert facts["loss_ns"] == pytest.approx(23.0)  # one output entry, at the entry's cost
    assert facts["info"][-1] == "log_cosh"
    status, answer = facts["gradients"]
    assert status == 200, answer

    def log_cosh(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.log(np.cosh(z - y))

    numeric = _numeric_gradients(request, np.tanh, log_cosh)
    np.testing.assert_allclose(_served_gradients(answer), numeric, rtol=1e-6, atol=1e-9)
    assert facts["check"][0] == 200
    assert facts["check"][1]["ok"] is True
    assert facts["sgd"] == 200


# ---------------------------------------------------------------- an endpoint

SAMPLE_LOSSES_MODULE = '''
    """`/v1/sample_losses`: each sample's loss E_n, unreduced."""

    from __future__ import annotations

    from collections.abc import Mapping

    from service import engine, wire
    from service.endpoints import compute
    from service.settings import Limits


    def sample_losses(req: wire.ForwardRequest, limits: Limits) -> compute.JsonObject:
        plan, batch = compute.prepare(req.network, req.samples, need_targets=True)
        assert batch.y is not None
        values = engine.forward(plan, plan.theta, batch.x)
        compute.check_values(plan, values)
        return {"losses": engine.sample_losses(plan, values, batch.y).tolist()}


    def total(req: wire.ForwardRequest, limits: Limits) -> compute.JsonObject:
        return {"losses": [sum(sample_losses(req, limits)["losses"])]}


    def variant(query: Mapping[str, str]) -> str:
        """?total=true: the losses summed."""
        return "total=true" if query["total"] == "true" else ""


    VARIANTS = {"total=true": total}
'''

#: the README's three places: a wire entry (with its answer's model), a handler row, a module
SAMPLE_LOSSES: list[Edit] = [
    (
        "wire/__init__.py",
        "#: every compute endpoint, by name:",
        "class SampleLossesResponse(ResponseModel):\n"
        "    losses: list[float]\n\n\n"
        "#: every compute endpoint, by name:",
    ),
    (
        "wire/__init__.py",
        "    for e in (\n        Endpoint(\n",
        "    for e in (\n"
        '        Endpoint("sample_losses", ForwardRequest, SampleLossesResponse, "Each sample\'s loss",\n'
        '            query=(QueryParameter("total", ("false", "true"), "false", "the losses summed"),)),\n'
        "        Endpoint(\n",
    ),
    (
        "pipeline/handlers.py",
        "from service.endpoints import compute, explain, gradcheck, hvp, render\n",
        "from service.endpoints import compute, explain, gradcheck, hvp, render, sample_losses\n",
    ),
    (
        "pipeline/handlers.py",
        "    for h in (\n",
        "    for h in (\n"
        '        Handler(_W["sample_losses"], sample_losses.sample_losses, costs.forward, inline=True,\n'
        '            checks=lambda req, s, limits: limit(limits, "max_epochs", s.batch, "the batch"),\n'
        "            variant=sample_losses.variant, variants=sample_losses.VARIANTS),\n",
    ),
]


def test_an_endpoint_is_one_wire_entry_one_handler_row_and_one_module(tmp_path: Path) -> None:
    root = _copy_with(tmp_path, SAMPLE_LOSSES, {"endpoints/sample_losses.py": SAMPLE_LOSSES_MODULE})
    request = _chain()
    facts = _run(
        root,
        f"""
        request = {request!r}
        server = start_server(env={{"GRADSERVE_MAX_BATCH": "4", "GRADSERVE_MAX_EPOCHS": "3"}})
        samples = lambda n: {{"inputs": {{"x": [1.0] * n}}, "targets": {{"o": [0.0] * n}}}}
        try:
            with httpx.Client(base_url=server.url, timeout=120) as http:
                answer = http.post("/v1/sample_losses", json=request)
                facts["answer"] = [answer.status_code, answer.json()]
                facts["forward"] = http.post("/v1/forward", json=request).json()["loss"]
                summed = http.post("/v1/sample_losses?total=true", json=request)
                facts["total"] = [summed.status_code, summed.json()]
                facts["bad_query"] = http.post("/v1/sample_losses?total=maybe", json=request).status_code
                own = http.post("/v1/sample_losses", json={{**request, "samples": samples(4)}})
                facts["own_limit"] = own.json()
                binary = http.post("/v1/sample_losses", json={{**request, "array_encoding": "base64"}})
                facts["base64"] = binary.status_code
                facts["get"] = http.get("/v1/sample_losses").status_code
                facts["invalid"] = http.post("/v1/sample_losses", json={{"network": {{}}}}).status_code
                over = http.post("/v1/sample_losses", json={{**request, "samples": samples(5)}})
                facts["over"] = [over.status_code, over.json()["detail"]]
                document = http.get("/openapi.json").json()
                facts["path"] = document["paths"].get("/v1/sample_losses")
                facts["schemas"] = sorted(document["components"]["schemas"])
        finally:
            server.stop()
        """,
    )
    status, answer = facts["answer"]
    assert status == 200, answer
    assert len(answer["losses"]) == 3
    assert np.mean(answer["losses"]) == pytest.approx(facts["forward"], rel=1e-12)
    assert facts["total"][0] == 200
    assert facts["total"][1]["losses"] == pytest.approx([sum(answer["losses"])], rel=1e-12)
    assert facts["bad_query"] == 422
    assert "max_epochs" in facts["own_limit"]["detail"]  # its row's own check: a batch of 4, over 3
    assert facts["base64"] == 200
    assert facts["get"] == 405
    assert facts["invalid"] == 422
    assert facts["over"][0] == 413
    assert "max_batch" in facts["over"][1]
    path = facts["path"]
    assert path is not None
    assert path["post"]["summary"] == "Each sample's loss"
    assert [p["name"] for p in path["post"]["parameters"]] == ["total"]
    assert "SampleLossesResponse" in facts["schemas"]


# ---------------------------------------------------------------- no second table


def _keyed_by(path: Path, names: set[str]) -> list[int]:
    """The lines of `path` holding a dict (a literal or dict(...)) keyed by one of `names`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            keys = [k.arg for k in node.keywords]
        else:
            continue
        if any(isinstance(k, str) and k in names for k in keys):
            lines.append(node.lineno)
    return lines


def test_no_module_of_the_service_but_the_registries_holds_a_table_keyed_by_their_names() -> None:
    """What an activation or a loss costs, or how it is drawn, explained or checked, is in its
    registry entry: a table keyed by their names elsewhere would be a second place to edit.
    (The client's neat-python and ONNX readers map those formats' own names to ours.)"""
    names = set(engine.ACTIVATIONS) | set(engine.LOSSES)
    registries = {ROOT / "service/engine/activations.py", ROOT / "service/engine/losses.py"}
    found = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "service").rglob("*.py"))
        if path not in registries and (lines := _keyed_by(path, names))
    }
    assert found == {}
