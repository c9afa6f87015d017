"""/v1/render: the network as a picture (SVG) or as Graphviz DOT.

Units are laid out by level, inputs on the left and the outputs that feed nothing on the
right, so every weight runs left to right; within a column, units are ordered by where their
inputs sit, which keeps crossings few. An edge's colour is the sign and its thickness the
magnitude of its weight (or, with show=gradients, of its gradient).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from service import compute, engine, requests, wire
from service.engine import Plan, UnitInfo
from service.errors import InvalidRequestError
from service.settings import Limits

POSITIVE, NEGATIVE, ZERO = "#2166ac", "#b2182b", "#999999"
COLUMN, ROW, MARGIN, RADIUS = 190, 96, 70, 30


class Document(NamedTuple):
    """An answer that is not JSON."""

    content: bytes
    media_type: str


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    value: np.ndarray  # the weight or its gradient, [source.size, target.size]

    @property
    def signed(self) -> float:
        """One number for the edge: itself, or a matrix's mean."""
        return float(self.value.mean())

    @property
    def magnitude(self) -> float:
        return float(np.sqrt(np.mean(self.value**2)))

    def label(self) -> str:
        if self.value.size == 1:
            return f"{self.value.item():.3g}"
        return f"{self.value.shape[0]}x{self.value.shape[1]}, rms {self.magnitude:.3g}"


@dataclass(frozen=True)
class Drawing:
    caption: str
    units: list[UnitInfo]
    position: dict[str, tuple[float, float]]
    edges: list[Edge]
    z: dict[str, np.ndarray]  # the first sample's z, when samples were given
    width: float
    height: float


def render(req: wire.RenderRequest, limits: Limits, fmt: str) -> Document:
    compute.limit(limits, "max_render_units", len(req.network.units), "the number of units to draw")
    drawing = lay_out(req, limits)
    if fmt == "dot":
        return Document(dot(drawing).encode(), "text/vnd.graphviz; charset=utf-8")
    return Document(svg(drawing).encode(), "image/svg+xml")


def lay_out(req: wire.RenderRequest, limits: Limits) -> Drawing:
    if req.samples is None:
        if req.show == "gradients":
            raise InvalidRequestError(
                "show=gradients needs samples, with targets, to compute the gradients from"
            )
        plan = requests.compile_network(req.network)
        z: dict[str, np.ndarray] = {}
        theta = plan.theta
    else:
        plan, batch = compute.prepare(
            req.network, req.samples, limits, need_targets=req.show == "gradients", passes=3
        )
        # the gradients need the whole batch; the labels only its first sample
        rows = batch if req.show == "gradients" else batch.rows(slice(0, 1))
        values = engine.forward(plan, plan.theta, rows.x)
        compute.check_values(plan, values)
        z = {u.id: values.z_of(u)[0] for u in plan.units}
        theta = plan.theta
        if req.show == "gradients":
            assert rows.y is not None
            delta = engine.backward(plan, plan.theta, values, rows.y)
            theta = engine.gradient(plan, values, delta, 1.0 / rows.size)
            compute.check_params(plan, theta, "gradient")
    edges = [Edge(w.source, w.target, theta[w.params].reshape(w.shape)) for w in plan.weights]
    columns = _columns(plan)
    position: dict[str, tuple[float, float]] = {}
    tallest = max(len(c) for c in columns)
    for x, column in enumerate(columns):
        ordered = _order(column, position, plan)
        top = MARGIN + (tallest - len(ordered)) * ROW / 2
        for y, unit in enumerate(ordered):
            position[unit.id] = (MARGIN + 40 + x * COLUMN, top + y * ROW)
    shown = "gradients (mean over the batch)" if req.show == "gradients" else "weights"
    caption = f"edges: {shown}; blue positive, red negative, thicker larger" + (
        "; z of sample 0" if z else ""
    )
    return Drawing(
        caption=caption,
        units=list(plan.units),
        position=position,
        edges=edges,
        z=z,
        width=2 * MARGIN + 80 + (len(columns) - 1) * COLUMN,
        height=2 * MARGIN + (tallest - 1) * ROW + 20,
    )


def _columns(plan: Plan) -> list[list[UnitInfo]]:
    feeds = {w.source for w in plan.weights}
    last = max(u.level for u in plan.units) if plan.units else 0
    column = {u.id: last if u.role == "output" and u.id not in feeds else u.level for u in plan.units}
    return [
        [u for u in plan.units if column[u.id] == c]
        for c in range(last + 1)
        if any(v == c for v in column.values())
    ]


def _order(column: list[UnitInfo], placed: dict[str, tuple[float, float]], plan: Plan) -> list[UnitInfo]:
    """Units of a column by the mean height of what feeds them (the barycentre heuristic)."""
    inputs: dict[str, list[float]] = {u.id: [] for u in column}
    for w in plan.weights:
        if w.target in inputs and w.source in placed:
            inputs[w.target].append(placed[w.source][1])
    return sorted(
        column, key=lambda u: (np.mean(inputs[u.id]) if inputs[u.id] else 0.0, plan.unit_index[u.id])
    )


# ---------------------------------------------------------------- SVG


def _colour(value: float) -> str:
    return POSITIVE if value > 0 else NEGATIVE if value < 0 else ZERO


def svg(d: Drawing) -> str:
    biggest = max((e.magnitude for e in d.edges), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{d.width:.0f}" height="{d.height:.0f}" '
        f'viewBox="0 0 {d.width:.0f} {d.height:.0f}" font-family="Helvetica, Arial, sans-serif">',
        "<title>gradserve network</title>",
        f'<rect width="{d.width:.0f}" height="{d.height:.0f}" fill="white"/>',
        f'<text x="12" y="{d.height - 10:.0f}" font-size="10" fill="#666">{escape(d.caption)}</text>',
    ]
    for e in d.edges:
        (x1, y1), (x2, y2) = d.position[e.source], d.position[e.target]
        x1, x2 = x1 + RADIUS, x2 - RADIUS
        bend = (x2 - x1) / 2
        width = 1.0 + 5.0 * e.magnitude / biggest
        path = f"M {x1:.1f} {y1:.1f} C {x1 + bend:.1f} {y1:.1f}, {x2 - bend:.1f} {y2:.1f}, {x2:.1f} {y2:.1f}"
        parts.append(
            f'<path class="edge" data-source={quoteattr(e.source)} data-target={quoteattr(e.target)} '
            f'd="{path}" fill="none" stroke="{_colour(e.signed)}" stroke-width="{width:.2f}" '
            'stroke-opacity="0.8"/>'
        )
        parts.append(
            f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 5:.1f}" font-size="11" text-anchor="middle" '
            f'fill="{_colour(e.signed)}" stroke="white" stroke-width="3" paint-order="stroke">'
            f"{escape(e.label())}</text>"
        )
    for u in d.units:
        x, y = d.position[u.id]
        fill = {"input": "#f0f0f0", "output": "#fde0c5"}.get(u.role, "#ffffff")
        if u.size > 1:
            shape = (
                f'<rect x="{x - RADIUS - 8:.1f}" y="{y - RADIUS:.1f}" width="{2 * RADIUS + 16}" '
                f'height="{2 * RADIUS}" rx="10" fill="{fill}" stroke="#333"/>'
            )
        else:
            shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{RADIUS}" fill="{fill}" stroke="#333"/>'
        lines = [u.id if u.size == 1 else f"{u.id} ({u.size})"]
        if u.role != "input":
            lines.append(u.activation)
        if u.id in d.z:
            z = d.z[u.id]
            lines.append(f"z={z[0]:.3g}" if z.size == 1 else f"|z|={np.linalg.norm(z):.3g}")
        text = "".join(
            f'<tspan x="{x:.1f}" dy="{0 if i == 0 else 12}">{escape(line)}</tspan>'
            for i, line in enumerate(lines)
        )
        top = y - 6 * (len(lines) - 1) + 4
        parts.append(
            f'<g class="unit" data-id={quoteattr(u.id)}>{shape}'
            f'<text x="{x:.1f}" y="{top:.1f}" font-size="11" text-anchor="middle" font-weight="bold">'
            f"{text}</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- DOT


def _dot_id(uid: str) -> str:
    return '"' + uid.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(d: Drawing) -> str:
    biggest = max((e.magnitude for e in d.edges), default=0.0) or 1.0
    lines = ["digraph gradserve {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for u in d.units:
        label = u.id if u.size == 1 else f"{u.id} ({u.size})"
        if u.role != "input":
            label += f"\\n{u.activation}"
        if u.id in d.z and d.z[u.id].size == 1:
            label += f"\\nz={d.z[u.id][0]:.3g}"
        shape = "box" if u.size > 1 else "circle"
        lines.append(f'  {_dot_id(u.id)} [label="{label}", shape={shape}];')
    for e in d.edges:
        width = 1.0 + 4.0 * e.magnitude / biggest
        lines.append(
            f"  {_dot_id(e.source)} -> {_dot_id(e.target)} "
            f'[label="{e.label()}", color="{_colour(e.signed)}", penwidth={width:.2f}];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"
