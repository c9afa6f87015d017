"""Input gradients, Hessian-vector products and the new losses against torch itself, float64, on
drawn DAGs with every activation and loss (torch is not a dependency: skipped without it).

The service's endpoint functions run in-process on the wire's requests; torch's autograd runs
the same network written in torch (tests/torch_net.py). Tolerances are relative to the size of
the result, with room for rounding any correct order of operations meets: the two sides add
the same terms in different orders (and torch's sigmoid, say, may round its last bit apart).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from service import engine, wire
from service.endpoints import compute, hvp
from service.problems import NonFiniteResultError
from service.settings import Limits
from tests.strategies import networks
from tests.support import compile_and_bind

torch = pytest.importorskip("torch")

from tests.torch_net import TorchNet  # noqa: E402  (needs torch)

#: the largest error allowed, relative to the largest entry of the result (its inf-norm)
RELATIVE = 1e-12
#: the largest relative errors seen, by what was compared (printed with -s: the figures the
#: README and the closing note quote)
WORST: dict[str, float] = {}


def _close(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    """Within RELATIVE of the result's norm: max |ours - theirs| <= 1e-12 max |theirs|."""
    error = float(np.abs(ours - theirs).max(initial=0.0))
    size = float(np.abs(theirs).max(initial=0.0))
    assert error <= RELATIVE * size, (what, error, size)
    WORST[what] = max(WORST.get(what, 0.0), error / size if size > 0 else 0.0)


def teardown_module() -> None:
    for what, error in sorted(WORST.items()):
        print(f"\n{what}: largest relative error {error:.3g}", end="")


def _vector(plan: engine.Plan, rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray]:
    """A random direction: in the wire's form (some biases left out: zeros) and as theta."""
    v = rng.normal(size=plan.n_params)
    weights: list[Any] = [v[w.params].reshape(w.shape).tolist() for w in plan.weights]
    biases, responses = {}, {}
    for u in plan.units:
        if u.role == "input":
            continue
        if rng.random() < 0.25:
            v[plan.bias_params(u)] = 0.0
        else:
            biases[u.id] = v[plan.bias_params(u)].tolist()
        if plan.has_responses:
            responses[u.id] = v[plan.response_params(u)].tolist()
    given: dict[str, Any] = {"weights": weights, "biases": biases}
    if plan.has_responses:
        given["responses"] = responses
    return given, v


def _by_parameter(plan: engine.Plan, tn: TorchNet, flat: np.ndarray) -> tuple[np.ndarray, ...]:
    """A vector over theta cut into torch's parameters, in their order."""
    parts = [flat[w.params] for w in plan.weights]
    parts += [flat[plan.bias_params(plan.units[plan.unit_index[uid]])] for uid in tn.biases]
    parts += [flat[plan.response_params(plan.units[plan.unit_index[uid]])] for uid in tn.responses]
    return tuple(parts)


def _flat_answer(plan: engine.Plan, body: dict[str, Any], key: str) -> np.ndarray:
    """H v (or the gradients) of an answer, back into theta's layout."""
    flat = np.empty(plan.n_params)
    part = body[key]
    for k, w in enumerate(plan.weights):
        value = part["weights"][k]
        flat[w.params] = np.ravel(value["value"] if isinstance(value, dict) else value)
    for u in plan.units:
        if u.role != "input":
            flat[plan.bias_params(u)] = np.ravel(part["biases"][u.id])
            if plan.has_responses:
                flat[plan.response_params(u)] = np.ravel(part["responses"][u.id])
    return flat


def _torch_hvp(tn: TorchNet, v: tuple[np.ndarray, ...], reduction: str) -> tuple[float, np.ndarray]:
    """torch.autograd.functional.hvp: the loss, and H v flattened in the parameters' order."""
    params = tuple(p.detach() for p in tn.params)
    tangents = tuple(
        torch.tensor(part.reshape(p.shape), dtype=torch.float64) for part, p in zip(v, params, strict=True)
    )

    def f(*p: Any) -> Any:
        return tn.loss(p, reduction)

    loss, product = torch.autograd.functional.hvp(f, params, tangents)
    return float(loss), np.concatenate([t.detach().numpy().ravel() for t in product])


@settings(max_examples=150)
@given(networks(), st.sampled_from(["mean", "sum"]), st.integers(0, 2**32 - 1))
def test_hvp_agrees_with_torch_autograd_functional_hvp(
    case: tuple[dict[str, Any], dict[str, Any]], reduction: str, seed: int
) -> None:
    net, samples = case
    plan, _ = compile_and_bind(net, samples)
    given_v, v = _vector(plan, np.random.default_rng(seed))
    request = wire.HvpRequest.model_validate(
        {"network": net, "samples": samples, "reduction": reduction, "vector": given_v}
    )
    try:
        body = hvp.hvp(request, Limits())
    except NonFiniteResultError:
        assume(False)  # (an overflow is refused by name; torch's is an inf)
    tn = TorchNet.of(net, samples)
    loss, theirs = _torch_hvp(tn, _by_parameter(plan, tn, v), reduction)
    ours = np.concatenate(_by_parameter(plan, tn, _flat_answer(plan, body, "hvp")))
    assume(np.isfinite(theirs).all())
    _close(ours, theirs, f"hvp, {net['loss']}")
    assert body["vhv"] == pytest.approx(float(v @ _flat_answer(plan, body, "hvp")), rel=1e-12, abs=1e-300)
    assert body["loss"] == pytest.approx(loss, rel=1e-12)


@settings(max_examples=150)
@given(networks(), st.sampled_from(["mean", "sum"]))
def test_input_gradients_agree_with_torch_x_grad(
    case: tuple[dict[str, Any], dict[str, Any]], reduction: str
) -> None:
    """gradients.inputs is x.grad after loss.backward(); per_sample.inputs each sample's own
    dE_n/dx_n (x.grad of the summed loss: samples do not mix), unscaled."""
    net, samples = case
    request = wire.GradientsRequest.model_validate(
        {"network": net, "samples": samples, "reduction": reduction, "wrt_inputs": True, "per_sample": True}
    )
    try:
        body = compute.gradients(request, Limits())
    except NonFiniteResultError:
        assume(False)
    reduced, summed = TorchNet.of(net, samples), TorchNet.of(net, samples)
    reduced.loss(reduction=reduction).backward()
    summed.loss(reduction="sum").backward()
    for uid, x in reduced.x.items():
        # an input with no path to an output has no .grad in torch: its gradient is 0
        theirs, per = (np.zeros(x.shape) if t.grad is None else t.grad.numpy() for t in (x, summed.x[uid]))
        assume(np.isfinite(theirs).all() and np.isfinite(per).all())
        _close(np.asarray(body["gradients"]["inputs"][uid]), theirs, "input gradients")
        _close(np.asarray(body["per_sample"]["inputs"][uid]), per, "per-sample input gradients")


@settings(max_examples=150)
@given(networks(losses=["binary_cross_entropy", "huber"]), st.sampled_from(["mean", "sum"]))
def test_bce_and_huber_agree_with_torch_bceloss_and_huberloss(
    case: tuple[dict[str, Any], dict[str, Any]], reduction: str
) -> None:
    """The loss and every parameter's gradient: E_n the sum over the outputs' entries of torch's
    per-element terms (its reduction 'sum'), then the mean or sum over the batch."""
    net, samples = case
    plan, batch = compile_and_bind(net, samples)
    request = wire.GradientsRequest.model_validate(
        {"network": net, "samples": samples, "reduction": reduction}
    )
    try:
        body = compute.gradients(request, Limits())
    except NonFiniteResultError:
        assume(False)
    tn = TorchNet.of(net, samples)
    loss = tn.loss(reduction=reduction, bce_module=True)
    # where z (1 - z) < 1e-12 torch's BCE backward divides by 1e-12 instead: not the derivative
    assume(net["loss"] != "binary_cross_entropy" or _bce_outputs_inside(plan, batch))
    loss.backward()
    theirs = np.concatenate(
        [p.grad.numpy().ravel() if p.grad is not None else np.zeros(p.numel()) for p in tn.params]
    )
    ours = np.concatenate(_by_parameter(plan, tn, _flat_answer(plan, body, "gradients")))
    assert body["loss"] == pytest.approx(float(loss.detach()), rel=1e-12)
    _close(ours, theirs, f"gradients, {net['loss']} (torch's own loss module)")


def _bce_outputs_inside(plan: engine.Plan, batch: engine.Batch) -> bool:
    z = engine.forward(plan, plan.theta, batch.x).z[plan.out_cols]
    return bool((z * (1.0 - z) >= 1e-12).all())
