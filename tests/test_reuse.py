"""A structure compiled once: a network of a structure seen before takes that plan with its
own parameters (service.engine.reuse), and gets exactly what compiling it would give."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import engine, wire
from service.convert import binding
from service.problems import InvalidGraphError
from tests.strategies import encode, networks


def _described(net: dict[str, Any]) -> engine.Network:
    return binding.network(wire.Network.model_validate(net))


def _revalued(net: dict[str, Any], seed: int) -> dict[str, Any]:
    """The same structure, every value drawn anew (numbers stay numbers, lists keep their shape)."""
    rng = np.random.default_rng(seed)

    def fresh(value: Any) -> Any:
        if isinstance(value, dict):  # an encoded array
            return encode(rng.normal(size=value["shape"]))
        if isinstance(value, list):
            return rng.normal(size=np.shape(value)).tolist()
        return float(rng.normal())

    other = copy.deepcopy(net)
    for w in other["weights"]:
        w["value"] = fresh(w["value"])
    for u in other["units"]:
        for name in ("bias", "response"):
            if name in u:
                u[name] = fresh(u[name])
    return other


def _same_plan(got: engine.Plan, expected: engine.Plan) -> None:
    assert got.units == expected.units
    assert got.unit_index == expected.unit_index
    assert (got.n_inputs, got.n_cols, got.n_weight_params, got.n_response_params) == (
        expected.n_inputs,
        expected.n_cols,
        expected.n_weight_params,
        expected.n_response_params,
    )
    assert got.weights == expected.weights
    assert (got.loss, got.huber_delta, got.outputs, got.out_split) == (
        expected.loss,
        expected.huber_delta,
        expected.outputs,
        expected.out_split,
    )
    np.testing.assert_array_equal(got.out_cols, expected.out_cols)
    # the same code makes both thetas from the same numbers: equal to the bit
    np.testing.assert_array_equal(got.theta, expected.theta)


@given(networks(), st.integers(0, 2**32 - 1))
def test_a_known_structure_with_other_values_is_the_plan_compiling_it_gives(
    case: tuple[dict[str, Any], dict[str, Any]], seed: int
) -> None:
    net, samples = case
    other = _revalued(net, seed)
    first = engine.compile_network(_described(net))
    expected = engine.compile_network(_described(other))
    assert engine.structure_key(_described(net)) == engine.structure_key(_described(other))
    got = engine.with_parameters(first, _described(other))
    _same_plan(got, expected)
    batch = binding.bind_samples(got, wire.Samples.model_validate(samples), True)
    with np.errstate(all="ignore"):  # (a random network may overflow: both alike)
        a = engine.forward(got, got.theta, batch.x)
        b = engine.forward(expected, expected.theta, batch.x)
    np.testing.assert_array_equal(a.z, b.z)


def test_the_structure_is_every_field_but_the_values() -> None:
    net = {
        "units": [
            {"id": "x", "role": "input"},
            {"id": "h", "activation": "leaky_relu", "slope": 0.1},
            {"id": "o", "role": "output"},
        ],
        "weights": [
            {"source": "x", "target": "h", "value": 1.0},
            {"source": "h", "target": "o", "value": 2.0},
        ],
    }
    key = engine.structure_key(_described(net))
    changes = [
        lambda n: n["units"][1].update(activation="tanh", slope=None),
        lambda n: n["units"][1].update(slope=0.2),
        lambda n: n["units"][1].update(size=2),
        lambda n: n["units"][1].update(aggregation="mean"),
        lambda n: n["units"][1].update(response=1.0),
        lambda n: (
            n["units"][1].update(id="g")
            or n["weights"][0].update(target="g")
            or n["weights"][1].update(source="g")
        ),
        lambda n: (
            n["units"][2].update(role="hidden")
            or n["units"].append({"id": "p", "role": "output"})
            or n["weights"].append({"source": "o", "target": "p", "value": 1.0})
        ),
        lambda n: n["weights"].reverse(),
        lambda n: n.update(loss="huber"),
        lambda n: n.update(loss="huber", huber_delta=0.5),
    ]
    for change in changes:
        other = copy.deepcopy(net)
        change(other)
        if other["units"][1].get("size") == 2:
            other["weights"][0]["value"] = [[1.0, 1.0]]
            other["weights"][1]["value"] = [[1.0], [1.0]]
        assert engine.structure_key(_described(other)) != key, other
    assert engine.structure_key(_described(_revalued(net, 1))) == key


def test_a_value_of_the_wrong_shape_is_named_as_compiling_names_it() -> None:
    net = {
        "units": [{"id": "x", "role": "input", "size": 2}, {"id": "o", "role": "output", "size": 3}],
        "weights": [{"source": "x", "target": "o", "value": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}],
    }
    plans = engine.Plans(budget=1 << 20)
    plans.compile(_described(net))
    bad = copy.deepcopy(net)
    bad["weights"][0]["value"] = [[1.0, 2.0], [3.0, 4.0]]
    bad["units"][1]["bias"] = [1.0, 2.0]
    with pytest.raises(engine.GraphError) as reused:
        plans.compile(_described(bad))
    with pytest.raises(engine.GraphError) as compiled:
        engine.compile_network(_described(bad))
    assert reused.value.problems == compiled.value.problems
    assert (plans.hits, plans.misses) == (1, 1)


def _chain(n: int, act: str) -> dict[str, Any]:
    ids = ["x", *(f"h{i}" for i in range(n - 1)), "o"]
    units = [{"id": "x", "role": "input"}, *({"id": i, "activation": act} for i in ids[1:-1])]
    units.append({"id": "o", "role": "output"})
    weights = [{"source": a, "target": b, "value": 0.5} for a, b in itertools.pairwise(ids)]
    return {"units": units, "weights": weights}


def _footprint(net: engine.Network) -> int:
    return engine.footprint(engine.compile_network(net))


def test_plans_are_kept_up_to_a_budget_of_bytes_the_last_used_first() -> None:
    a, b, c = (_described(_chain(4, act)) for act in ("tanh", "relu", "sigmoid"))  # alike in size
    size = _footprint(a)
    assert size == _footprint(b) == _footprint(c)
    plans = engine.Plans(budget=2 * size + size // 2)  # room for two
    for net in (a, b, a):
        plans.compile(net)
    assert (plans.hits, plans.misses, len(plans)) == (1, 2, 2)
    plans.compile(c)  # b, used least lately, goes
    plans.compile(a)
    plans.compile(b)
    assert (plans.hits, plans.misses, len(plans)) == (2, 4, 2)
    assert plans.kept == 2 * size
    big = _described(_chain(40, "tanh"))  # more than all it keeps: compiled, never kept
    assert _footprint(big) > plans.budget
    plans.compile(big)
    plans.compile(big)
    assert (plans.hits, plans.misses) == (2, 6)


def test_structures_without_weights_count_against_the_budget() -> None:
    plans = engine.Plans(budget=20_000)
    for k in range(200):  # a different structure each time: k + 1 outputs, no weights
        units = [{"id": "x", "role": "input"}, *({"id": f"o{j}", "role": "output"} for j in range(k + 1))]
        plans.compile(_described({"units": units, "weights": []}))
    assert plans.misses == 200
    assert 0 < plans.kept <= plans.budget
    assert len(plans) < 200


def test_a_layer_s_weights_count_by_their_elements_when_gathered() -> None:
    """A plan whose level is gathered keeps index arrays as long as its weights' elements: its
    footprint says so, however few its weights."""
    net = {
        "units": [
            {"id": "a", "role": "input", "size": 30},
            {"id": "b", "role": "input", "size": 30},
            {"id": "o", "role": "output", "size": 30},
        ],
        "weights": [
            {"source": "a", "target": "o", "value": np.ones((30, 30)).tolist()},
            {"source": "b", "target": "o", "value": np.ones((30, 30)).tolist()},
        ],
    }
    plan = engine.compile_network(_described(net))
    gathered = [b.params for lv in plan.levels for b in lv.blocks if isinstance(b.params, np.ndarray)]
    assert gathered  # (two weights into one layer: one gathered block over both)
    assert engine.footprint(plan) > sum(p.nbytes for p in gathered) >= 2 * 30 * 30 * 8


def test_a_kept_plan_keeps_none_of_the_parameters_it_was_compiled_with() -> None:
    plans = engine.Plans(budget=1 << 20)
    net = _described(_chain(3, "tanh"))
    first = plans.compile(net)
    assert first.theta.size > 0
    ((kept, _),) = plans._plans.values()
    assert kept.theta.size == 0
    again = plans.compile(net)
    np.testing.assert_array_equal(again.theta, first.theta)


def test_a_kept_plan_holds_no_array_of_the_request_it_came_from() -> None:
    values = np.arange(6, dtype=np.float64).reshape(2, 3)
    net = engine.Network(
        [engine.Unit("x", "input", 2, "identity"), engine.Unit("o", "output", 3, "identity")],
        engine.WeightList(["x"], ["o"], [values]),
    )
    plan = engine.compile_network(net)
    assert plan.sparse is not None
    assert plan.sparse.edges.values == ()
    assert not np.shares_memory(plan.theta, values)


def test_an_invalid_network_of_a_known_structure_is_refused_through_the_api() -> None:
    net = {
        "units": [{"id": "x", "role": "input"}, {"id": "o", "role": "output"}],
        "weights": [{"source": "x", "target": "o", "value": 1.0}],
    }
    binding.compile_network(wire.Network.model_validate(net))
    bad = copy.deepcopy(net)
    bad["weights"][0]["value"] = [[1.0, 2.0]]
    with pytest.raises(InvalidGraphError, match=r"weight x->o has shape \[1, 2\], expected \[1, 1\]"):
        binding.compile_network(wire.Network.model_validate(bad))


def test_answers_for_one_structure_follow_each_request_s_own_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.pipeline import dispatch
    from service.settings import Limits

    net = {
        "units": [
            {"id": "x", "role": "input", "size": 2},
            {"id": "h", "size": 2},
            {"id": "o", "role": "output"},
        ],
        "weights": [
            {"source": "x", "target": "h", "value": [[0.5, -0.2], [0.1, 0.3]]},
            {"source": "h", "target": "o", "value": [[1.0], [-1.0]]},
        ],
    }
    samples = {"inputs": {"x": [[1.0, 2.0]]}, "targets": {"o": [[0.5]]}}
    bodies = [
        wire.GradientsRequest.model_validate({"network": n, "samples": samples}).model_dump_json().encode()
        for n in (net, _revalued(net, 7), _revalued(net, 8))
    ]
    reused = [dispatch.handle("gradients", body, Limits()).content for body in bodies]
    monkeypatch.setattr(binding, "PLANS", engine.Plans(budget=0))  # every one compiled anew
    compiled = [dispatch.handle("gradients", body, Limits()).content for body in bodies]
    assert reused == compiled
    assert len(set(compiled)) == 3
