"""Second order: each registry entry's second derivative and curvature against central
differences of its own first derivative, Hessian-vector products on drawn DAGs against central
differences of the gradient, and an activation added to the registry getting forward, backward
and H v from its one entry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service import engine
from service.engine.activations import elementwise
from service.engine.losses import Outputs
from tests.strategies import networks
from tests.support import compile_and_bind

EPS = 1e-6
CLOSE = {"rtol": 1e-6, "atol": 1e-8}


def _segments_for(activation: engine.Activation) -> engine.Segments | None:
    return engine.segments([3, 2]) if activation.segmented else None


#: s away from every kink and clamp edge (0, +-1, +-3.4, +-12, +-24, +-60, 1e-7) by more than EPS
def _smooth_s(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    s = rng.uniform(-4.0, 4.0, size=shape)
    kinks = np.array([0.0, -1.0, 1.0, -3.4, 3.4, 1e-7])
    near = np.abs(s[..., None] - kinks).min(axis=-1) < 1e-3
    return np.where(near, s + 0.01, s)


@pytest.mark.parametrize("name", list(engine.ACTIVATIONS))
def test_each_second_derivative_is_the_derivative_of_the_first(name: str) -> None:
    activation = engine.ACTIVATIONS[name]
    seg = _segments_for(activation)
    s = _smooth_s(np.random.default_rng(5), (5, 4))
    assert activation.second_derivative is not None
    got = activation.second_derivative(s, activation.forward(s, None, seg))

    def first(x: np.ndarray) -> np.ndarray:
        return activation.derivative(x, activation.forward(x, None, seg))

    if activation.segmented:  # d/ds_i of the diagonal dz_i/ds_i: an entry at a time
        numeric = np.empty_like(s)
        for i, n in np.ndindex(s.shape):
            step = np.zeros_like(s)
            step[i, n] = EPS
            numeric[i, n] = (first(s + step) - first(s - step))[i, n] / (2 * EPS)
        np.testing.assert_allclose(got, numeric, **CLOSE)
        return
    numeric = (first(s + EPS) - first(s - EPS)) / (2 * EPS)
    np.testing.assert_allclose(got, numeric, **CLOSE)


@pytest.mark.parametrize("name", list(engine.ACTIVATIONS))
def test_each_curvature_is_the_derivative_of_the_vjp_with_g_held(name: str) -> None:
    activation = engine.ACTIVATIONS[name]
    seg = _segments_for(activation)
    rng = np.random.default_rng(6)
    s, g, r = _smooth_s(rng, (5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 4))

    def vjp(x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        activation.vjp(g, x, activation.forward(x, None, seg), out, seg)
        return out

    got = np.empty_like(s)
    assert activation.curvature is not None
    activation.curvature(g, s, activation.forward(s, None, seg), r, got, seg)
    numeric = (vjp(s + EPS * r) - vjp(s - EPS * r)) / (2 * EPS)
    np.testing.assert_allclose(got, numeric, **CLOSE)


def test_piecewise_linear_second_derivatives_are_zero_on_their_kinks_and_clamps_too() -> None:
    s = np.array([[-61.0, -60.0, -12.0, -3.4, -1.0, 0.0, 1e-7, 1.0, 3.4, 12.0, 60.0, 61.0]])
    for name in ("relu", "leaky_relu", "abs", "clamped", "hat", "identity"):
        a = engine.ACTIVATIONS[name]
        assert a.second_derivative is not None
        assert not a.second_derivative(s, a.forward(s)).any(), name
    flat = np.array([[-1e300, -61.0, 61.0, 1e300]])  # beyond every neat clamp: flat, so 0
    for name in ("neat_sigmoid", "neat_tanh", "neat_softplus", "neat_sin", "neat_exp"):
        a = engine.ACTIVATIONS[name]
        assert a.second_derivative is not None
        assert not a.second_derivative(flat, a.forward(flat)).any(), name


PAIRS = [
    (loss, activation)
    for loss, entry in engine.LOSSES.items()
    for activation in (entry.accepts or ["identity", "tanh", "softmax"])
]


@pytest.mark.parametrize(("loss", "activation"), PAIRS)
def test_each_loss_curvature_is_the_derivative_of_its_gradient(loss: str, activation: str) -> None:
    entry, act = engine.LOSSES[loss], engine.ACTIVATIONS[activation]
    seg = engine.segments([3]) if act.segmented else None
    rng = np.random.default_rng(7)
    s, y = rng.normal(size=(3, 4)), rng.uniform(size=(4, 3))
    r = rng.normal(size=(4, 3))
    cols, split = np.arange(3), 0 if act.segmented else 3

    def gradient(s: np.ndarray) -> np.ndarray:
        return entry.gradient(Outputs(s, act.forward(s, None, seg), cols, y, split, seg))

    got = entry.curvature(Outputs(s, act.forward(s, None, seg), cols, y, split, seg), r)
    if entry.fused:  # along r, a direction of s
        numeric = (gradient(s + EPS * r.T) - gradient(s - EPS * r.T)) / (2 * EPS)
    else:  # along r, a direction of z: the gradient is a function of z
        z = act.forward(s, None, seg)

        def at(zz: np.ndarray) -> np.ndarray:
            return entry.gradient(Outputs(s, zz, cols, y, split, seg))

        numeric = (at(z + EPS * r.T) - at(z - EPS * r.T)) / (2 * EPS)
    np.testing.assert_allclose(got, numeric, **CLOSE)


def _loss(plan: engine.Plan, batch: engine.Batch, theta: np.ndarray) -> float:
    assert batch.y is not None
    return float(engine.sample_losses(plan, engine.forward(plan, theta, batch.x), batch.y).sum())


def _gradient(plan: engine.Plan, batch: engine.Batch, theta: np.ndarray) -> np.ndarray:
    assert batch.y is not None
    values = engine.forward(plan, theta, batch.x)
    return engine.gradient(plan, values, engine.backward(plan, theta, values, batch.y), 1.0)


def _central(plan: engine.Plan, batch: engine.Batch, v: np.ndarray, eps: float) -> np.ndarray:
    return (_gradient(plan, batch, plan.theta + eps * v) - _gradient(plan, batch, plan.theta - eps * v)) / (
        2 * eps
    )


def _hv(plan: engine.Plan, batch: engine.Batch, v: np.ndarray) -> engine.Curvature:
    assert batch.y is not None
    with np.errstate(all="raise"):
        return engine.hvp(plan, plan.theta, engine.forward(plan, plan.theta, batch.x), batch.y, v)


@settings(max_examples=150)
@given(networks(), st.integers(0, 2**32 - 1))
def test_hvp_is_the_central_difference_of_the_gradient(case: tuple[Any, Any], seed: int) -> None:
    """On any DAG, with every activation and loss: H v against (g(theta + e v) - g(theta - e v)) / 2e.
    Where a step reaches across a kink or clamp (relu of a unit whose s is 0, say) the difference
    is no derivative at all: such draws, found as steps of two sizes that disagree, are left out."""
    plan, batch = compile_and_bind(*case)
    v = np.random.default_rng(seed).normal(size=plan.n_params)
    with np.errstate(over="ignore", invalid="ignore"):
        coarse, fine = _central(plan, batch, v, 1e-4), _central(plan, batch, v, 1e-5)
    scale = max(float(np.abs(fine).max()), 1e-6)
    assume(np.isfinite(fine).all() and np.abs(coarse - fine).max() <= 1e-5 * scale)
    hv = _hv(plan, batch, v).hv
    assert np.abs(hv - fine).max() <= 1e-5 * scale


@settings(max_examples=100)
@given(networks(), st.integers(0, 2**32 - 1))
def test_input_gradient_is_the_central_difference_of_the_loss(case: tuple[Any, Any], seed: int) -> None:
    plan, batch = compile_and_bind(*case)
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    gx = engine.input_gradient(plan, values, engine.backward(plan, plan.theta, values, batch.y))
    u = np.random.default_rng(seed).normal(size=batch.x.shape)

    def at(x: np.ndarray) -> float:
        return _loss(plan, engine.Batch(x, batch.y), plan.theta)

    with np.errstate(over="ignore", invalid="ignore"):
        coarse = (at(batch.x + 1e-4 * u) - at(batch.x - 1e-4 * u)) / 2e-4
        fine = (at(batch.x + 1e-5 * u) - at(batch.x - 1e-5 * u)) / 2e-5
    scale = max(abs(fine), float(np.abs(gx).max()), 1e-6)
    assume(np.isfinite(fine) and abs(coarse - fine) <= 1e-5 * scale)
    assert abs(float((gx * u).sum()) - fine) <= 1e-5 * scale


def test_the_hvp_of_a_quadratic_is_its_hessian_exactly() -> None:
    """x -> o, identity, half squared error: E = (w x + b - y)^2 / 2 has H = [[x^2, x], [x, 1]]
    per sample, so H v is known in closed form (and exact in floating point for these numbers)."""
    net = engine.Network(
        [engine.Unit("x", "input", 1, "identity"), engine.Unit("o", "output", 1, "identity", 0.25)],
        engine.WeightList(["x"], ["o"], [0.5]),
    )
    plan = engine.compile_network(net)
    x = np.array([[2.0], [-1.0]])
    batch = engine.bind_samples(plan, {"x": x}, {"o": np.array([[1.0], [0.0]])}, True)
    hv = _hv(plan, batch, np.array([1.0, 3.0])).hv  # theta = (w, b)
    xs = x[:, 0]
    assert hv.tolist() == [float((xs * xs).sum() + 3 * xs.sum()), float(xs.sum() + 3 * len(xs))]


def _square(s: np.ndarray, out: np.ndarray | None = None, segments: Any = None) -> np.ndarray:
    return np.multiply(s, s, out=out)


def _square_derivative(s: np.ndarray, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.multiply(s, 2.0, out=out)


def _square_second(s: np.ndarray, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = np.empty_like(s) if out is None else out
    out.fill(2.0)
    return out


def test_a_new_activation_gets_forward_backward_and_hvp_from_its_one_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An activation registered under a name of its own, with its second derivative: compiled,
    differentiated and twice differentiated by the same passes as the others."""
    sq = elementwise("sq", _square, _square_derivative, "sq'", r"\mathrm{sq}'", _square_second, ns=(6.0, 5.0))
    monkeypatch.setitem(engine.ACTIVATIONS, "sq", sq)
    units = [
        engine.Unit("x", "input", 2, "identity"),
        engine.Unit("h", "hidden", 3, "sq", np.array([0.1, -0.2, 0.3])),
        engine.Unit("o", "output", 1, "identity"),
    ]
    rng = np.random.default_rng(8)
    w_xh, w_ho = rng.normal(size=(2, 3)), rng.normal(size=(3, 1))
    plan = engine.compile_network(
        engine.Network(units, engine.WeightList(["x", "h"], ["h", "o"], [w_xh, w_ho]))
    )
    x, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    batch = engine.bind_samples(plan, {"x": x}, {"o": y}, True)
    h = x @ w_xh + [0.1, -0.2, 0.3]
    np.testing.assert_allclose(engine.forward(plan, plan.theta, x).z_of(plan.units[1]), h * h, rtol=1e-12)
    numeric = np.array(
        [
            (_loss(plan, batch, plan.theta + e) - _loss(plan, batch, plan.theta - e)) / (2 * EPS)
            for e in np.eye(plan.n_params) * EPS
        ]
    )
    np.testing.assert_allclose(_gradient(plan, batch, plan.theta), numeric, **CLOSE)
    v = rng.normal(size=plan.n_params)
    np.testing.assert_allclose(_hv(plan, batch, v).hv, _central(plan, batch, v, 1e-5), rtol=1e-6, atol=1e-7)


def test_an_activation_without_a_second_derivative_is_refused_by_hvp_naming_the_unit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        engine.ACTIVATIONS,
        "sq",
        elementwise("sq", _square, _square_derivative, "sq'", r"\mathrm{sq}'", ns=(6.0, 5.0)),
    )
    units = [engine.Unit("x", "input", 1, "identity"), engine.Unit("o", "output", 1, "sq")]
    plan = engine.compile_network(engine.Network(units, engine.WeightList(["x"], ["o"], [1.0])))
    with pytest.raises(engine.GraphError) as info:
        engine.check_second_order(plan)
    assert "'o'" in str(info.value)
    assert [p.loc for p in info.value.problems] == [("units", 1, "activation")]
