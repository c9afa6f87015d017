"""Explain: the seed's derivation, path by path, as a service."""

from __future__ import annotations

import itertools
import json
import math
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from service import wire
from service.endpoints import explain
from service.problems import LimitExceededError
from service.settings import Settings
from tests import seed
from tests.strategies import networks
from tests.support import asgi

LIMITS = Settings().limits()


def explained(net: dict[str, Any], samples: dict[str, Any], **options: Any) -> dict[str, Any]:
    req = wire.ExplainRequest.model_validate_json(json.dumps({"network": net, "samples": samples, **options}))
    return json.loads(json.dumps(explain.explain(req, LIMITS), default=lambda a: a.tolist()))


def as_array(value: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(value, dtype=float))


# ---------------------------------------------------------------- explain: the seed's cases


def test_the_chain_has_one_path_per_weight_equal_to_the_closed_form() -> None:
    case = seed.chain()
    body = explained(case.network, case.samples)
    for weight, expected in zip(body["weights"], case.weight_gradients, strict=True):
        (path,) = weight["paths"]
        assert path["value"] == pytest.approx(expected, rel=1e-12)
        assert weight["gradient"] == pytest.approx(expected, rel=1e-12)
        assert path["units"][-1] == "o"
    j_to_k = body["weights"][1]
    names = [f["name"] for f in j_to_k["paths"][0]["factors"]]
    assert names == [
        "(yhat - y)",
        "w_k->o",
        "sigmoid'(s_k)",
        "z_j",
    ]  # the seed's coloured terms, in its order
    assert j_to_k["latex"].startswith(
        r"\frac{\partial E}{\partial w_{j\to k}} = (\hat{y}-y)\,(w_{k\to o})\,\sigma'(s_{k})\,z_{j} = "
    )
    assert body["loss"] == pytest.approx(case.loss, rel=1e-12)


def test_the_unit_with_two_outputs_sums_its_two_paths() -> None:
    case = seed.two_outputs()
    body = explained(case.network, case.samples)
    first = body["weights"][0]
    assert [p["units"] for p in first["paths"]] == [["j", "k1", "o"], ["j", "k2", "o"]]
    assert [p["value"] for p in first["paths"]] == pytest.approx(list(case.paths), rel=1e-12)
    assert first["gradient"] == pytest.approx(sum(case.paths), rel=1e-12)
    assert (first["paths_total"], first["paths_truncated"]) == (2, False)
    terms = body["units"]["j"]["delta_terms"]
    assert [t["successor"] for t in terms] == ["k1", "k2"]
    assert body["units"]["j"]["delta"][0] == pytest.approx(case.deltas["j"], rel=1e-12)
    assert first["gradient"] < 0
    # the gradient ends the formula bare; only negative factors of a product are in parentheses
    assert first["latex"].endswith(f" = {first['gradient']:.4g}")
    assert r"\cdot (-0.7) \cdot" in first["latex"]


def test_the_unit_with_two_inputs() -> None:
    case = seed.two_inputs()
    body = explained(case.network, case.samples)
    for weight, expected in zip(body["weights"], case.weight_gradients, strict=True):
        assert sum(p["value"] for p in weight["paths"]) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- explain: random graphs


@settings(max_examples=60)
@given(networks(max_hidden=5, singles=True))
def test_paths_add_up_to_the_gradient_and_delta_terms_add_up(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    net, samples = case
    body = explained(net, samples, max_paths=10_000)
    for weight in body["weights"]:
        for path in weight["paths"]:
            assert path["value"] == pytest.approx(math.prod(f["value"] for f in path["factors"]), rel=1e-12)
        if weight["paths_total"] is not None:
            assert not weight["paths_truncated"]
            total = sum(p["value"] for p in weight["paths"])
            assert total == pytest.approx(weight["gradient"], rel=1e-9, abs=1e-12)
    ce = net["loss"] == "cross_entropy"
    for uid, unit in body["units"].items():
        if "delta" not in unit:
            continue
        incoming = sum((as_array(t["value"]) for t in unit["delta_terms"]), np.zeros(1))
        loss_term = as_array(unit.get("loss_term", [0.0]))
        derivative, delta = as_array(unit["derivative"]), as_array(unit["delta"])
        activation = next(u.get("activation") for u in net["units"] if u["id"] == uid)
        if activation == "softmax":
            continue  # a single softmax unit: z is 1, its delta 0 whatever comes in
        expected = (
            loss_term + derivative * incoming
            if ce and "loss_term" in unit
            else derivative * (incoming + loss_term)
        )
        np.testing.assert_allclose(delta, expected, rtol=1e-9, atol=1e-12)
        for term in unit["delta_terms"]:
            scale = as_array(term.get("scale", [1.0]))  # the successor's response (and 1/n of a mean)
            assert ("scale" in term) == any(
                "response" in u or u.get("aggregation") == "mean" for u in net["units"]
            )
            np.testing.assert_allclose(
                as_array(term["value"]),
                np.asarray(term["weight"]) @ (scale * as_array(term["delta"])),
                rtol=1e-12,
            )


def ladder(rungs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """x -> a0, b0 -> a1, b1 -> ... -> o: every rung doubles the paths (2^rungs of them)."""
    units: list[dict[str, Any]] = [{"id": "x", "role": "input"}, {"id": "o", "role": "output"}]
    weights = []
    previous = ["x"]
    for r in range(rungs):
        pair = [f"a{r}", f"b{r}"]
        units += [{"id": u, "activation": "tanh"} for u in pair]
        weights += [{"source": s, "target": t, "value": 0.9} for s in previous for t in pair]
        previous = pair
    weights += [{"source": s, "target": "o", "value": 0.5} for s in previous]
    return {"units": units, "weights": weights}, {"inputs": {"x": [0.3]}, "targets": {"o": [1.0]}}


def test_paths_are_counted_not_enumerated_and_truncation_is_reported() -> None:
    net, samples = ladder(40)
    started = time.monotonic()
    body = explained(net, samples, max_paths=5)
    assert time.monotonic() - started < 60  # (2**39 paths listed would take hours; a generous bound)
    first = body["weights"][0]  # x -> a0
    assert first["paths_total"] == 2**39
    assert len(first["paths"]) == 5
    assert first["paths_truncated"] is True
    assert r"+ \dots" in first["latex"]


def layered(layers: int, width: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """`layers` fully connected layers of `width` single units: width**(layers - 1) paths a weight."""
    names = [[f"l{k}_{i}" for i in range(width)] for k in range(layers)]
    units = [{"id": n, "role": "input"} for n in names[0]]
    units += [
        {"id": n, "role": "output" if k == layers - 1 else "hidden"}
        for k in range(1, layers)
        for n in names[k]
    ]
    weights = [
        {"source": a, "target": b, "value": 0.1}
        for k in range(1, layers)
        for a in names[k - 1]
        for b in names[k]
    ]
    samples = {"inputs": {n: [0.5] for n in names[0]}, "targets": {n: [0.0] for n in names[-1]}}
    return {"units": units, "weights": weights}, samples


def test_the_factors_an_answer_lists_are_limited() -> None:
    """448 weights with up to 8**6 paths each: at max_paths=10,000 that answer was 1 GB, 6 GB of
    memory and 90 s of a worker; now it is refused as soon as it passes the limit."""
    net, samples = layered(8, 8)
    with pytest.raises(LimitExceededError, match="max_explain_factors") as raised:
        explained(net, samples, max_paths=10_000)
    assert "max_paths" in raised.value.detail
    small = Settings(max_explain_factors=10**9).limits()
    net, samples = layered(3, 3)
    request = wire.ExplainRequest.model_validate({"network": net, "samples": samples})
    body = explain.explain(request, small)
    listed = sum(len(p["factors"]) for w in body["weights"] for p in w["paths"])
    limited = Settings(max_explain_factors=listed).limits()
    assert explain.explain(request, limited)["weights"] == body["weights"]  # exactly enough
    with pytest.raises(LimitExceededError):
        explain.explain(request, Settings(max_explain_factors=listed - 1).limits())


def test_a_deep_chain_has_one_path_a_weight_in_the_seeds_order() -> None:
    units = [
        {"id": "x", "role": "input"},
        *({"id": f"h{k}"} for k in range(300)),
        {"id": "o", "role": "output"},
    ]
    chain = ["x", *(f"h{k}" for k in range(300)), "o"]
    weights = [{"source": a, "target": b, "value": 1.0} for a, b in itertools.pairwise(chain)]
    body = explained({"units": units, "weights": weights}, {"inputs": {"x": [0.1]}, "targets": {"o": [0.0]}})
    first = body["weights"][0]["paths"]
    assert len(first) == 1
    assert len(first[0]["factors"]) == 1 + 2 * 300 + 1  # yhat - y; w and f' a step from h0 on; z_x
    assert first[0]["units"] == chain[1:]
    assert [f["name"] for f in first[0]["factors"]][-3:] == ["w_h0->h1", "sigmoid'(s_h0)", "z_x"]


def test_a_count_of_paths_past_64_bits_is_answered() -> None:
    from service.pipeline import dispatch

    net, samples = ladder(80)  # 2**79 paths from x -> a0: over what orjson writes as an integer
    body = json.dumps({"network": net, "samples": samples, "max_paths": 2}).encode()
    reply = dispatch.handle("explain", body, LIMITS)
    assert reply.status == 200, reply.content[:300]
    answer = wire.ExplainResponse.model_validate_json(reply.content)
    assert answer.weights[0].paths_total == float(2**79)
    assert answer.weights[-1].paths_total == 1


def test_explain_picks_a_sample_and_refuses_one_out_of_range() -> None:
    case = seed.chain()
    samples = {"inputs": {"x": [1.5, -0.5]}, "targets": {"o": [0.25, 0.0]}}
    second = explained(case.network, samples, sample=1)
    assert second["units"]["x"]["z"] == [-0.5]
    (response,) = asgi(
        Settings(),
        ("POST", "/v1/explain", {"json": {"network": case.network, "samples": samples, "sample": 2}}),
    )
    assert response.status_code == 422
    assert "sample 2 is out of range: the batch has 2 sample(s)" in response.json()["detail"]


def test_layers_get_their_gradient_without_paths() -> None:
    net = {
        "units": [
            {"id": "x", "role": "input", "size": 2},
            {"id": "h", "size": 3},
            {"id": "o", "role": "output"},
        ],
        "weights": [
            {"source": "x", "target": "h", "value": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]},
            {"source": "h", "target": "o", "value": [[1.0], [-1.0], [0.5]]},
        ],
    }
    body = explained(net, {"inputs": {"x": [[1.0, 2.0]]}, "targets": {"o": [0.0]}})
    first = body["weights"][0]
    assert np.asarray(first["gradient"]).shape == (2, 3)
    np.testing.assert_allclose(first["gradient"], np.outer(first["z_source"], first["delta_target"]))
    assert (first["paths"], first["paths_total"]) == ([], None)
