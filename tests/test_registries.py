"""The activation and loss registries: each entry's derivatives against finite differences,
the engine's passes generic over them, and every other list of names agreeing with them."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from service import engine, wire
from service.endpoints import explain
from service.engine.activations import Activation, elementwise
from service.engine.losses import Outputs
from service.pipeline import handlers
from service.settings import Limits

EPS = 1e-6
CLOSE = {"rtol": 1e-6, "atol": 1e-8}


def test_the_wire_names_exactly_the_registries_entries_in_their_order() -> None:
    assert tuple(engine.ACTIVATIONS) == wire.ACTIVATIONS
    assert tuple(engine.LOSSES) == wire.LOSSES


def test_the_registries_entries_are_whole() -> None:
    for name, activation in engine.ACTIVATIONS.items():
        assert activation.name == name
        assert (activation.text is None) == (activation.latex is None)
        assert "{g}" in activation.delta_rule
    for name, loss in engine.LOSSES.items():
        assert loss.name == name
        assert loss.accepts is None or set(loss.accepts) <= set(engine.ACTIVATIONS)
        assert not loss.fused or loss.accepts is not None  # dE/ds is the pair's, so the pair is fixed


def _segments_for(activation: Activation) -> engine.Segments | None:
    return engine.segments([3, 2]) if activation.segmented else None


@pytest.mark.parametrize("name", list(engine.ACTIVATIONS))
def test_each_vjp_is_the_transposed_jacobian_times_g(name: str) -> None:
    activation = engine.ACTIVATIONS[name]
    seg = _segments_for(activation)
    rng = np.random.default_rng(1)
    s, g = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))  # unit-major: 5 entries, batch 4
    z = activation.forward(s, None, seg)
    got = np.empty_like(s)
    activation.vjp(g, s, z, got, seg)
    numeric = np.empty_like(s)
    for i, n in np.ndindex(s.shape):
        step = np.zeros_like(s)
        step[i, n] = EPS
        up, down = activation.forward(s + step, None, seg), activation.forward(s - step, None, seg)
        numeric[i, n] = ((up - down) * g).sum() / (2 * EPS)
    np.testing.assert_allclose(got, numeric, **CLOSE)


@pytest.mark.parametrize("name", list(engine.ACTIVATIONS))
def test_each_derivative_is_the_jacobians_diagonal(name: str) -> None:
    activation = engine.ACTIVATIONS[name]
    seg = _segments_for(activation)
    s = np.random.default_rng(2).normal(size=(5, 4))
    got = activation.derivative(s, activation.forward(s, None, seg))
    numeric = np.empty_like(s)
    for i, n in np.ndindex(s.shape):
        step = np.zeros_like(s)
        step[i, n] = EPS
        up, down = activation.forward(s + step, None, seg), activation.forward(s - step, None, seg)
        numeric[i, n] = (up - down)[i, n] / (2 * EPS)
    np.testing.assert_allclose(got, numeric, **CLOSE)


PAIRS = [
    (loss, activation)
    for loss, entry in engine.LOSSES.items()
    for activation in (entry.accepts or ["identity", "tanh", "softmax"])
]


@pytest.mark.parametrize(("loss", "activation"), PAIRS)
def test_each_loss_gradient_is_the_derivative_of_its_values(loss: str, activation: str) -> None:
    entry, act = engine.LOSSES[loss], engine.ACTIVATIONS[activation]
    seg = engine.segments([3]) if act.segmented else None  # one output unit of size 3
    rng = np.random.default_rng(3)
    s = rng.normal(scale=0.2, size=(3, 4))  # unit-major; z well inside (0, 1), where BCE is tame
    y = rng.uniform(size=(4, 3))
    cols, split = np.arange(3), 0 if act.segmented else 3

    def total(s: np.ndarray, z: np.ndarray) -> float:
        return float(entry.values(Outputs(s, z, cols, y, split, seg)).sum())

    got = entry.gradient(Outputs(s, act.forward(s, None, seg), cols, y, split, seg))
    numeric = np.empty((4, 3))
    for i, n in np.ndindex(s.shape):
        step = np.zeros_like(s)
        step[i, n] = EPS
        if entry.fused:  # dE/ds: through the activation
            up = total(s + step, act.forward(s + step, None, seg))
            down = total(s - step, act.forward(s - step, None, seg))
        else:  # dE/dz
            z = act.forward(s, None, seg)
            up, down = total(s, z + step), total(s, z - step)
        numeric[n, i] = (up - down) / (2 * EPS)
    np.testing.assert_allclose(got, numeric, **CLOSE)


def _square(s: np.ndarray, out: np.ndarray | None = None, segments: Any = None) -> np.ndarray:
    return np.multiply(s, s, out=out)


def _square_derivative(s: np.ndarray, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.multiply(s, 2.0, out=out)


def test_a_new_activation_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An activation the engine has never seen, registered, is compiled and differentiated like
    the others: the passes hold no list of activations of their own."""
    square = elementwise("square", _square, _square_derivative, "square'", r"\mathrm{sq}'", ns=(6.0, 5.0))
    monkeypatch.setitem(engine.ACTIVATIONS, "square", square)
    units = [
        engine.Unit("x", "input", 2, "identity"),
        engine.Unit("h", "hidden", 3, "square", np.array([0.1, -0.2, 0.3])),
        engine.Unit("o", "output", 1, "identity"),
    ]
    rng = np.random.default_rng(4)
    w_xh, w_ho = rng.normal(size=(2, 3)), rng.normal(size=(3, 1))
    net = engine.Network(units, engine.WeightList(["x", "h"], ["h", "o"], [w_xh, w_ho]))
    plan = engine.compile_network(net)
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    batch = engine.bind_samples(plan, {"x": x}, {"o": y}, True)
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    grad = engine.gradient(plan, values, engine.backward(plan, plan.theta, values, batch.y), 1.0)

    def loss(theta: np.ndarray) -> float:
        assert batch.y is not None
        return float(engine.sample_losses(plan, engine.forward(plan, theta, batch.x), batch.y).sum())

    numeric = np.array(
        [(loss(plan.theta + e) - loss(plan.theta - e)) / (2 * EPS) for e in np.eye(plan.n_params) * EPS]
    )
    np.testing.assert_allclose(grad, numeric, **CLOSE)
    h = x @ w_xh + [0.1, -0.2, 0.3]
    np.testing.assert_allclose(values.z_of(plan.units[1]), h * h, rtol=1e-12)


def test_engine_errors_are_located_in_the_engines_own_description() -> None:
    net = engine.Network(
        [
            engine.Unit("x", "input", 1, "identity"),
            engine.Unit("o", "output", 1, "sigmoid", np.zeros(2)),
        ],
        engine.WeightList(["x", "q"], ["o", "o"], [np.ones((2, 1)), 1.0]),
        "cross_entropy",
    )
    with pytest.raises(engine.GraphError) as info:
        engine.compile_network(net)
    locs = [p.loc for p in info.value.problems]
    assert locs == [("weights", 0, "value"), ("weights", 1), ("units", 1, "bias")]
    assert "unknown unit(s) 'q'" in str(info.value)
    fixed = net._replace(units=[net.units[0], net.units[1]._replace(bias=None)])
    plan = engine.compile_network(fixed._replace(weights=engine.WeightList(["x"], ["o"], [1.0])))
    with pytest.raises(engine.SamplesError) as samples:
        engine.bind_samples(plan, {"x": np.ones((2, 1)), "z": np.ones((2, 1))}, {}, True)
    assert [p.loc for p in samples.value.problems] == [("inputs", "z"), ("targets",)]


def test_the_engine_imports_numpy_and_the_standard_library_only() -> None:
    service_side = (
        "pydantic",
        "fastapi",
        "starlette",
        "service.wire",
        "service.convert.encoding",
        "service.problems",
    )
    code = (
        "import sys, service.engine; print(' '.join(m for m in "
        + repr(service_side)
        + " if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []


def test_explain_writes_a_hidden_softmax_rule_without_the_loss_term() -> None:
    """The rule of a hidden unit names no loss term, whatever its activation."""
    request = wire.ExplainRequest.model_validate(
        {
            "network": {
                "units": [
                    {"id": "x", "role": "input"},
                    {"id": "h", "size": 2, "activation": "softmax"},
                    {"id": "o", "role": "output"},
                ],
                "weights": [
                    {"source": "x", "target": "h", "value": [[0.5, -0.5]]},
                    {"source": "h", "target": "o", "value": [[1.0], [2.0]]},
                ],
            },
            "samples": {"inputs": {"x": [1.0]}, "targets": {"o": [0.5]}},
        }
    )
    with np.errstate(all="raise"):
        body = explain.explain(request, Limits())
    assert (
        body["units"]["h"]["rule"] == "delta = z * (g - sum(g * z)) with g = the sum of delta_terms' values"
    )
    assert body["units"]["o"]["rule"] == "delta = f'(s) * (loss_term + the sum of delta_terms' values)"


def test_every_compute_endpoint_is_one_wire_entry_with_its_handler_row() -> None:
    """The handler registry: each wire entry is served by one row of its name (its path a route),
    and each of a row's variants is named by a query its `variant` reads into that key."""
    paths = {f"/v1/{name}": e for name, e in wire.ENDPOINTS.items()}
    assert set(wire.ENDPOINTS) == set(handlers.HANDLERS)
    assert paths == handlers.ROUTES
    for name, handler in handlers.HANDLERS.items():
        assert wire.ENDPOINTS[name] is handler.wire
        assert handler.key(b"") == name
        assert handlers.run_of(name) == (handler, handler.run)
        for chosen, run in handler.variants.items():
            assert handler.variant is not None
            assert handler.key(chosen.encode()) == f"{name}?{chosen}"
            assert handlers.run_of(f"{name}?{chosen}") == (handler, run)


# ---------------------------------------------------------------- neat-python's activations

#: each entry that stands for one of neat-python's activations, by neat's name
NEAT_NAMES = {
    "neat_sigmoid": "sigmoid",
    "neat_tanh": "tanh",
    "neat_sin": "sin",
    "neat_gauss": "gauss",
    "relu": "relu",
    "elu": "elu",
    "selu": "selu",
    "neat_softplus": "softplus",
    "identity": "identity",
    "clamped": "clamped",
    "neat_inv": "inv",
    "neat_log": "log",
    "neat_exp": "exp",
    "abs": "abs",
    "hat": "hat",
    "square": "square",
    "cube": "cube",
}
#: around every clamp and kink (+-60/5, +-60/2.5, +-3.4, +-60, 1e-7, 0, +-1) and far out
GRID = np.array(
    [
        *(-1e300, -1e3, -61.0, -60.0, -24.0, -12.5, -12.0, -11.9, -3.5, -3.4, -3.3, -1.0, -0.5, -1e-7, 0.0),
        *(
            1e-9,
            1e-7,
            2e-7,
            0.3,
            0.999,
            1.0,
            1.5,
            3.3,
            3.4,
            3.5,
            11.9,
            12.0,
            12.5,
            24.0,
            59.0,
            60.0,
            61.0,
            1e3,
        ),
    ]
)


@pytest.mark.parametrize(("name", "theirs"), sorted(NEAT_NAMES.items()))
def test_neat_activations_are_neat_pythons_own_formulas(name: str, theirs: str) -> None:
    neat_activations = pytest.importorskip("neat.activations")
    function = neat_activations.ActivationFunctionSet().get(theirs)
    s = GRID[None, :] if name not in ("square", "cube", "neat_exp") else GRID[None, np.abs(GRID) < 1e3]
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got = engine.ACTIVATIONS[name].forward(s)
    want = np.array([[function(float(v)) for v in s[0]]])
    # to the last bits; absolutely to 1e-16 where neat's e^s - 1 and log(1 + e^t) lose digits
    # that the entries' expm1 and log1p keep
    np.testing.assert_allclose(got, want, rtol=4e-16, atol=1e-16)


def test_lelu_is_leaky_relu_with_slope_0_005() -> None:
    neat_activations = pytest.importorskip("neat.activations")
    got = engine.leaky_relu(0.005).forward(GRID[None, :])
    np.testing.assert_array_equal(got[0], [neat_activations.lelu_activation(float(v)) for v in GRID])


@pytest.mark.parametrize("name", sorted(NEAT_NAMES))
def test_derivatives_are_exact_off_the_kinks_and_zero_where_clamped(name: str) -> None:
    activation = engine.ACTIVATIONS[name]
    kinks = np.array([-60 / 5, 60 / 5, -60 / 2.5, 60 / 2.5, -3.4, 3.4, -60.0, 60.0, 1e-7, 0.0, -1.0, 1.0])
    s = GRID[None, (np.abs(GRID) < 100) & (np.abs(GRID[:, None] - kinks).min(axis=1) > 1e-3)]
    eps = 1e-7
    d = activation.derivative(s, activation.forward(s))
    numeric = (activation.forward(s + eps) - activation.forward(s - eps)) / (2 * eps)
    np.testing.assert_allclose(d, numeric, rtol=1e-5, atol=1e-6)
    flat = {"neat_sigmoid": 13.0, "neat_tanh": 25.0, "neat_sin": 13.0, "neat_softplus": 13.0}
    flat |= {"neat_gauss": 3.5, "neat_exp": 61.0, "clamped": 1.5, "hat": 1.5}
    if name in flat:  # beyond the clamp the function is constant: its derivative is exactly 0
        out = np.array([[-flat[name], flat[name], -1e300, 1e300]])
        assert not activation.derivative(out, activation.forward(out)).any()
    if name == "neat_log":
        low = np.array([[-1.0, 0.0, 1e-8]])
        assert not activation.derivative(low, activation.forward(low)).any()
