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
from service.middleware import RequestContext
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
