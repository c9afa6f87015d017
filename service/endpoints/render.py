"""/v1/render: the network as a picture (SVG), as Graphviz DOT, or as its layout (JSON: the
geometry the playground draws, with layers left to right or, for narrow screens, top to bottom).

Units are laid out in layers (service.endpoints.drawing), inputs on the left and the
outputs that feed nothing on the right, so every weight runs left to right; a long edge runs
through slots of its own, never behind a unit it does not join, and no label covers another.
An edge's colour is the sign and its thickness the magnitude of its weight (or, with
show=gradients, of its gradient). Every number written is finite: magnitudes are taken of values
scaled to at most 1 (weights near float64's largest still draw), a norm past float64 is labelled
">1.8e+308", and gradients or values that overflow are refused (422 non-finite-result) as
/v1/gradients refuses them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from service import engine, wire
from service.convert import binding
from service.endpoints import compute, drawing
from service.engine import UnitInfo
from service.problems import InvalidRequestError
from service.settings import Limits

POSITIVE, NEGATIVE, ZERO = "#2166ac", "#b2182b", "#999999"
COLUMN, ROW, MARGIN, RADIUS = 190, 96, 70, 30
GEOMETRY = drawing.Geometry(
    box_w=2 * RADIUS + 16, box_h=2 * RADIUS, column=COLUMN, row=ROW, slot=24, margin=MARGIN
)
# the layout answer's units are boxes with room for four lines (id and activation, s, z, delta)
PANEL_W, PANEL_H = 116.0, 72.0
PANEL = drawing.Geometry(box_w=PANEL_W, box_h=PANEL_H, column=270, row=PANEL_H + 28, slot=24, margin=24)
# top to bottom, made left to right with the boxes' sides swapped (service.endpoints.drawing's rule 6)
PANEL_VERTICAL = drawing.Geometry(
    box_w=PANEL_H, box_h=PANEL_W, column=190, row=PANEL_W + 24, slot=24, margin=24
)
LABEL_FONT_SIZE = 11.0
LABEL_HEIGHT, CHAR_WIDTH = 14.0, 6.4  # an edge label's box, at font-size 11 (Helvetica or Arial)
CAPTION_HEIGHT = 20.0  # below the SVG's drawing


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
        top = _largest(self.value)
        return float(np.mean(self.value / top)) * top if top else 0.0

    @property
    def magnitude(self) -> float:
        """The root mean square, finite for any finite values (squares of 1e200 are not)."""
        return _rms(self.value)

    def label(self) -> str:
        if self.value.size == 1:
            return f"{self.value.item():.3g}"
        return f"{self.value.shape[0]}x{self.value.shape[1]}, rms {self.magnitude:.3g}"

    def label_size(self) -> tuple[float, float]:
        """The label's box, wide enough for its text at LABEL_FONT_SIZE."""
        return (len(self.label()) * CHAR_WIDTH + 6, LABEL_HEIGHT)


def _largest(values: np.ndarray) -> float:
    return float(np.abs(values).max(initial=0.0))


def _rms(values: np.ndarray) -> float:
    """sqrt(mean(values**2)) computed on values scaled to at most 1, so it never overflows."""
    top = _largest(values)
    return float(np.sqrt(np.mean((values / top) ** 2))) * top if top else 0.0


def _norm_label(values: np.ndarray) -> str:
    """The Euclidean norm for a label; one past float64 (finite values can add up to one) is
    written as the bound it passes, never as inf."""
    norm = _rms(values) * float(np.sqrt(values.size))
    return f"{norm:.3g}" if np.isfinite(norm) else ">1.8e+308"


@dataclass(frozen=True)
class Drawing:
    caption: str
    units: list[UnitInfo]
    position: dict[str, tuple[float, float]]
    edges: list[Edge]
    routes: list[list[drawing.Point]]  # each edge's route, as service.endpoints.drawing draws it
    labels: list[drawing.Point]  # each edge label's centre, clear of units and other labels
    z: dict[str, np.ndarray]  # the first sample's z, when samples were given
    box: tuple[float, float]  # a unit's box: width, height
    vertical: bool
    width: float
    height: float


def render(
    req: wire.RenderRequest, limits: Limits, fmt: str, vertical: bool = False
) -> Document | dict[str, Any]:
    if fmt == "layout":
        drawing = lay_out(req, limits, PANEL_VERTICAL if vertical else PANEL, vertical=vertical)
        return layout_answer(drawing, req.show).model_dump()
    drawing = lay_out(req, limits, GEOMETRY, circles=True)
    if fmt == "dot":
        return Document(dot(drawing).encode(), "text/vnd.graphviz; charset=utf-8")
    return Document(svg(drawing).encode(), "image/svg+xml")


def variant(query: Mapping[str, str]) -> str:
    """Which of render's answers its query parameters (`wire.ENDPOINTS["render"].query`, each
    one of its values) ask for: "" for the SVG, else a key of VARIANTS; a 422 for a vertical
    SVG or DOT."""
    fmt, orient = query["format"], query["orient"]
    if orient == "vertical" and fmt != "layout":
        raise InvalidRequestError("orient: 'vertical' is for format=layout; SVG and DOT run left to right")
    if fmt == "svg":
        return ""
    return f"format={fmt}" + ("&orient=vertical" if orient == "vertical" else "")


#: render's answers: the SVG, and the others by the query that asks for them (`variant`'s keys)
as_svg = functools.partial(render, fmt="svg")
VARIANTS = {
    "format=dot": functools.partial(render, fmt="dot"),
    "format=layout": functools.partial(render, fmt="layout"),
    "format=layout&orient=vertical": functools.partial(render, fmt="layout", vertical=True),
}


def lay_out(
    req: wire.RenderRequest,
    limits: Limits,
    geometry: drawing.Geometry,
    vertical: bool = False,
    circles: bool = False,
) -> Drawing:
    """The drawing: layers left to right in `geometry`, or, `vertical`, top to bottom (then
    `geometry` is the left-to-right one with its boxes' sides swapped); `circles`: edges end
    on the rim of a single unit's circle (the SVG's), not on its box."""
    if req.samples is None:
        if req.show == "gradients":
            raise InvalidRequestError(
                "show=gradients needs samples, with targets, to compute the gradients from"
            )
        plan = binding.compile_network(req.network)
        z: dict[str, np.ndarray] = {}
        theta = plan.theta
    else:
        plan, batch = compute.prepare(req.network, req.samples, need_targets=req.show == "gradients")
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
    size = {u.id: u.size for u in plan.units}
    drawn = drawing.layered(
        [u.id for u in plan.units],
        {u.id for u in plan.units if u.role == "output"},
        [(w.source, w.target) for w in plan.weights],
        geometry,
    )
    routes = drawn.routes
    if circles:
        routes = [
            _to_circles(route, size[w.source], size[w.target], geometry)
            for route, w in zip(routes, plan.weights, strict=True)
        ]
    half_w, half_h = geometry.box_w / 2, geometry.box_h / 2
    boxes = [(x - half_w, y - half_h, x + half_w, y + half_h) for x, y in drawn.position.values()]
    sizes = [e.label_size()[::-1] if vertical else e.label_size() for e in edges]
    spots = drawing.place_labels(routes, sizes, boxes)
    position, width, height = drawn.position, drawn.width, drawn.height
    box = (geometry.box_w, geometry.box_h)
    if vertical:
        position = {uid: (y, x) for uid, (x, y) in position.items()}
        routes = [drawing.transposed(route) for route in routes]
        spots = drawing.transposed(spots)
        width, height, box = height, width, (geometry.box_h, geometry.box_w)
    # a label placed beside a route along the drawing's margin may reach past its side: the
    # drawing grows to hold it (moved right or down when the label reaches past its left or top)
    halves = [(e.label_size()[0] / 2, e.label_size()[1] / 2) for e in edges]
    dx = math.ceil(max([0.0, *(hw - x for (x, _), (hw, _) in zip(spots, halves, strict=True))]))
    dy = math.ceil(max([0.0, *(hh - y for (_, y), (_, hh) in zip(spots, halves, strict=True))]))
    if dx or dy:
        position = {uid: (x + dx, y + dy) for uid, (x, y) in position.items()}
        routes = [[(x + dx, y + dy) for x, y in route] for route in routes]
        spots = [(x + dx, y + dy) for x, y in spots]
        width, height = width + dx, height + dy
    for (x, y), (hw, hh) in zip(spots, halves, strict=True):
        width, height = max(width, math.ceil(x + hw)), max(height, math.ceil(y + hh))
    shown = "gradients (mean over the batch)" if req.show == "gradients" else "weights"
    caption = f"edges: {shown}; blue positive, red negative, thicker larger" + (
        "; z of sample 1 (the first)" if z else ""
    )
    return Drawing(
        caption=caption,
        units=list(plan.units),
        position=position,
        edges=edges,
        routes=routes,
        labels=spots,
        z=z,
        box=box,
        vertical=vertical,
        width=width,
        height=height,
    )


def _to_circles(
    route: list[drawing.Point], source_size: int, target_size: int, geometry: drawing.Geometry
) -> list[drawing.Point]:
    """A route from and to the rim of a single unit's circle, which is narrower than a layer's box."""
    inset = geometry.box_w / 2 - RADIUS
    (x0, y0), (x1, y1) = route[0], route[-1]
    start = (x0 - inset, y0) if source_size == 1 else (x0, y0)
    end = (x1 + inset, y1) if target_size == 1 else (x1, y1)
    return [start, *route[1:-1], end]


# ---------------------------------------------------------------- SVG


def _colour(value: float) -> str:
    return POSITIVE if value > 0 else NEGATIVE if value < 0 else ZERO


def _stroke_widths(edges: list[Edge]) -> list[float]:
    """From 1 (no magnitude) to 6 (the largest edge's)."""
    biggest = max((e.magnitude for e in edges), default=0.0) or 1.0
    return [1.0 + 5.0 * e.magnitude / biggest for e in edges]


def layout_answer(d: Drawing, show: Literal["weights", "gradients"]) -> wire.RenderLayout:
    return wire.RenderLayout(
        orient="vertical" if d.vertical else "horizontal",
        show=show,
        width=round(d.width, 1),
        height=round(d.height, 1),
        caption=d.caption,
        label_font_size=LABEL_FONT_SIZE,
        units=[
            wire.LaidOutUnit(
                id=u.id,
                role=u.role,
                size=u.size,
                activation=u.activation,
                x=round(d.position[u.id][0], 1),
                y=round(d.position[u.id][1], 1),
                width=d.box[0],
                height=d.box[1],
            )
            for u in d.units
        ],
        edges=[
            wire.LaidOutEdge(
                source=e.source,
                target=e.target,
                points=[(round(x, 1), round(y, 1)) for x, y in route],
                path=drawing.path_data(route, d.vertical),
                value=e.signed,
                magnitude=e.magnitude,
                colour=_colour(e.signed),
                stroke_width=round(width, 2),
                label=wire.EdgeLabel(
                    text=e.label(),
                    x=round(lx, 1),
                    y=round(ly, 1),
                    width=e.label_size()[0],
                    height=e.label_size()[1],
                ),
            )
            for e, route, (lx, ly), width in zip(
                d.edges, d.routes, d.labels, _stroke_widths(d.edges), strict=True
            )
        ],
    )


def svg(d: Drawing) -> str:
    width, height = d.width, d.height + CAPTION_HEIGHT
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif">',
        "<title>gradserve network</title>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
        f'<text x="12" y="{height - 10:.0f}" font-size="10" fill="#666">{escape(d.caption)}</text>',
    ]
    labels = []
    for e, route, (lx, ly), stroke in zip(d.edges, d.routes, d.labels, _stroke_widths(d.edges), strict=True):
        path = drawing.path_data(route, d.vertical)
        parts.append(
            f'<path class="edge" data-source={quoteattr(e.source)} data-target={quoteattr(e.target)} '
            f'd="{path}" fill="none" stroke="{_colour(e.signed)}" stroke-width="{stroke:.2f}" '
            'stroke-opacity="0.8"/>'
        )
        labels.append(
            f'<text x="{lx:.1f}" y="{ly + 4:.1f}" font-size="{LABEL_FONT_SIZE:g}" text-anchor="middle" '
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
            lines.append(_activation_label(u))
        if u.id in d.z:
            z = d.z[u.id]
            lines.append(f"z={z[0]:.3g}" if z.size == 1 else f"|z|={_norm_label(z)}")
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
    parts += labels  # over the units, which they never cover
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- DOT


def _dot_id(uid: str) -> str:
    return '"' + uid.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _activation_label(u: UnitInfo) -> str:
    """A unit's activation as its label shows it: with its own slope, when it gives one."""
    return u.activation if u.slope is None else f"{u.activation}({u.slope:g})"


def dot(d: Drawing) -> str:
    biggest = max((e.magnitude for e in d.edges), default=0.0) or 1.0
    lines = ["digraph gradserve {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for u in d.units:
        label = u.id if u.size == 1 else f"{u.id} ({u.size})"
        if u.role != "input":
            label += f"\\n{_activation_label(u)}"
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
