"""The request layer: the engine's errors become problems located in the request's JSON."""

from __future__ import annotations

import pytest

from service import wire
from service.convert import binding
from service.problems import MAX_LISTED, InvalidGraphError, InvalidSamplesError
from tests import seed


def test_a_network_wrong_everywhere_lists_the_first_problems_and_says_there_are_more() -> None:
    net = {
        **seed.chain().network,
        "weights": [{"source": f"q{k}", "target": "o", "value": 1.0} for k in range(3 * MAX_LISTED)],
    }
    with pytest.raises(InvalidGraphError) as info:
        binding.compile_network(wire.Network.model_validate(net))
    assert info.value.errors is not None
    assert len(info.value.errors) == MAX_LISTED
    assert info.value.errors[0] == {
        "loc": ["network", "weights", 0],
        "msg": "weight q0->o names unknown unit(s) 'q0'",
    }
    assert info.value.detail.endswith(f"(and more: the first {MAX_LISTED} are listed)")


def test_sample_problems_are_located_under_samples() -> None:
    plan = binding.compile_network(wire.Network.model_validate(seed.chain().network))
    samples = wire.Samples.model_validate({"inputs": {"x": [[1.0, 2.0]]}, "targets": {"o": [0.5]}})
    with pytest.raises(InvalidSamplesError) as info:
        binding.bind_samples(plan, samples, True)
    assert info.value.errors == [
        {"loc": ["samples", "inputs", "x"], "msg": "inputs['x'] has shape [1, 2], expected [batch, 1]"}
    ]
