"""Networks and checks for the pictures: /v1/render's SVG and the playground's graph."""

from __future__ import annotations

import itertools
import re
from typing import Any

Point = tuple[float, float]
Box = tuple[float, float, float, float]


def neat_like() -> dict[str, Any]:
    """A 19-unit network of the kind NEAT evolves: skip connections across many layers."""
    units: list[dict[str, Any]] = [{"id": f"in{i}", "role": "input"} for i in range(4)]
    units += [{"id": f"h{i}"} for i in range(12)]
    units += [{"id": f"out{i}", "role": "output"} for i in range(3)]
    pairs = [
        ("in0", "h0"), ("in1", "h0"), ("in2", "h1"), ("h0", "h1"), ("in3", "h2"), ("h1", "h2"),
        ("in0", "h3"), ("h2", "h3"), ("h1", "h4"), ("in2", "h4"), ("h3", "h5"), ("in1", "h5"),
        ("h4", "h6"), ("h0", "h6"), ("h5", "h7"), ("in3", "h7"), ("h6", "h8"), ("h2", "h8"),
        ("h7", "h9"), ("in0", "h9"), ("h8", "h10"), ("h3", "h10"), ("h9", "h11"), ("h1", "h11"),
        ("h10", "out0"), ("in1", "out0"), ("h11", "out1"), ("h4", "out1"), ("h5", "out2"),
        ("in2", "out2"), ("h9", "out2"), ("h6", "out0"),
    ]  # fmt: skip
    weights = [
        {"source": s, "target": t, "value": round(((k * 37) % 29 - 14) / 10, 2) or 0.3}
        for k, (s, t) in enumerate(pairs)
    ]
    inputs = {f"in{i}": [[round(0.3 * i - 0.4, 2)]] for i in range(4)}
    targets = {f"out{i}": [[0.5]] for i in range(3)}
    return {
        "network": {"units": units, "weights": weights},
        "samples": {"inputs": inputs, "targets": targets},
    }


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def path_points(d: str, per_segment: int = 40) -> list[Point]:
    """Points along an SVG path of M, C (cubic) and L commands."""
    points: list[Point] = []
    here: Point = (0.0, 0.0)
    for command, args in re.findall(r"([MCL])([^MCL]*)", d):
        n = [float(x) for x in NUMBER.findall(args)]
        if command == "M":
            here = (n[0], n[1])
            points.append(here)
        elif command == "L":
            end = (n[0], n[1])
            points += [
                (
                    here[0] + (end[0] - here[0]) * t / per_segment,
                    here[1] + (end[1] - here[1]) * t / per_segment,
                )
                for t in range(1, per_segment + 1)
            ]
            here = end
        else:
            c0, c1, end = (n[0], n[1]), (n[2], n[3]), (n[4], n[5])
            for i in range(1, per_segment + 1):
                t = i / per_segment
                u = 1 - t
                points.append(
                    (
                        u**3 * here[0] + 3 * u * u * t * c0[0] + 3 * u * t * t * c1[0] + t**3 * end[0],
                        u**3 * here[1] + 3 * u * u * t * c0[1] + 3 * u * t * t * c1[1] + t**3 * end[1],
                    )
                )
            here = end
    return points


def overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def layout_faults(answer: dict[str, Any]) -> list[str]:
    """In a /v1/render?format=layout answer: edges that pass behind a unit they do not join,
    labels that overlap a label or a unit, and anything outside the drawing."""
    units = {
        u["id"]: (
            u["x"] - u["width"] / 2,
            u["y"] - u["height"] / 2,
            u["x"] + u["width"] / 2,
            u["y"] + u["height"] / 2,
        )
        for u in answer["units"]
    }
    labels = [
        (
            f"{e['source']} -> {e['target']}",
            (
                e["label"]["x"] - e["label"]["width"] / 2,
                e["label"]["y"] - e["label"]["height"] / 2,
                e["label"]["x"] + e["label"]["width"] / 2,
                e["label"]["y"] + e["label"]["height"] / 2,
            ),
        )
        for e in answer["edges"]
    ]
    faults = []
    for e in answer["edges"]:
        name = f"{e['source']} -> {e['target']}"
        points = path_points(e["path"])
        for uid, (x0, y0, x1, y1) in units.items():
            if uid not in (e["source"], e["target"]) and any(x0 < x < x1 and y0 < y < y1 for x, y in points):
                faults.append(f"{name} behind {uid}")
    for (a, box_a), (b, box_b) in itertools.combinations(labels, 2):
        if overlap(box_a, box_b):
            faults.append(f"label of {a} over label of {b}")
    for (a, box_a), (uid, box_u) in itertools.product(labels, units.items()):
        if overlap(box_a, box_u):
            faults.append(f"label of {a} over unit {uid}")
    for name, (x0, y0, x1, y1) in [*labels, *units.items()]:
        if x0 < 0 or y0 < 0 or x1 > answer["width"] or y1 > answer["height"]:
            faults.append(f"{name} outside the drawing")
    return faults
