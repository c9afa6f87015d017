"""Edge inputs that reached a 500 or a non-finite answer, each now a 200 or a 422 (issue 12,
items 8 and 11), driven through a live server over one keep-alive connection."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import math
import re
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import wire
from service.http.middleware import RequestContext
from tests import seed
from tests.test_explain import ladder

Request = dict[str, Any]


def chain_request(**extra: Any) -> Request:
    case = seed.chain()
    return {"network": copy.deepcopy(case.network), "samples": copy.deepcopy(case.samples), **extra}


def post(http: httpx.Client, endpoint: str, body: Request | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(f"/v1/{endpoint}", content=content, headers={"content-type": "application/json"})


def problem(response: httpx.Response, status: int) -> wire.Problem:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    return wire.Problem.model_validate(response.json())


def still_serves(http: httpx.Client) -> None:
    """The next request on the same connection is answered: the server did not drop it."""
    response = post(http, "gradients", chain_request())
    assert response.status_code == 200, response.text[:300]


# ---------------------------------------------------------------- 8a: shapes of encoded arrays


def encoded_shape(shape: list[int]) -> dict[str, Any]:
    return {"dtype": "float64", "shape": shape, "data": ""}


HUGE_SHAPES = [[0, 10**20], [0, 2**62, 2**62], [10**20, 0], [0, 2**40, 2**40, 2**40]]


def with_weight(request: Request, value: Any) -> Request:
    request["network"]["weights"][0]["value"] = value
    return request


def with_bias(request: Request, value: Any) -> Request:
    request["network"]["units"][1]["bias"] = value
    return request


def with_input(request: Request, value: Any) -> Request:
    request["samples"]["inputs"]["x"] = value
    return request


def with_column(request: Request, value: Any) -> Request:
    request["network"]["weights"] = {"source": ["x", "j", "k"], "target": ["j", "k", "o"], "value": value}
    return request


def with_claimed(request: Request, value: Any) -> Request:
    request["gradients"] = {"weights": [{"source": "x", "target": "j", "value": value}]}
    return request


PLACES = [
    ("gradients", with_weight),
    ("forward", with_bias),
    ("sgd", with_input),
    ("explain", with_column),
    ("check", with_claimed),
    ("render", with_weight),
]


@pytest.mark.chaos
@pytest.mark.parametrize("shape", HUGE_SHAPES, ids=str)
def test_a_shape_past_what_numpy_can_hold_is_a_422_and_the_connection_lives(
    http: httpx.Client, shape: list[int]
) -> None:
    """[0, 1e20] holds no element, yet NumPy refuses to make it: that was a 500, and uvicorn then
    closed the keep-alive connection."""
    for endpoint, place in PLACES:
        request = place(
            chain_request(learning_rate=0.1) if endpoint == "sgd" else chain_request(), encoded_shape(shape)
        )
        if endpoint == "render":
            request["show"] = "gradients"
        answer = problem(post(http, endpoint, request), 422)
        assert "shape" in answer.detail, answer.detail
        assert answer.errors
        assert answer.errors[0].loc[-1] == "shape"
        still_serves(http)


ARRAYS = st.one_of(
    st.fixed_dictionaries(
        {
            "dtype": st.sampled_from(["float64", "float32"]),
            "shape": st.lists(
                st.one_of(st.integers(0, 4), st.integers(0, 2**70)),
                max_size=9,
            ),
            "data": st.one_of(
                st.binary(max_size=64).map(lambda raw: base64.b64encode(raw).decode()),
                st.text(max_size=12),
            ),
        }
    ),
    st.recursive(
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70)),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=12,
    ),
)


@pytest.mark.chaos
@settings(max_examples=60)
@given(st.sampled_from(PLACES), ARRAYS)
def test_no_array_in_any_form_reaches_a_500(server_url: str, place: tuple[str, Any], value: Any) -> None:
    endpoint, put = place
    request = put(chain_request(learning_rate=0.1) if endpoint == "sgd" else chain_request(), value)
    with httpx.Client(base_url=server_url, timeout=30) as http:
        response = post(http, endpoint, request)
        assert response.status_code in (200, 400, 413, 422), response.text[:500]
        if response.status_code != 200:
            problem(response, response.status_code)
        still_serves(http)


# ---------------------------------------------------------------- 8b: more paths than a float holds


@pytest.mark.chaos
def test_a_count_of_paths_past_float64_is_answered_with_its_log(http: httpx.Client) -> None:
    """A ladder of 1,030 levels has 2**1029 paths from x -> a0: float() of that count was a 500."""
    net, samples = ladder(1030)
    response = post(http, "explain", {"network": net, "samples": samples, "max_paths": 0})
    assert response.status_code == 200, response.text[:500]
    answer = wire.ExplainResponse.model_validate_json(response.content)
    first = answer.weights[0]
    assert first.paths_total is None
    assert first.paths_total_log10 == pytest.approx(1029 * math.log10(2), rel=1e-12)
    assert (first.paths, first.paths_truncated) == ([], True)
    last = answer.weights[-1]  # b1029 -> o: one path
    assert (last.paths_total, last.paths_total_log10) == (1, 0.0)


def test_counts_of_paths_are_exact_then_rounded_and_always_have_their_log(http: httpx.Client) -> None:
    net, samples = ladder(60)
    answer = wire.ExplainResponse.model_validate_json(
        post(http, "explain", {"network": net, "samples": samples, "max_paths": 1}).content
    )
    counts = {(w.source, w.target): w for w in answer.weights}
    exact = counts[("a5", "a6")]  # 2**53 paths from a6: the last count written exactly
    assert (exact.paths_total, exact.paths_total_log10) == (2**53, pytest.approx(53 * math.log10(2)))
    rounded = counts[("a4", "a5")]
    assert rounded.paths_total == float(2**54)
    assert isinstance(rounded.paths_total, float)
    assert rounded.paths_total_log10 == pytest.approx(54 * math.log10(2))


def test_the_schema_says_how_a_count_past_float64_is_answered(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()["components"]["schemas"]["ExplainedWeight"]["properties"]
    assert "null past the largest float" in schema["paths_total"]["description"]
    assert "log10" in schema["paths_total_log10"]["description"]


# ---------------------------------------------------------------- 8c: non-finite results


def overflowing(**extra: Any) -> Request:
    """x -> o with x = 1e200 and w = 1e-50: s = 1e150 is fine, the gradient z_x * delta_o is not."""
    return {
        "network": {
            "units": [{"id": "x", "role": "input"}, {"id": "o", "role": "output"}],
            "weights": [{"source": "x", "target": "o", "value": 1e-50}],
        },
        "samples": {"inputs": {"x": [1e200]}, "targets": {"o": [0.0]}},
        **extra,
    }


@pytest.mark.chaos
@pytest.mark.parametrize(
    ("endpoint", "extra"),
    [("gradients", {}), ("explain", {}), ("check", {}), ("render", {"show": "gradients"})],
)
def test_every_endpoint_refuses_an_overflowing_gradient_as_gradients_does(
    http: httpx.Client, endpoint: str, extra: dict[str, Any]
) -> None:
    answer = problem(post(http, endpoint, overflowing(**extra)), 422)
    assert answer.type.endswith("non-finite-result")
    assert "gradient of weight x->o is not finite" in answer.detail


@pytest.mark.chaos
def test_check_refuses_errors_that_overflow(http: httpx.Client) -> None:
    """A claimed gradient and the numeric one each finite (-1.7e308 and 1e307), their difference
    past float64: it was answered as null."""
    request = overflowing(epsilon=1e-307)
    request["network"]["weights"][0]["value"] = 1e-307
    request["samples"]["inputs"]["x"] = [1e307]
    request["gradients"] = {"weights": [{"source": "x", "target": "o", "value": -1.7e308}]}
    answer = problem(post(http, "check", request), 422)
    assert answer.type.endswith("non-finite-result")
    assert "error (checked - numeric) of weight x->o is not finite" in answer.detail


@pytest.mark.chaos
def test_a_path_whose_product_overflows_is_refused_by_name(http: httpx.Client) -> None:
    """Two paths of +-2**1033 cancel in the gradient (0), but neither path's value is a float64:
    it was answered as null (and -inf in the LaTeX). Every weight and input is a power of two, so
    every product and sum on the way is exact and the cancellation holds under any rounding (with
    1e150s it held only without FMA: a fused multiply-add keeps 1e150*1e150's rounding error)."""
    units = [{"id": "x", "role": "input"}, *({"id": u, "activation": "identity"} for u in "hab")]
    units.append({"id": "o", "role": "output"})
    weights = [
        {"source": "x", "target": "h", "value": 2.0**-66},
        {"source": "h", "target": "a", "value": 2.0**500},
        {"source": "h", "target": "b", "value": 2.0**500},
        {"source": "a", "target": "o", "value": 2.0**500},
        {"source": "b", "target": "o", "value": -(2.0**500)},
    ]
    request = {
        "network": {"units": units, "weights": weights},
        "samples": {"inputs": {"x": [2.0**33]}, "targets": {"o": [1.0]}},
    }
    gradients = post(http, "gradients", request)
    assert gradients.status_code == 200, gradients.text[:300]  # every number of it is finite
    answer = problem(post(http, "explain", request), 422)
    assert answer.type.endswith("non-finite-result")
    assert "path x -> h -> a -> o" in answer.detail


@pytest.mark.chaos
@pytest.mark.parametrize("fmt", ["svg", "dot"])
def test_render_draws_weights_near_float64s_largest_without_nan(http: httpx.Client, fmt: str) -> None:
    """sqrt(mean(w**2)) overflowed: stroke-width="nan", labels "rms inf" and "|z|=inf"."""
    request = {
        "network": {
            "units": [
                {"id": "x", "role": "input", "size": 2},
                {"id": "h", "size": 2, "activation": "identity"},
                {"id": "o", "role": "output"},
            ],
            "weights": [
                {"source": "x", "target": "h", "value": [[1e-300, 0.0], [0.0, 1e-300]]},
                {"source": "h", "target": "o", "value": [[1e300], [-1e300]]},
            ],
        },
        "samples": {"inputs": {"x": [[1.5e308, 1.5e308]]}},
    }
    response = http.post(f"/v1/render?format={fmt}", json=request)
    assert response.status_code == 200, response.text[:300]
    assert re.search(r"\b(nan|inf)\b", response.text, re.IGNORECASE) is None, response.text
    if fmt == "svg":
        widths = [float(w) for w in re.findall(r'class="edge"[^>]*stroke-width="([^"]+)"', response.text)]
        assert widths
        assert all(1.0 <= w <= 6.0 for w in widths)
        assert "|z|=&gt;1.8e+308" in response.text  # x's norm is past float64: said so, not inf


# ---------------------------------------------------------------- 11: smaller ones


def test_max_paths_zero_lists_no_path(http: httpx.Client) -> None:
    response = post(http, "explain", chain_request(max_paths=0))
    answer = wire.ExplainResponse.model_validate_json(response.content)
    for weight in answer.weights:
        assert (weight.paths, weight.paths_total, weight.paths_truncated) == ([], 1, True)
        assert r"\dots" in weight.latex


def test_an_unknown_key_is_echoed_only_in_part(http: httpx.Client) -> None:
    long = "k" * 100_000
    request = chain_request(**{long: 1})
    request["samples"]["inputs"]["q" * 50_000] = [1.0]
    response = post(http, "gradients", request)
    answer = problem(response, 422)
    assert len(response.content) < 2_000
    assert "k" * 64 + "…" in answer.detail
    assert answer.errors is not None
    assert {"k" * 64 + "…", "q" * 64 + "…"} <= {part for e in answer.errors for part in e.loc}


def test_a_huge_integer_is_not_echoed_whole(http: httpx.Client) -> None:
    body = json.dumps(chain_request(sample=7)).replace('"sample": 7', '"sample": 1' + "0" * 1000)
    answer = problem(post(http, "explain", body.encode()), 422)
    assert "sample over 2**3,321 is out of range" in answer.detail
    assert len(answer.detail) < 200


@pytest.mark.parametrize("bad", ["a\n", "a\r\n", "\na", "a\x00"])
def test_an_id_with_a_line_break_is_refused_everywhere(http: httpx.Client, bad: str) -> None:
    """The patterns are anchored at the very end ($ in Python's re would pass "a\\n")."""
    unit = chain_request()
    unit["network"]["units"][1]["id"] = bad
    sample = chain_request()
    sample["samples"]["inputs"][bad] = [1.0]
    column = with_column(chain_request(), [0.5, -0.3, 0.8])
    column["network"]["weights"]["source"][0] = bad
    for request in (unit, sample, column):
        assert "pattern" in problem(post(http, "gradients", request), 422).detail


def test_a_request_id_with_a_line_break_is_replaced() -> None:
    """A client's X-Request-ID is echoed only when the whole of it is sane."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["state"]["request_id"])

    async def call(value: bytes) -> None:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-request-id", value)]}
        await RequestContext(app)(scope, None, None)  # type: ignore[arg-type]

    for value in (b"abc\n", b"abc", b"a" * 129):
        asyncio.run(call(value))
    assert seen[0] != "abc\n"
    assert len(seen[0]) == 32
    assert seen[1] == "abc"
    assert seen[2] != "a" * 129


def test_a_key_given_twice_keeps_the_last_as_documented(http: httpx.Client) -> None:
    """Refusing duplicates would take a second parse of every body; the rule is written down."""
    once = chain_request()
    once["network"]["weights"][0]["value"] = 0.7
    twice = json.dumps(chain_request()).replace('"value": 0.5', '"value": 0.5, "value": 0.7')
    assert post(http, "gradients", twice.encode()).json() == post(http, "gradients", once).json()
    description = http.get("/openapi.json").json()["info"]["description"]
    assert "the last occurrence wins" in description
