"""The layered layout of /v1/render (service.endpoints.drawing): its SVG and its layout answer, which the
playground draws."""

from __future__ import annotations

import itertools
import json
import random
import re
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from hypothesis import given, settings

from service import wire
from service.endpoints import drawing, render
from service.settings import Settings
from tests import seed
from tests.drawings import layout_faults, neat_like, overlap, path_points
from tests.strategies import networks

SVG = "{http://www.w3.org/2000/svg}"
LIMITS = Settings().limits()


def drawn(net: dict[str, Any], samples: dict[str, Any] | None = None) -> ET.Element:
    req = wire.RenderRequest.model_validate_json(json.dumps({"network": net, "samples": samples}))
    return ET.fromstring(render.render(req, LIMITS, "svg").content)


def picture_faults(svg: ET.Element) -> list[str]:
    """Edges that pass behind a unit they do not join, and labels that overlap a label or a unit."""
    units: dict[str, tuple[float, float, bool]] = {}
    for g in svg.iter(SVG + "g"):
        shape = next(iter(g))
        if shape.tag == SVG + "circle":
            units[g.get("data-id", "")] = (float(shape.get("cx", 0)), float(shape.get("cy", 0)), True)
        else:
            x, w = float(shape.get("x", 0)), float(shape.get("width", 0))
            y, h = float(shape.get("y", 0)), float(shape.get("height", 0))
            units[g.get("data-id", "")] = (x + w / 2, y + h / 2, False)
    half_w, half_h = render.GEOMETRY.box_w / 2, render.GEOMETRY.box_h / 2
    faults = []
    for edge in svg.iter(SVG + "path"):
        joined = {edge.get("data-source"), edge.get("data-target")}
        for uid, (cx, cy, circle) in units.items():
            if uid in joined:
                continue
            for x, y in path_points(edge.get("d", "")):
                inside = (
                    (x - cx) ** 2 + (y - cy) ** 2 < render.RADIUS**2
                    if circle
                    else abs(x - cx) < half_w and abs(y - cy) < half_h
                )
                if inside:
                    faults.append(f"{edge.get('data-source')} -> {edge.get('data-target')} behind {uid}")
                    break
    labels = [
        (
            t.text or "",
            (
                float(t.get("x", 0)) - (len(t.text or "") * render.CHAR_WIDTH + 6) / 2,
                float(t.get("y", 0)) - 4 - render.LABEL_HEIGHT / 2,
                float(t.get("x", 0)) + (len(t.text or "") * render.CHAR_WIDTH + 6) / 2,
                float(t.get("y", 0)) - 4 + render.LABEL_HEIGHT / 2,
            ),
        )
        for t in svg.findall(SVG + "text")
        if t.get("text-anchor") == "middle"
    ]
    boxes = [
        (uid, (cx - half_w, cy - half_h, cx + half_w, cy + half_h)) for uid, (cx, cy, _) in units.items()
    ]
    for (a, box_a), (b, box_b) in itertools.combinations(labels, 2):
        if overlap(box_a, box_b):
            faults.append(f"label {a} over label {b}")
    for (a, box_a), (uid, box_u) in itertools.product(labels, boxes):
        if overlap(box_a, box_u):
            faults.append(f"label {a} over unit {uid}")
    return faults


def test_a_neat_like_graph_has_no_edge_behind_a_unit_and_no_label_over_another() -> None:
    doc = neat_like()
    svg = drawn(doc["network"], doc["samples"])
    assert len(list(svg.iter(SVG + "path"))) == len(doc["network"]["weights"])
    assert picture_faults(svg) == []


@settings(max_examples=40)
@given(networks(max_hidden=6))
def test_no_edge_passes_behind_a_unit_it_does_not_join(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    net, samples = case
    assert [f for f in picture_faults(drawn(net, samples)) if "behind" in f] == []


def test_the_seeds_cases_are_drawn_cleanly() -> None:
    for make in (seed.chain, seed.two_inputs, seed.two_outputs):
        case = make()
        assert picture_faults(drawn(case.network, case.samples)) == []


def test_crossings_are_counted_as_every_pair_would_count_them() -> None:
    rng = random.Random(7)
    for _ in range(200):
        top = [(f"a{i}", False) for i in range(rng.randint(1, 7))]
        bottom = [(f"b{i}", False) for i in range(rng.randint(1, 7))]
        down = {n: [] for n, _ in top + bottom}
        for n, _ in top:
            down[n] = [b for b, _ in bottom if rng.random() < 0.4]
        rng.shuffle(top)
        rng.shuffle(bottom)
        pos = {n: i for row in (top, bottom) for i, (n, _) in enumerate(row)}
        segments = [(pos[n], pos[t]) for n, _ in top for t in down[n]]
        expected = sum(1 for (a, b), (c, d) in itertools.combinations(segments, 2) if (a - c) * (b - d) < 0)
        assert drawing._crossings([top, bottom], down) == expected


def test_a_dense_graph_past_the_slot_budget_is_still_drawn() -> None:
    ids = [f"u{i}" for i in range(120)]
    edges = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]  # every pair: 7140 edges
    drawn = drawing.layered(ids, {ids[-1]}, edges, render.GEOMETRY)
    assert len(drawn.routes) == len(edges)
    assert all(len(route) == 2 for route in drawn.routes)  # no slots: straight to the target
    assert len(drawing.place_labels(drawn.routes, [(30.0, 14.0)] * len(edges), [])) == len(edges)


# ---------------------------------------------------------------- the layout answer


def laid_out(http: httpx.Client, body: dict[str, Any], query: str = "") -> dict[str, Any]:
    answer = http.post(f"/v1/render?format=layout{query}", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    result: dict[str, Any] = answer.json()
    wire.RenderLayout.model_validate(result)  # the schema the OpenAPI document names
    return result


def test_the_layout_answer_is_the_chain_drawn_left_to_right(http: httpx.Client) -> None:
    case = seed.chain()
    answer = laid_out(http, {"network": case.network, "samples": case.samples, "show": "gradients"})
    assert (answer["orient"], answer["show"]) == ("horizontal", "gradients")
    assert [u["id"] for u in answer["units"]] == ["x", "j", "k", "o"]
    xs = [u["x"] for u in answer["units"]]
    assert xs == sorted(xs)
    assert len(set(xs)) == 4
    assert len({u["y"] for u in answer["units"]}) == 1
    by_id = {u["id"]: u for u in answer["units"]}
    edges = answer["edges"]
    assert [(e["source"], e["target"]) for e in edges] == [("x", "j"), ("j", "k"), ("k", "o")]
    for edge, gradient in zip(edges, case.weight_gradients, strict=True):
        assert edge["value"] == pytest.approx(gradient, rel=1e-12)
        assert edge["label"]["text"] == f"{gradient:.3g}"
        assert edge["colour"] == (render.POSITIVE if gradient > 0 else render.NEGATIVE)
        # the path runs through the route's points, from the source's right side to the target's left
        assert path_points(edge["path"])[0] == tuple(edge["points"][0])
        assert path_points(edge["path"])[-1] == pytest.approx(tuple(edge["points"][-1]))
        source, target = by_id[edge["source"]], by_id[edge["target"]]
        assert edge["points"][0][0] == source["x"] + source["width"] / 2
        assert edge["points"][-1][0] == target["x"] - target["width"] / 2
    assert max(e["stroke_width"] for e in edges) == 6.0
    assert layout_faults(answer) == []


@pytest.mark.parametrize("orient", ["horizontal", "vertical"])
@pytest.mark.parametrize("show", ["weights", "gradients"])
def test_the_neat_like_layout_has_no_edge_behind_a_unit_and_no_label_over_another(
    http: httpx.Client, orient: str, show: str
) -> None:
    doc = neat_like()
    answer = laid_out(http, {**doc, "show": show}, f"&orient={orient}")
    assert answer["orient"] == orient
    assert len(answer["units"]) == 19
    assert len(answer["edges"]) == len(doc["network"]["weights"])
    assert layout_faults(answer) == []


def test_vertical_runs_the_layers_top_to_bottom(http: httpx.Client) -> None:
    case = seed.two_outputs()
    wide = laid_out(http, {"network": case.network})
    tall = laid_out(http, {"network": case.network}, "&orient=vertical")
    top = {u["id"]: u["y"] for u in tall["units"]}
    assert top["x"] < top["j"] < top["k1"] == top["k2"] < top["o"]
    assert tall["width"] < wide["width"]
    assert tall["height"] > wide["height"]
    for edge in tall["edges"]:
        (x0, y0), (_x1, y1) = edge["points"][0], edge["points"][-1]
        assert y0 < y1  # out of the source's bottom, into the target's top
        # the curves leave and arrive vertically: their first control point is straight below
        assert re.match(rf"M {x0:.1f} {y0:.1f} C {x0:.1f} ", edge["path"]), edge["path"]
    assert layout_faults(tall) == []


@settings(max_examples=25)
@given(networks(max_hidden=6))
def test_no_vertical_layout_puts_an_edge_behind_a_unit_or_a_label_over_one(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    net, samples = case
    req = wire.RenderRequest.model_validate_json(json.dumps({"network": net, "samples": samples}))
    answer = render.render(req, LIMITS, "layout", vertical=True)
    assert isinstance(answer, dict)
    # labels are placed as well as they fit, so only the rules that always hold are checked here
    assert [f for f in layout_faults(answer) if "behind" in f or "outside" in f] == []


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("?format=layout&orient=sideways", "orient: Input should be 'horizontal' or 'vertical'"),
        ("?orient=vertical", "orient: 'vertical' is for format=layout"),
    ],
)
def test_an_unknown_or_misplaced_orientation_is_refused(http: httpx.Client, query: str, refused: str) -> None:
    answer = http.post(f"/v1/render{query}", json={"network": seed.chain().network})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert refused in answer.json()["detail"]


def test_the_openapi_document_describes_the_layout_answer(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    render_op = document["paths"]["/v1/render"]["post"]
    params = {p["name"]: p["schema"] for p in render_op["parameters"]}
    assert params["format"]["enum"] == ["svg", "dot", "layout"]
    assert params["orient"]["enum"] == ["horizontal", "vertical"]
    content = render_op["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/RenderLayout"}
    schemas = document["components"]["schemas"]
    assert {"RenderLayout", "LaidOutUnit", "LaidOutEdge", "EdgeLabel"} <= set(schemas)
