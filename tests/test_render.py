"""Render: a network drawn as SVG or Graphviz DOT, and the limits on drawing."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings

from service import wire
from service.endpoints import render
from service.pipeline import costs, refusal
from service.pipeline.handlers import HANDLERS
from service.problems import InvalidRequestError, LimitExceededError
from service.settings import Settings
from tests import seed
from tests.strategies import networks

LIMITS = Settings().limits()


def drawn(net: dict[str, Any], samples: dict[str, Any] | None = None, show: str = "weights") -> ET.Element:
    req = wire.RenderRequest.model_validate_json(
        json.dumps({"network": net, "samples": samples, "show": show})
    )
    document = render.render(req, LIMITS, "svg")
    assert document.media_type == "image/svg+xml"
    return ET.fromstring(document.content)


SVG = "{http://www.w3.org/2000/svg}"
MOVE = re.compile(r"M ([-\d.]+) ([-\d.]+) C .*, ([-\d.]+) ([-\d.]+)$")


@settings(max_examples=40)
@given(networks(max_hidden=6))
def test_render_draws_every_unit_and_every_edge_left_to_right(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    net, samples = case
    for svg in (drawn(net), drawn(net, samples, show="gradients")):
        assert {g.get("data-id") for g in svg.iter(SVG + "g")} == {u["id"] for u in net["units"]}
        edges = list(svg.iter(SVG + "path"))
        assert len(edges) == len(net["weights"])
        for edge in edges:
            match = MOVE.match(edge.get("d", ""))
            assert match is not None
            assert float(match.group(1)) < float(match.group(3))


def test_render_labels_units_and_edges() -> None:
    case = seed.chain()
    svg = drawn(case.network, case.samples)
    text = " ".join("".join(t.itertext()) for t in svg.iter(SVG + "text"))
    for piece in ["x", "j", "sigmoid", "identity", "z=0.679", "0.5", "-0.3", "0.8"]:
        assert piece in text
    colours = {e.get("data-target"): e.get("stroke") for e in svg.iter(SVG + "path")}
    assert colours == {"j": render.POSITIVE, "k": render.NEGATIVE, "o": render.POSITIVE}


def test_render_as_dot_and_its_limits() -> None:
    case = seed.two_outputs()
    req = wire.RenderRequest.model_validate_json(json.dumps({"network": case.network}))
    text = render.render(req, LIMITS, "dot").content.decode()
    assert text.startswith("digraph gradserve {")
    assert '"j" -> "k2"' in text
    small = Settings(max_render_units=3).limits()
    with pytest.raises(LimitExceededError, match="max_render_units = 3"):
        refusal.admit(HANDLERS["render"], req, costs.estimate(costs.render, req, small), small)
    with pytest.raises(InvalidRequestError, match="show=gradients needs samples"):
        render.render(
            wire.RenderRequest.model_validate({"network": case.network, "show": "gradients"}), LIMITS, "svg"
        )
