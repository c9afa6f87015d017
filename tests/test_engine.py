"""The engine against the seed's closed forms, an independent autodiff, and finite differences."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from service import engine, wire
from service.convert import binding
from service.engine import Plan, blocks
from service.problems import InvalidGraphError
from tests import seed
from tests.reference import Reference
from tests.strategies import LOSSES, TAME, networks, sgd_options
from tests.support import assert_parameters_close, compile_and_bind

TIGHT = {"rtol": 1e-9, "atol": 1e-12}


def run(net: dict[str, Any], samples: dict[str, Any]) -> dict[str, Any]:
    """The engine's values and summed gradients, keyed like the reference's."""
    plan, batch = compile_and_bind(net, samples)
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    delta = engine.backward(plan, plan.theta, values, batch.y)
    grad = engine.gradient(plan, values, delta, 1.0)
    return {
        "plan": plan,
        "s": {u.id: values.s_of(u) for u in plan.units if u.role != "input"},
        "z": {u.id: values.z_of(u) for u in plan.units},
        "delta": {u.id: delta[u.cols].T for u in plan.units if u.role != "input"},
        "losses": engine.sample_losses(plan, values, batch.y),
        "w": [grad[w.params].reshape(w.shape) for w in plan.weights],
        "b": {u.id: grad[plan.bias_params(u)] for u in plan.units if u.role != "input"},
        "r": {
            u.id: grad[plan.response_params(u)]
            for u in plan.units
            if u.role != "input" and plan.has_responses
        },
        "per_sample": engine.per_sample_gradient(plan, values, delta),
    }


# ---------------------------------------------------------------- the seed's closed forms


def test_chain_closed_form() -> None:
    case = seed.chain()
    got = run(case.network, case.samples)
    for k, expected in enumerate(case.weight_gradients):
        assert got["w"][k].item() == pytest.approx(expected, rel=1e-12)
    for uid, expected in case.deltas.items():
        assert got["delta"][uid].item() == pytest.approx(expected, rel=1e-12)
    assert got["losses"][0] == pytest.approx(case.loss, rel=1e-12)


def test_two_inputs_closed_form() -> None:
    case = seed.two_inputs()
    got = run(case.network, case.samples)
    for k, expected in enumerate(case.weight_gradients):
        assert got["w"][k].item() == pytest.approx(expected, rel=1e-12)


def test_two_outputs_sums_both_paths() -> None:
    case = seed.two_outputs()
    got = run(case.network, case.samples)
    for k, expected in enumerate(case.weight_gradients):
        assert got["w"][k].item() == pytest.approx(expected, rel=1e-12)
    # the input weight's gradient is the sum of the two paths' products, not either alone
    path_a, path_b = case.paths
    assert got["w"][0].item() == pytest.approx(path_a + path_b, rel=1e-12)
    assert abs(path_a) > 1e-3
    assert abs(path_b) > 1e-3


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_response_and_aggregation_closed_form(aggregation: str) -> None:
    """x1, x2 -> h -> o: s_h = b + r (w1 x1 + w2 x2) (halved for the mean), z_h = tanh(s_h),
    o = w3 z_h; every gradient by hand, the response's dE/dr = delta_h * aggregate."""
    x1, x2, w1, w2, w3, b, r, y = 0.7, -1.3, 0.4, 0.9, -1.1, 0.2, 1.7, 0.3
    net = {
        "units": [
            {"id": "x1", "role": "input"},
            {"id": "x2", "role": "input"},
            {"id": "h", "activation": "tanh", "bias": b, "response": r, "aggregation": aggregation},
            {"id": "o", "role": "output", "activation": "identity"},
        ],
        "weights": [
            {"source": "x1", "target": "h", "value": w1},
            {"source": "x2", "target": "h", "value": w2},
            {"source": "h", "target": "o", "value": w3},
        ],
    }
    got = run(net, {"inputs": {"x1": [[x1]], "x2": [[x2]]}, "targets": {"o": [[y]]}})
    n = 2.0 if aggregation == "mean" else 1.0
    agg = (w1 * x1 + w2 * x2) / n
    z = np.tanh(b + r * agg)
    delta_o = w3 * z - y
    delta_h = (1 - z * z) * w3 * delta_o
    assert got["s"]["h"].item() == pytest.approx(b + r * agg, rel=1e-15)
    expected_w = [x1 * r / n * delta_h, x2 * r / n * delta_h, z * delta_o]
    for k, expected in enumerate(expected_w):
        assert got["w"][k].item() == pytest.approx(expected, rel=1e-13)
    assert got["b"]["h"].item() == pytest.approx(delta_h, rel=1e-13)
    assert got["r"]["h"].item() == pytest.approx(delta_h * agg, rel=1e-13)
    assert got["r"]["o"].item() == pytest.approx(delta_o * w3 * z, rel=1e-13)  # o's own response, 1


def test_without_response_or_mean_nothing_changes() -> None:
    """The new fields at their defaults leave the plan as it was: no response parameters, no
    scale, the same theta and the same values."""
    case = seed.two_outputs()
    plain = compile_and_bind(case.network, case.samples)[0]
    spelled = {
        **case.network,
        "units": [
            {**u, "aggregation": "sum"} if u.get("role") != "input" else u for u in case.network["units"]
        ],
    }
    same = compile_and_bind(spelled, case.samples)[0]
    for plan in (plain, same):
        assert plan.n_params == plan.n_weight_params + plan.n_cols
        assert plan.column_scale(plan.theta) is None
    np.testing.assert_array_equal(plain.theta, same.theta)


@pytest.mark.parametrize("slope", [0.005, 0.2, 3.0])
def test_leaky_relu_takes_each_units_slope(slope: float) -> None:
    net = {
        "units": [
            {"id": "x", "role": "input", "size": 2},
            {"id": "a", "activation": "leaky_relu", "slope": slope},
            {"id": "b", "activation": "leaky_relu"},
            {"id": "o", "role": "output"},
        ],
        "weights": [
            {"source": "x", "target": "a", "value": [[1.0], [0.0]]},
            {"source": "x", "target": "b", "value": [[1.0], [0.0]]},
            {"source": "a", "target": "o", "value": 1.0},
            {"source": "b", "target": "o", "value": 1.0},
        ],
    }
    got = run(net, {"inputs": {"x": [[-2.0, 0.0], [3.0, 0.0]]}, "targets": {"o": [[0.0], [0.0]]}})
    np.testing.assert_array_equal(got["z"]["a"].ravel(), [-2.0 * slope, 3.0])
    np.testing.assert_array_equal(got["z"]["b"].ravel(), [-0.02, 3.0])  # the default slope, 0.01
    o = np.array([-2.0 * slope - 0.02, 6.0])
    assert got["w"][0].ravel()[0] == pytest.approx((o * [slope, 1.0] * [-2.0, 3.0]).sum(), rel=1e-14)


@pytest.mark.parametrize("name", list(engine.ELEMENTWISE))
@pytest.mark.parametrize("width", [1, 2])
def test_activations_write_into_columns_of_a_table(name: str, width: int) -> None:
    # The passes write each group's f(s) and f'(s) straight into its columns of the tables:
    # strided views. (NumPy 2.4's np.negative gets those wrong: sigmoid once used it.)
    rng = np.random.default_rng(0)
    s, z = rng.normal(size=(5, 8)) * 3, np.zeros((5, 9))
    act = engine.ELEMENTWISE[name]
    # Against the same function on a contiguous copy: to a few ulps, not bit for bit, as NumPy
    # may pick another inner loop (SIMD or scalar) for another memory layout; a wrong write
    # into a strided view is off by far more.
    act.forward(s[:, 3 : 3 + width], out=z[:, 3 : 3 + width])
    expected = act.forward(s[:, 3 : 3 + width].copy())
    np.testing.assert_allclose(z[:, 3 : 3 + width], expected, rtol=1e-14, atol=1e-300)
    d = np.zeros((5, 9))
    act.derivative(s[:, 3 : 3 + width], expected, out=d[:, 3 : 3 + width])
    derivative = act.derivative(s[:, 3 : 3 + width].copy(), expected)
    np.testing.assert_allclose(d[:, 3 : 3 + width], derivative, rtol=1e-14, atol=1e-300)
    assert not z[:, :3].any()
    assert not z[:, 3 + width :].any()


# ---------------------------------------------------------------- an independent autodiff


def _derivative_tolerance(net: dict[str, Any], got: dict[str, Any]) -> dict[str, float]:
    """TIGHT, but for binary cross-entropy, whose dE/dz = (1 - y) / (1 - z) - y / z turns z's last
    bit (the reference's sigmoid rounds apart from the engine's) into a relative error of
    ~1e-16 / min(z, 1 - z): near saturation that is the conditioning of the loss itself."""
    if net["loss"] != "binary_cross_entropy":
        return TIGHT
    plan: Plan = got["plan"]
    z = np.concatenate([np.ravel(got["z"][plan.units[i].id]) for i in plan.outputs])
    kappa = float(1.0 / np.minimum(z, 1.0 - z).min(initial=1.0))
    return {"rtol": max(TIGHT["rtol"], 1e-15 * kappa), "atol": TIGHT["atol"]}


@given(networks())
def test_matches_independent_autodiff(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    net, samples = case
    got = run(net, samples)
    ref = Reference(net, samples)
    s, z, losses = ref.values()
    np.testing.assert_allclose(got["losses"], losses, **TIGHT)
    for uid in s:
        np.testing.assert_allclose(got["s"][uid], s[uid], **TIGHT)
        np.testing.assert_allclose(got["z"][uid], z[uid], **TIGHT)
    grads = ref.gradients()
    tight = _derivative_tolerance(net, got)
    for k, value in enumerate(grads["w"]):
        np.testing.assert_allclose(got["w"][k], value, **tight)
    for uid, value in grads["b"].items():
        np.testing.assert_allclose(got["b"][uid], value, **tight)
        np.testing.assert_allclose(got["delta"][uid], grads["ds"][uid], **tight)
    plan: Plan = got["plan"]
    assert plan.has_responses == any("response" in u for u in net["units"])
    for uid, value in got["r"].items():  # dE/dr_j = delta_j * aggregate_j
        np.testing.assert_allclose(value, grads["r"][uid], **tight)
    for n, per in enumerate(ref.per_sample()):
        for k, w in enumerate(plan.weights):
            np.testing.assert_allclose(got["per_sample"][n, w.params], per["w"][k].ravel(), **tight)
        for u in plan.units:
            if u.role != "input":
                np.testing.assert_allclose(got["per_sample"][n, plan.bias_params(u)], per["b"][u.id], **tight)
            if u.role != "input" and plan.has_responses:
                np.testing.assert_allclose(
                    got["per_sample"][n, plan.response_params(u)], per["r"][u.id], **tight
                )


# ---------------------------------------------------------------- finite differences


def total_loss(plan: Plan, theta: np.ndarray, batch: engine.Batch) -> float:
    assert batch.y is not None
    return float(engine.sample_losses(plan, engine.forward(plan, theta, batch.x), batch.y).sum())


@given(networks())
def test_gradients_equal_central_differences(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    net, samples = case
    plan, batch = compile_and_bind(net, samples)
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    grad = engine.gradient(plan, values, engine.backward(plan, plan.theta, values, batch.y), 1.0)
    eps = 1e-6
    numeric = np.zeros(plan.n_params)
    for p in range(plan.n_params):
        up, down = plan.theta.copy(), plan.theta.copy()
        up[p] += eps
        down[p] -= eps
        numeric[p] = (total_loss(plan, up, batch) - total_loss(plan, down, batch)) / (2 * eps)
    scale = max(1.0, float(np.abs(grad).max()))
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6 * scale)


# ---------------------------------------------------------------- reductions and order


@given(networks())
def test_per_sample_gradients_add_up_to_the_sum(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    net, samples = case
    plan, batch = compile_and_bind(net, samples)
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    delta = engine.backward(plan, plan.theta, values, batch.y)
    per = engine.per_sample_gradient(plan, values, delta)
    summed = engine.gradient(plan, values, delta, engine.reduction_scale("sum", batch.size))
    mean = engine.gradient(plan, values, delta, engine.reduction_scale("mean", batch.size))
    np.testing.assert_allclose(per.sum(axis=0), summed, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(per.mean(axis=0), mean, rtol=1e-12, atol=1e-14)


@given(networks(), st.randoms(use_true_random=False))
def test_listed_order_never_changes_a_result(case: tuple[dict[str, Any], dict[str, Any]], rnd: Any) -> None:
    net, samples = case
    shuffled = {
        **net,
        "units": rnd.sample(net["units"], len(net["units"])),
        "weights": rnd.sample(net["weights"], len(net["weights"])),
    }
    a, b = run(net, samples), run(shuffled, samples)
    by_pair = {(w["source"], w["target"]): k for k, w in enumerate(shuffled["weights"])}
    for k, w in enumerate(net["weights"]):
        np.testing.assert_allclose(
            a["w"][k], b["w"][by_pair[(w["source"], w["target"])]], rtol=1e-12, atol=1e-15
        )
    for uid in a["b"]:
        np.testing.assert_allclose(a["b"][uid], b["b"][uid], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(a["z"][uid], b["z"][uid], rtol=1e-12, atol=1e-15)


@contextmanager
def gathered_blocks() -> Iterator[None]:
    """Force every level into small gathered blocks (the sparse-graph layout)."""
    saved = blocks.DENSITY, blocks.MIN_BLOCK
    blocks.DENSITY, blocks.MIN_BLOCK = 1, 1
    try:
        yield
    finally:
        blocks.DENSITY, blocks.MIN_BLOCK = saved


@given(networks(max_hidden=8, singles=True))
def test_block_layout_never_changes_a_result(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    net, samples = case
    dense = run(net, samples)
    with gathered_blocks():
        split = run(net, samples)
    fan_in = [sum(w["target"] == u["id"] for w in net["weights"]) for u in net["units"]]
    if max(fan_in) >= 2:
        assert split["plan"].has_gathered_blocks
    for k in range(len(net["weights"])):
        np.testing.assert_allclose(dense["w"][k], split["w"][k], rtol=1e-12, atol=1e-15)
    for uid in dense["b"]:
        np.testing.assert_allclose(dense["b"][uid], split["b"][uid], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- SGD


def test_learning_rate_zero_changes_nothing() -> None:
    theta = np.array([0.5, -1.0, 2.0])
    grad = np.array([1.0, 2.0, 3.0])
    opt = engine.SgdOptions(learning_rate=0.0, momentum=0.9, weight_decay=0.1)
    new, _ = engine.sgd_step(theta, grad, None, opt)
    np.testing.assert_array_equal(new, theta)


@given(networks(), st.floats(1e-3, 1.0))
def test_one_plain_step_is_w_minus_eta_g(case: tuple[dict[str, Any], dict[str, Any]], eta: float) -> None:
    net, samples = case
    plan, batch = compile_and_bind(net, samples)
    assert batch.y is not None
    values = engine.forward(plan, plan.theta, batch.x)
    grad = engine.gradient(plan, values, engine.backward(plan, plan.theta, values, batch.y), 1.0 / batch.size)
    trained = engine.train(plan, batch, engine.SgdOptions(learning_rate=eta))
    expected = plan.theta - eta * grad
    np.testing.assert_allclose(trained.theta, expected, rtol=1e-12, atol=1e-15)
    assert trained.steps == 1


def reference_sgd(net: dict[str, Any], samples: dict[str, Any], opt: engine.SgdOptions) -> dict[str, Any]:
    """torch.optim.SGD's documented update, per parameter, on the reference's gradients."""
    ref = Reference(net, samples)
    params = {
        "w": [w.copy() for w in ref.params["w"]],
        "b": {k: v.copy() for k, v in ref.params["b"].items()},
        "r": {k: v.copy() for k, v in ref.params["r"].items()},
    }
    responses = any("response" in u for u in net["units"])  # else they are no parameters
    bufs: dict[Any, np.ndarray] = {}
    size = opt.batch_size or ref.batch
    for epoch in range(opt.epochs):
        # the API's shuffle: epoch e's permutation from a generator seeded by (seed, e)
        order = np.random.default_rng([opt.seed, epoch]).permutation(ref.batch) if opt.shuffle else None
        order = np.arange(ref.batch) if order is None else order
        for start in range(0, ref.batch, size):
            rows = order[start : start + size]
            sub = Reference(
                net,
                {
                    "inputs": {k: v[rows] for k, v in ref.x.items()},
                    "targets": {k: v[rows] for k, v in ref.y.items()},
                },
            )
            sub.params = {**sub.params, "w": params["w"], "b": params["b"], "r": params["r"]}
            g = sub.gradients()
            scale = 1.0 / len(rows) if opt.reduction == "mean" else 1.0
            flat = [(("w", k), params["w"], k, g["w"][k]) for k in range(len(params["w"]))]
            flat += [(("b", k), params["b"], k, g["b"][k]) for k in params["b"]]
            flat += [(("r", k), params["r"], k, g["r"][k]) for k in params["r"] if responses]
            for key, store, k, gk in flat:
                p = store[k]
                d_p = gk * scale + opt.weight_decay * p
                if opt.momentum != 0:
                    bufs[key] = d_p.copy() if key not in bufs else opt.momentum * bufs[key] + d_p
                    d_p = d_p + opt.momentum * bufs[key] if opt.nesterov else bufs[key]
                store[k] = p - opt.learning_rate * d_p
    return params


def _arrays(part: Any) -> list[np.ndarray]:
    return list(part.values()) if isinstance(part, dict) else list(part)


#: binary cross-entropy's dE/dz divides by min(z, 1 - z): three epochs on the reference's own
#: sigmoid (rounded apart in its last bit) drift past any fixed tolerance near saturation; its
#: derivatives are checked against the reference and torch with the tolerance its conditioning needs
WELL_CONDITIONED = [loss for loss in LOSSES if loss != "binary_cross_entropy"]


@given(networks(max_hidden=3, activations=TAME, losses=WELL_CONDITIONED), sgd_options())
def test_multi_epoch_sgd_matches_torch_documented_update(
    case: tuple[dict[str, Any], dict[str, Any]], opt: engine.SgdOptions
) -> None:
    net, samples = case
    plan, batch = compile_and_bind(net, samples)
    with np.errstate(all="ignore"):  # a draw that diverges (overflows) compares nothing
        trained = engine.train(plan, batch, opt)
        expected = reference_sgd(net, samples, opt)
    assume(np.isfinite(trained.theta).all())
    # the reference's log of a saturated sigmoid is -inf where the engine's fused loss is not:
    # a draw whose training drives it there compares nothing
    assume(all(np.isfinite(v).all() for part in expected.values() for v in _arrays(part)))
    assert_parameters_close(plan, trained.theta, expected)
    assert trained.steps == 3 * engine.steps_per_epoch(batch.size, opt.batch_size)


# ---------------------------------------------------------------- numerical stability


#: activations whose value or derivative outgrows float64 for finite s (the answer is then
#: refused as non-finite): they must still compute without a warning
UNBOUNDED = {"selu": 1e300, "square": 1e150, "cube": 1e100, "neat_inv": 1e-300}


@pytest.mark.parametrize("name", sorted(engine.ELEMENTWISE))
def test_activations_are_finite_for_huge_inputs(name: str) -> None:
    s = np.array([[-1e308, -1e4, -800.0, -60.0, -1.0, -1e-7, 0.0, 1e-7, 1.0, 60.0, 800.0, 1e4, 1e308]])
    act = engine.ELEMENTWISE[name]
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # underflow is no warning
        z = act.forward(s)
        d = act.derivative(s, z)
        if name in UNBOUNDED:
            tame = np.abs(s) < UNBOUNDED[name] if name != "neat_inv" else np.abs(s) >= 1e-7
            assert np.isfinite(z[tame]).all()
            assert np.isfinite(d[tame]).all()
            extreme = np.array([[-1e308, -1e-320, 1e-320, 1e308]])
            act.derivative(extreme, act.forward(extreme))  # no warning, whatever it comes to
            return
    assert np.isfinite(z).all()
    assert np.isfinite(d).all()


def test_softmax_is_finite_for_huge_inputs() -> None:
    seg = engine.segments([3, 2])
    s = np.array([[1e308, -1e308, 0.0, 800.0, 799.0]])
    z = engine.softmax(s, seg)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(seg.sum(z), 1.0)


@pytest.mark.parametrize(
    ("loss", "activation"),
    [("cross_entropy", "sigmoid"), ("cross_entropy", "softmax"), ("half_squared_error", "tanh")],
)
def test_losses_are_finite_for_large_pre_activations(loss: str, activation: str) -> None:
    net = {
        "units": [
            {"id": "x", "role": "input"},
            {"id": "o", "role": "output", "size": 2, "activation": activation},
        ],
        "weights": [{"source": "x", "target": "o", "value": [[900.0, -900.0]]}],
        "loss": loss,
    }
    got = run(net, {"inputs": {"x": [[1.0], [-1.0]]}, "targets": {"o": [[0.0, 1.0], [1.0, 0.0]]}})
    assert np.isfinite(got["losses"]).all()
    assert all(np.isfinite(w).all() for w in got["w"])
    assert got["losses"] == pytest.approx(
        [1800.0, 1800.0] if loss == "cross_entropy" else [2.5, 2.5], rel=1e-9
    )


# ---------------------------------------------------------------- graph errors, found up front


def error_of(net: dict[str, Any]) -> str:
    with pytest.raises(InvalidGraphError) as info:
        binding.compile_network(wire.Network.model_validate_json(json.dumps(net)))
    return str(info.value)


def chain_with(**changes: Any) -> dict[str, Any]:
    return {**seed.chain().network, **changes}


def test_a_cycle_is_named() -> None:
    net = chain_with(weights=[*seed.chain().network["weights"], {"source": "o", "target": "j", "value": 1.0}])
    assert error_of(net) == "the network has a cycle: j -> k -> o -> j"


def test_a_long_cycle_is_named_by_its_ends() -> None:
    ring = [f"r{k}" for k in range(1000)]
    units = [{"id": "x", "role": "input"}, *({"id": r} for r in ring), {"id": "o", "role": "output"}]
    weights = [
        {"source": a, "target": b, "value": 1.0} for a, b in zip(ring, ring[1:] + ring[:1], strict=True)
    ]
    msg = error_of({"units": units, "weights": weights})
    assert msg.startswith("the network has a cycle: r0 -> r1 -> ")
    assert "... (980 more) ... -> r990 -> " in msg
    assert msg.endswith("r999 -> r0")
    assert len(msg) < 400


def test_a_self_loop_is_a_cycle() -> None:
    net = chain_with(weights=[*seed.chain().network["weights"], {"source": "k", "target": "k", "value": 1.0}])
    assert error_of(net) == "the network has a cycle: k -> k"


def test_graph_errors_name_their_ids() -> None:
    w = seed.chain().network["weights"]
    units = seed.chain().network["units"]
    assert "unknown unit(s) 'q'" in error_of(
        chain_with(weights=[*w, {"source": "q", "target": "o", "value": 1.0}])
    )
    assert "weight x->j is given twice" in error_of(chain_with(weights=[*w, w[0]]))
    assert "duplicate unit id 'k'" in error_of(chain_with(units=[*units, {"id": "k"}]))
    assert "points into input unit 'x'" in error_of(
        chain_with(weights=[*w, {"source": "o", "target": "x", "value": 1.0}])
    )
    msg = error_of(chain_with(weights=[*w, {"source": "x", "target": "o", "value": [1.0, 2.0]}]))
    assert "weight x->o has shape [2], expected [1, 1]" in msg
    assert "no output unit" in error_of(chain_with(units=units[:3]))
    msg = error_of(chain_with(loss="cross_entropy"))
    assert "cross_entropy needs output 'o' to use sigmoid (binary) or softmax" in msg


def test_large_sparse_graph_uses_gathered_blocks_and_stays_small() -> None:
    rng = np.random.default_rng(0)
    units: list[dict[str, Any]] = [{"id": f"i{k}", "role": "input"} for k in range(16)]
    units += [
        {"id": f"u{k}", "role": "output" if k >= 290 else "hidden", "activation": "tanh"} for k in range(300)
    ]
    weights = []
    for k in range(300):
        pool = [u["id"] for u in units[: 16 + k]]
        for src in rng.choice(pool, size=min(4, len(pool)), replace=False):
            weights.append({"source": str(src), "target": f"u{k}", "value": float(rng.normal())})
    plan = binding.compile_network(
        wire.Network.model_validate_json(json.dumps({"units": units, "weights": weights}))
    )
    real = len(weights)
    gathered = sum(int(np.prod(b.shape)) for lv in plan.levels for b in lv.blocks)
    assert gathered <= blocks.DENSITY * real + blocks.MIN_BLOCK * len(plan.levels)
    # theta is every weight's value, in the order given, then the biases (all zero here)
    assert plan.theta[:real].tolist() == [w["value"] for w in weights]
    assert plan.theta.size == real + len(units) - 16
    assert not plan.theta[real:].any()


def test_gathered_blocks_of_a_graph_with_more_units_than_weight_elements() -> None:
    """Bias-only units give many source columns and few weights: every gathered block must
    still find its own rows (keys are numbered per block past the last column)."""
    units: list[dict[str, Any]] = [{"id": "x", "role": "input"}]
    units += [{"id": f"b{k}", "bias": 0.1 * k} for k in range(10)]  # no incoming weights
    units += [{"id": "p"}, {"id": "q"}, {"id": "o", "role": "output"}]
    feeds = [("x", "p"), ("b9", "p"), ("p", "q"), ("b5", "q"), ("q", "o"), ("b0", "o"), ("b7", "o")]
    weights = [{"source": a, "target": b, "value": 0.3 + 0.1 * k} for k, (a, b) in enumerate(feeds)]
    net = {"units": units, "weights": weights}
    samples = {"inputs": {"x": [0.5, -1.0]}, "targets": {"o": [0.2, 0.1]}}
    with gathered_blocks():
        got = run(net, samples)
    assert got["plan"].has_gathered_blocks
    grads = Reference(net, samples).gradients()
    for k, value in enumerate(grads["w"]):
        np.testing.assert_allclose(got["w"][k], value, **TIGHT)
