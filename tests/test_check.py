"""Check: gradients, the service's own or claimed ones, against central differences."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from service import wire
from service.endpoints import gradcheck
from service.settings import Settings
from tests import seed
from tests.strategies import networks
from tests.support import asgi

LIMITS = Settings().limits()


def checked(net: dict[str, Any], samples: dict[str, Any], **options: Any) -> dict[str, Any]:
    req = wire.CheckRequest.model_validate_json(json.dumps({"network": net, "samples": samples, **options}))
    return json.loads(json.dumps(gradcheck.check(req, LIMITS), default=lambda a: a.tolist()))


@settings(max_examples=40)
@given(networks(max_hidden=3))
def test_check_passes_the_services_own_gradients(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    net, samples = case
    body = checked(net, samples)
    assert body["ok"], body
    entries = [*body["weights"], *body["biases"].values(), *(body.get("responses") or {}).values()]
    got = np.concatenate([np.ravel(e["checked"]) for e in entries])
    numeric = np.concatenate([np.ravel(e["numeric"]) for e in entries])
    size = np.maximum(np.abs(got), np.abs(numeric))
    # relative to gradients well above the differences' roundoff (E * 1e-16 / epsilon): a zero
    # gradient (a softmax of one entry, a saturated unit) has a numeric one of about 1e-11
    large = size > 1e-6
    assert (np.abs(got - numeric)[large] / size[large]).max(initial=0.0) < 1e-4
    assert body["max_rel_error"] <= 1.0


def test_check_singles_out_a_claimed_gradient_wrong_in_one_entry() -> None:
    case = seed.two_outputs()
    claimed = {
        "weights": [
            {"source": w["source"], "target": w["target"], "value": g}
            for w, g in zip(case.network["weights"], case.weight_gradients, strict=True)
        ],
        "biases": {"j": case.deltas["j"], "o": case.deltas["o"]},
    }
    assert checked(case.network, case.samples, gradients=claimed)["ok"] is True
    claimed["weights"][2]["value"] *= 1.01  # the student's slip
    body = checked(case.network, case.samples, gradients=claimed)
    assert body["ok"] is False
    assert [w["ok"] for w in body["weights"]] == [True, True, False, True, True]
    assert all(b["ok"] for b in body["biases"].values())
    assert set(body["biases"]) == {"j", "o"}  # only what was claimed is checked
    assert body["weights"][2]["numeric"] == pytest.approx(case.weight_gradients[2], rel=1e-7)


def test_check_refuses_claims_that_do_not_fit() -> None:
    case = seed.chain()
    request = {
        "network": case.network,
        "samples": case.samples,
        "gradients": {"weights": [{"source": "x", "target": "o", "value": 1.0}]},
    }
    (response,) = asgi(Settings(), ("POST", "/v1/check", {"json": request}))
    assert response.status_code == 422
    assert "the network has no weight x->o" in response.json()["detail"]


def test_check_is_bounded_by_the_work_limit() -> None:
    case = seed.chain()
    (response,) = asgi(
        Settings(max_work=50),
        ("POST", "/v1/check", {"json": {"network": case.network, "samples": case.samples}}),
    )
    assert response.status_code == 413
    assert "checking 6 parameters" in response.json()["detail"]


def test_a_zero_gradient_claimed_as_rounding_noise_has_no_relative_error() -> None:
    """Trained to zero loss, gradients are rounding noise (2e-15 against a numeric 0): "relative
    error 1" said nothing; values within atol of zero have no relative error to report."""
    case = seed.chain()
    samples = {"inputs": {"x": [0.0]}, "targets": {"o": [0.25]}}  # z_x = 0: dE/dw_{x->j} is 0 exactly
    claimed = {"weights": [{"source": "x", "target": "j", "value": 2.02e-15}]}
    body = checked(case.network, samples, gradients=claimed)
    assert body["ok"] is True
    assert body["max_abs_error"] == pytest.approx(2.02e-15, rel=1e-6)
    assert body["max_rel_error"] == 0.0
    # above atol, the relative error is the plain one
    claimed["weights"][0]["value"] = 1e-3
    body = checked(case.network, samples, gradients=claimed)
    assert body["ok"] is False
    assert body["max_rel_error"] == pytest.approx(1.0)
