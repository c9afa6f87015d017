"""A layered (Sugiyama-style) drawing of a network: the one layout of /v1/render's SVG and of
its `format=layout` answer, which the playground draws.

1. Layers by longest path from the inputs; outputs that feed nothing go to the last layer.
2. An edge that spans several layers gets a slot in each layer it crosses, so every segment
   joins two neighbouring layers and a long edge runs through a place of its own.
3. Within each layer, units and slots are ordered by the barycentre of their neighbours,
   sweeping down and up, keeping the order with the fewest crossings.
4. Segments are curves with horizontal tangents between two neighbouring columns: they stay
   in the gap between the columns, so no edge passes behind a unit it does not join.
5. Edge labels go at the first spot along their edge whose box meets no other label or unit.
6. Layers top to bottom (for narrow screens) are the same drawing made left to right with the
   boxes' sides swapped, then transposed: x for y, so the curves' tangents run down.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1

SWEEPS = 12
# a drawing of up to /v1/render's unit limit may have many thousands of edges: past these, long
# edges are drawn straight to their target (no slots) and labels are not placed one by one
MAX_SLOTS = 5000
MAX_PLACED_LABELS = 400
SPOTS = (0.5, 0.35, 0.65, 0.22, 0.78, 0.12, 0.88)


@dataclass(frozen=True)
class Geometry:
    """Sizes of the drawing: a unit's box, the distance between columns and between rows."""

    box_w: float
    box_h: float
    column: float
    row: float  # a unit's row: its box and the gap below it
    slot: float  # a long edge's slot in a layer it passes through
    margin: float


@dataclass(frozen=True)
class Layout:
    position: dict[str, Point]  # each unit's centre
    routes: list[list[Point]]  # per edge: its start, (into, out of) each slot, its end
    width: float
    height: float


def layered(ids: Sequence[str], outputs: set[str], edges: Sequence[tuple[str, str]], g: Geometry) -> Layout:
    """Place the units and route the edges (which must join known units and form no cycle)."""
    layer = _layers(ids, outputs, edges)
    depth = max(layer.values(), default=0)
    rows: list[list[tuple[str, bool]]] = [[] for _ in range(depth + 1)]
    for uid in ids:
        rows[layer[uid]].append((uid, False))
    slots = sum(layer[t] - layer[s] - 1 for s, t in edges) <= MAX_SLOTS
    chains: list[list[str]] = []
    for k, (source, target) in enumerate(edges):
        chain = [source]
        for level in range(layer[source] + 1, layer[target] if slots else 0):
            slot = f"\0{k}:{level}"  # cannot clash with a unit id
            rows[level].append((slot, True))
            chain.append(slot)
        chains.append([*chain, target])
    up: dict[str, list[str]] = {n: [] for row in rows for n, _ in row}
    down: dict[str, list[str]] = {n: [] for row in rows for n, _ in row}
    for chain in chains:
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)

    order = _order(rows, up, down)

    def half(dummy: bool) -> float:
        return (g.slot if dummy else g.row) / 2

    extent = [sum(2 * half(d) for _, d in row) for row in order]
    tallest = max([g.row, *extent])
    at: dict[str, Point] = {}
    for level, row in enumerate(order):
        y = g.margin + g.box_h / 2 - g.row / 2 + (tallest - extent[level]) / 2
        for node, dummy in row:
            y += half(dummy)
            at[node] = (g.margin + g.box_w / 2 + level * g.column, y)
            y += half(dummy)

    out_offset, in_offset = _ports(chains, at, g.box_h)
    routes = []
    for k, chain in enumerate(chains):
        (sx, sy), (tx, ty) = at[chain[0]], at[chain[-1]]
        points = [(sx + g.box_w / 2, sy + out_offset[k])]
        for slot in chain[1:-1]:
            x, y = at[slot]
            points += [(x - g.box_w / 2, y), (x + g.box_w / 2, y)]
        routes.append([*points, (tx - g.box_w / 2, ty + in_offset[k])])
    return Layout(
        position={uid: at[uid] for uid in ids},
        routes=routes,
        width=2 * g.margin + g.box_w + depth * g.column,
        height=2 * g.margin + g.box_h + tallest - g.row,
    )


def _layers(ids: Sequence[str], outputs: set[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    layer = dict.fromkeys(ids, 0)
    succs: dict[str, list[str]] = {uid: [] for uid in ids}
    waiting = dict.fromkeys(ids, 0)
    for source, target in edges:
        succs[source].append(target)
        waiting[target] += 1
    ready = [uid for uid in ids if waiting[uid] == 0]
    while ready:  # Kahn's order
        uid = ready.pop()
        for nxt in succs[uid]:
            layer[nxt] = max(layer[nxt], layer[uid] + 1)
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    last = max(layer.values(), default=0)
    for uid in ids:
        if uid in outputs and not succs[uid]:
            layer[uid] = last
    return layer


Rows = list[list[tuple[str, bool]]]


def _order(rows: Rows, up: dict[str, list[str]], down: dict[str, list[str]]) -> Rows:
    def index(order: Rows) -> dict[str, int]:
        return {n: i for row in order for i, (n, _) in enumerate(row)}

    def by_barycentre(
        row: list[tuple[str, bool]], near: dict[str, list[str]], pos: dict[str, int]
    ) -> list[tuple[str, bool]]:
        def key(item: tuple[str, bool]) -> tuple[float, int]:
            others = near[item[0]]
            centre = sum(pos[o] for o in others) / len(others) if others else pos[item[0]]
            return (centre, pos[item[0]])

        return sorted(row, key=key)

    order = [list(r) for r in rows]
    best, fewest = order, _crossings(order, down)
    for sweep in range(SWEEPS):
        if fewest == 0:
            break
        nxt = [list(r) for r in order]
        levels = range(1, len(nxt)) if sweep % 2 == 0 else range(len(nxt) - 2, -1, -1)
        for level in levels:
            nxt[level] = by_barycentre(nxt[level], up if sweep % 2 == 0 else down, index(nxt))
        order = nxt
        count = _crossings(order, down)
        if count < fewest:
            best, fewest = order, count
    return best


def _crossings(order: Rows, down: dict[str, list[str]]) -> int:
    """Pairs of segments that cross, counted as inversions (a Fenwick tree), not pair by pair."""
    pos = {n: i for row in order for i, (n, _) in enumerate(row)}
    count = 0
    for row in order[:-1]:
        segs = sorted((pos[n], pos[t]) for n, _ in row for t in down[n])
        size = 1 + max((b for _, b in segs), default=0)
        tree = [0] * (size + 1)
        for seen, (_, b) in enumerate(segs):
            i, not_above = b + 1, 0  # earlier segments ending at or above b: no crossing
            while i > 0:
                not_above += tree[i]
                i -= i & -i
            count += seen - not_above
            i = b + 1
            while i <= size:
                tree[i] += 1
                i += i & -i
    return count


def _ports(chains: list[list[str]], at: dict[str, Point], box_h: float) -> tuple[list[float], list[float]]:
    """Where each edge leaves its source and enters its target: spread along the box's side in
    the order of the other end's height, so edges meeting at one unit do not share one point."""
    outs: dict[str, list[tuple[float, int]]] = {}
    ins: dict[str, list[tuple[float, int]]] = {}
    for k, chain in enumerate(chains):
        outs.setdefault(chain[0], []).append((at[chain[1]][1], k))
        ins.setdefault(chain[-1], []).append((at[chain[-2]][1], k))

    def spread(groups: dict[str, list[tuple[float, int]]]) -> list[float]:
        offset = [0.0] * len(chains)
        for items in groups.values():
            items.sort()
            gap = min(12.0, (box_h - 16) / max(1, len(items) - 1))
            for i, (_, k) in enumerate(items):
                offset[k] = (i - (len(items) - 1) / 2) * gap
        return offset

    return spread(outs), spread(ins)


def transposed(points: Sequence[Point]) -> list[Point]:
    """Points of a drawing made left to right, in the drawing of it top to bottom."""
    return [(y, x) for x, y in points]


def path_data(points: list[Point], vertical: bool = False) -> str:
    """An SVG path through a route: curves between layers (their tangents across the layers:
    horizontal, or vertical for layers top to bottom), straight through slots."""
    d = f"M {points[0][0]:.1f} {points[0][1]:.1f}"
    for i in range(1, len(points)):
        (x0, y0), (x1, y1) = points[i - 1], points[i]
        if i % 2 == 0:
            d += f" L {x1:.1f} {y1:.1f}"
        elif vertical:
            m = (y1 - y0) / 2
            d += f" C {x0:.1f} {y0 + m:.1f}, {x1:.1f} {y1 - m:.1f}, {x1:.1f} {y1:.1f}"
        else:
            m = (x1 - x0) / 2
            d += f" C {x0 + m:.1f} {y0:.1f}, {x1 - m:.1f} {y1:.1f}, {x1:.1f} {y1:.1f}"
    return d


def curve_point(p0: Point, p1: Point, t: float) -> Point:
    """The point at t of the curve from p0 to p1 with horizontal tangents at both ends."""
    m = (p1[0] - p0[0]) / 2
    c0, c1 = (p0[0] + m, p0[1]), (p1[0] - m, p1[1])
    u = 1 - t
    x = u**3 * p0[0] + 3 * u * u * t * c0[0] + 3 * u * t * t * c1[0] + t**3 * p1[0]
    y = u**3 * p0[1] + 3 * u * u * t * c0[1] + 3 * u * t * t * c1[1] + t**3 * p1[1]
    return (x, y)


def _box(c: Point, w: float, h: float) -> Box:
    return (c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2)


def _overlap(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_labels(
    routes: list[list[Point]], sizes: list[tuple[float, float]], units: list[Box]
) -> list[Point]:
    """For each route, the centre of its label: the first spot whose box meets nothing placed.

    Past MAX_PLACED_LABELS edges, labels go to their edge's middle unchecked: so many labels
    cannot all be read anyway, and checking each against all would cost their square."""
    if len(routes) > MAX_PLACED_LABELS:
        return [curve_point(r[0], r[1], 0.5) for r in routes]
    placed = [(x0 - 3, y0 - 3, x1 + 3, y1 + 3) for x0, y0, x1, y1 in units]
    centres: list[Point] = [(0.0, 0.0)] * len(routes)
    # the most constrained first: edges between neighbouring layers have the fewest spots
    for k in sorted(range(len(routes)), key=lambda k: (len(routes[k]), k)):
        points, (w, h) = routes[k], sizes[k]
        best: tuple[float, Point, Box] | None = None
        for t in SPOTS:
            for i in range(1, len(points), 2):
                c = curve_point(points[i - 1], points[i], t)
                b = _box(c, w, h)
                cost = sum(_overlap(b, o) for o in placed)
                if best is None or cost < best[0]:
                    best = (cost, c, b)
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        placed.append(best[2])
        centres[k] = best[1]
    return centres
