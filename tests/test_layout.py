"""The layered layout of /v1/render (service.endpoints.layout, the same rules as the playground's)."""

from __future__ import annotations

import itertools
import json
import random
import xml.etree.ElementTree as ET
from typing import Any

from hypothesis import given, settings

from service import wire
from service.endpoints import layout, render
from service.settings import Settings
from tests import seed
from tests.drawings import neat_like, overlap, path_points
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
        assert layout._crossings([top, bottom], down) == expected


def test_a_dense_graph_past_the_slot_budget_is_still_drawn() -> None:
    ids = [f"u{i}" for i in range(120)]
    edges = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]  # every pair: 7140 edges
    drawing = layout.layered(ids, {ids[-1]}, edges, render.GEOMETRY)
    assert len(drawing.routes) == len(edges)
    assert all(len(route) == 2 for route in drawing.routes)  # no slots: straight to the target
    assert len(layout.place_labels(drawing.routes, [(30.0, 14.0)] * len(edges), [])) == len(edges)
