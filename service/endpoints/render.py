"""/v1/render: the network as a picture (SVG) or as Graphviz DOT.

Units are laid out in layers (service.endpoints.layout, the playground's rules), inputs on the left and the
outputs that feed nothing on the right, so every weight runs left to right; a long edge runs
through slots of its own, never behind a unit it does not join, and no label covers another.
An edge's colour is the sign and its thickness the magnitude of its weight (or, with
show=gradients, of its gradient). Every number written is finite: magnitudes are taken of values
scaled to at most 1 (weights near float64's largest still draw), a norm past float64 is labelled
">1.8e+308", and gradients or values that overflow are refused (422 non-finite-result) as
/v1/gradients refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from service import engine, wire
from service.endpoints import compute, layout, requests
from service.engine import UnitInfo
from service.errors import InvalidRequestError
from service.settings import Limits

POSITIVE, NEGATIVE, ZERO = "#2166ac", "#b2182b", "#999999"
COLUMN, ROW, MARGIN, RADIUS = 190, 96, 70, 30
GEOMETRY = layout.Geometry(
    box_w=2 * RADIUS + 16, box_h=2 * RADIUS, column=COLUMN, row=ROW, slot=24, margin=MARGIN
)
LABEL_HEIGHT, CHAR_WIDTH = 14.0, 6.4  # an edge label's box, at font-size 11


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
    routes: list[list[layout.Point]]  # each edge's route, as service.endpoints.layout draws it
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
    size = {u.id: u.size for u in plan.units}
    drawn = layout.layered(
        [u.id for u in plan.units],
        {u.id for u in plan.units if u.role == "output"},
        [(w.source, w.target) for w in plan.weights],
        GEOMETRY,
    )
    shown = "gradients (mean over the batch)" if req.show == "gradients" else "weights"
    caption = f"edges: {shown}; blue positive, red negative, thicker larger" + (
        "; z of sample 0" if z else ""
    )
    return Drawing(
        caption=caption,
        units=list(plan.units),
        position=drawn.position,
        edges=edges,
        routes=[
            _to_circles(route, size[w.source], size[w.target])
            for route, w in zip(drawn.routes, plan.weights, strict=True)
        ],
        z=z,
        width=drawn.width,
        height=drawn.height + 20,  # room for the caption
    )


def _to_circles(route: list[layout.Point], source_size: int, target_size: int) -> list[layout.Point]:
    """A route from and to the rim of a single unit's circle, which is narrower than a layer's box."""
    inset = GEOMETRY.box_w / 2 - RADIUS
    (x0, y0), (x1, y1) = route[0], route[-1]
    start = (x0 - inset, y0) if source_size == 1 else (x0, y0)
    end = (x1 + inset, y1) if target_size == 1 else (x1, y1)
    return [start, *route[1:-1], end]


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
    half_w, half_h = GEOMETRY.box_w / 2, GEOMETRY.box_h / 2
    boxes = [(x - half_w, y - half_h, x + half_w, y + half_h) for x, y in d.position.values()]
    sizes = [(len(e.label()) * CHAR_WIDTH + 6, LABEL_HEIGHT) for e in d.edges]
    spots = layout.place_labels(d.routes, sizes, boxes)
    labels = []
    for e, route, (lx, ly) in zip(d.edges, d.routes, spots, strict=True):
        width = 1.0 + 5.0 * e.magnitude / biggest
        path = layout.path_data(route)
        parts.append(
            f'<path class="edge" data-source={quoteattr(e.source)} data-target={quoteattr(e.target)} '
            f'd="{path}" fill="none" stroke="{_colour(e.signed)}" stroke-width="{width:.2f}" '
            'stroke-opacity="0.8"/>'
        )
        labels.append(
            f'<text x="{lx:.1f}" y="{ly + 4:.1f}" font-size="11" text-anchor="middle" '
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
