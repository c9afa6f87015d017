// A layered (Sugiyama-style) layout of a network, with no dependencies; service/layout.py
// follows the same rules for /v1/render, so both pictures of a network look alike.
//
// 1. Layers by longest path from the inputs; outputs that feed nothing go to the last layer.
// 2. An edge that spans several layers gets a dummy point in each layer it crosses, so every
//    segment joins two neighbouring layers and a long edge runs through a slot of its own.
// 3. Within each layer, units and dummies are ordered by the barycentre of their neighbours,
//    sweeping down and up, keeping the order with the fewest crossings.
// 4. Segments are curves whose tangents run across the layers, between two neighbouring layers:
//    they stay in the gap between them, so no edge passes behind a unit it does not join.
// 5. Edge labels go at the first spot along their edge whose box meets no other label or unit.

export const BOX = { w: 116, h: 72 };
// across the layers: from one layer to the next; along a layer: a unit's place, a long edge's slot
const ACROSS = { lr: 270, tb: 190 };
const PLACE = { lr: BOX.h + 28, tb: BOX.w + 24 };
const SLOT = 24;
const MARGIN = 24;
const SWEEPS = 12;

/** Layers left to right, or top to bottom (`vertical`, for narrow screens). */
export function layout(units, weights, vertical = false) {
  const o = vertical ? "tb" : "lr";
  const ids = units.map((u) => u.id);
  const known = new Set(ids);
  const edges = weights.filter((w) => known.has(w.source) && known.has(w.target) && w.source !== w.target);
  const layer = layers(units, edges);
  const depth = Math.max(0, ...ids.map((id) => layer.get(id)));

  // nodes of each layer: units, then the dummies of long edges
  const rows = Array.from({ length: depth + 1 }, () => []);
  for (const id of ids) rows[layer.get(id)].push({ id, dummy: false });
  const chains = edges.map((e, k) => {
    const chain = [e.source];
    for (let l = layer.get(e.source) + 1; l < layer.get(e.target); l++) {
      const id = `\u0000${k}:${l}`; // cannot clash with a unit id
      rows[l].push({ id, dummy: true });
      chain.push(id);
    }
    chain.push(e.target);
    return chain;
  });
  const up = new Map();
  const down = new Map();
  for (const row of rows) {
    for (const n of row) {
      up.set(n.id, []);
      down.set(n.id, []);
    }
  }
  for (const chain of chains) {
    for (let i = 0; i + 1 < chain.length; i++) {
      down.get(chain[i]).push(chain[i + 1]);
      up.get(chain[i + 1]).push(chain[i]);
    }
  }

  const order = orderLayers(rows, up, down);
  // a unit needs a place of its own along its layer; a long edge passing through only a slot
  const half = (n) => (n.dummy ? SLOT / 2 : PLACE[o] / 2);
  const extent = (row) => row.reduce((a, n) => a + 2 * half(n), 0);
  const longest = Math.max(PLACE[o], ...order.map(extent));
  const [boxAlong, boxAcross] = vertical ? [BOX.w, BOX.h] : [BOX.h, BOX.w];
  const at = new Map();
  order.forEach((row, l) => {
    let along = MARGIN + boxAlong / 2 - PLACE[o] / 2 + (longest - extent(row)) / 2;
    const across = MARGIN + boxAcross / 2 + l * ACROSS[o];
    for (const n of row) {
      along += half(n);
      at.set(n.id, vertical ? { x: along, y: across, dummy: n.dummy } : { x: across, y: along, dummy: n.dummy });
      along += half(n);
    }
  });

  const ports = portOffsets(chains, at, vertical);
  const routes = chains.map((chain, k) => route(chain, at, ports, k, vertical));
  const unitBoxes = ids.map((id) => box(at.get(id).x, at.get(id).y, BOX.w, BOX.h));
  const alongSize = 2 * MARGIN + boxAlong + longest - PLACE[o];
  const acrossSize = 2 * MARGIN + boxAcross + depth * ACROSS[o];
  return {
    position: new Map(ids.map((id) => [id, at.get(id)])),
    edges,
    routes,
    unitBoxes,
    vertical,
    width: vertical ? alongSize : acrossSize,
    height: vertical ? acrossSize : alongSize,
  };
}

function layers(units, edges) {
  const layer = new Map(units.map((u) => [u.id, 0]));
  const preds = new Map(units.map((u) => [u.id, []]));
  const succs = new Map(units.map((u) => [u.id, []]));
  for (const e of edges) {
    preds.get(e.target).push(e.source);
    succs.get(e.source).push(e.target);
  }
  // Kahn's order; a unit on a cycle (the API refuses those) stays where it is
  const waiting = new Map(units.map((u) => [u.id, preds.get(u.id).length]));
  const ready = units.filter((u) => waiting.get(u.id) === 0).map((u) => u.id);
  while (ready.length) {
    const id = ready.shift();
    for (const next of succs.get(id)) {
      layer.set(next, Math.max(layer.get(next), layer.get(id) + 1));
      waiting.set(next, waiting.get(next) - 1);
      if (waiting.get(next) === 0) ready.push(next);
    }
  }
  const last = Math.max(0, ...layer.values());
  for (const u of units) if (u.role === "output" && succs.get(u.id).length === 0) layer.set(u.id, last);
  return layer;
}

function orderLayers(rows, up, down) {
  let order = rows.map((r) => r.slice());
  const index = (ord) => new Map(ord.flatMap((row) => row.map((n, i) => [n.id, i])));
  const sortBy = (row, neighbours, pos) => {
    const centre = (n) => {
      const ns = neighbours.get(n.id);
      return ns.length ? ns.reduce((a, id) => a + pos.get(id), 0) / ns.length : pos.get(n.id);
    };
    const keyed = row.map((n) => [centre(n), pos.get(n.id), n]);
    keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    return keyed.map((k) => k[2]);
  };
  let best = order;
  let fewest = crossings(order, down);
  for (let sweep = 0; sweep < SWEEPS && fewest > 0; sweep++) {
    const next = order.map((r) => r.slice());
    if (sweep % 2 === 0) {
      for (let l = 1; l < next.length; l++) next[l] = sortBy(next[l], up, index(next));
    } else {
      for (let l = next.length - 2; l >= 0; l--) next[l] = sortBy(next[l], down, index(next));
    }
    order = next;
    const count = crossings(order, down);
    if (count < fewest) {
      best = order;
      fewest = count;
    }
  }
  return best;
}

function crossings(order, down) {
  const pos = new Map(order.flatMap((row) => row.map((n, i) => [n.id, i])));
  let count = 0;
  for (let l = 0; l + 1 < order.length; l++) {
    const segs = order[l].flatMap((n) => down.get(n.id).map((t) => [pos.get(n.id), pos.get(t)]));
    for (let a = 0; a < segs.length; a++) {
      for (let b = a + 1; b < segs.length; b++) {
        if ((segs[a][0] - segs[b][0]) * (segs[a][1] - segs[b][1]) < 0) count++;
      }
    }
  }
  return count;
}

// where each edge leaves its source and enters its target: spread along the box's side in the
// order of the other end's height, so edges meeting at one unit do not start on one point
function portOffsets(chains, at, vertical) {
  const along = (p) => (vertical ? p.x : p.y);
  const side = vertical ? BOX.w : BOX.h;
  const outs = new Map();
  const ins = new Map();
  chains.forEach((chain, k) => {
    const [s, first] = chain;
    const t = chain[chain.length - 1];
    const last = chain[chain.length - 2];
    if (!outs.has(s)) outs.set(s, []);
    if (!ins.has(t)) ins.set(t, []);
    outs.get(s).push([along(at.get(first)), k]);
    ins.get(t).push([along(at.get(last)), k]);
  });
  const spread = (groups) => {
    const offset = new Map();
    for (const list of groups.values()) {
      list.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      const gap = Math.min(vertical ? 18 : 12, (side - 16) / Math.max(1, list.length - 1));
      list.forEach(([, k], i) => offset.set(k, (i - (list.length - 1) / 2) * gap));
    }
    return offset;
  };
  return { out: spread(outs), in: spread(ins) };
}

function route(chain, at, ports, k, vertical) {
  const points = [];
  // a point `d` across the layers from p (towards the next layer when d > 0), `off` along it
  const pt = (p, d, off = 0) => (vertical ? [p.x + off, p.y + d] : [p.x + d, p.y + off]);
  const half = vertical ? BOX.h / 2 : BOX.w / 2;
  chain.forEach((id, i) => {
    const p = at.get(id);
    if (i === 0) points.push(pt(p, half, ports.out.get(k)));
    else if (i === chain.length - 1) points.push(pt(p, -half, ports.in.get(k)));
    else points.push(pt(p, -half), pt(p, half)); // straight through its slot
  });
  return points;
}

/** The SVG path through a route's points: curves between layers, straight through slots. */
export function pathData(points, vertical = false) {
  let d = `M ${points[0][0].toFixed(1)} ${points[0][1].toFixed(1)}`;
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    if (i % 2 === 0) {
      d += ` L ${x1.toFixed(1)} ${y1.toFixed(1)}`;
    } else {
      const [c0, c1] = controls(points[i - 1], points[i], vertical);
      d += ` C ${c0[0].toFixed(1)} ${c0[1].toFixed(1)}, ${c1[0].toFixed(1)} ${c1[1].toFixed(1)}, ${x1.toFixed(1)} ${y1.toFixed(1)}`;
    }
  }
  return d;
}

// a curve's tangents run across the layers at both ends, so it stays between the two layers
function controls(p0, p1, vertical) {
  if (vertical) {
    const m = (p1[1] - p0[1]) / 2;
    return [[p0[0], p0[1] + m], [p1[0], p1[1] - m]];
  }
  const m = (p1[0] - p0[0]) / 2;
  return [[p0[0] + m, p0[1]], [p1[0] - m, p1[1]]];
}

function bezier(p0, p1, t, vertical) {
  const [c0, c1] = controls(p0, p1, vertical);
  const u = 1 - t;
  const x = u * u * u * p0[0] + 3 * u * u * t * c0[0] + 3 * u * t * t * c1[0] + t * t * t * p1[0];
  const y = u * u * u * p0[1] + 3 * u * u * t * c0[1] + 3 * u * t * t * c1[1] + t * t * t * p1[1];
  return [x, y];
}

function box(cx, cy, w, h) {
  return { x0: cx - w / 2, y0: cy - h / 2, x1: cx + w / 2, y1: cy + h / 2 };
}

function overlap(a, b) {
  return Math.max(0, Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0)) * Math.max(0, Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0));
}

const SPOTS = [0.5, 0.35, 0.65, 0.22, 0.78, 0.12, 0.88];

/** For each route, the centre of its label: the first spot whose box meets nothing placed. */
export function placeLabels(routes, sizes, unitBoxes, vertical = false) {
  const placed = [];
  const obstacles = unitBoxes.map((b) => ({ x0: b.x0 - 3, y0: b.y0 - 3, x1: b.x1 + 3, y1: b.y1 + 3 }));
  // the most constrained first: edges between neighbouring layers have the fewest spots
  const byRoom = routes.map((r, k) => k).sort((a, b) => routes[a].length - routes[b].length || a - b);
  const centres = new Array(routes.length);
  for (const k of byRoom) {
    const points = routes[k];
    const [w, h] = sizes[k];
    let best = null;
    for (const t of SPOTS) {
      for (let i = 1; i < points.length; i += 2) {
        const c = bezier(points[i - 1], points[i], t, vertical);
        const b = box(c[0], c[1], w, h);
        const cost = [...obstacles, ...placed].reduce((a, o) => a + overlap(b, o), 0);
        if (best === null || cost < best.cost) best = { cost, c, b };
        if (cost === 0) break;
      }
      if (best.cost === 0) break;
    }
    placed.push(best.b);
    centres[k] = best.c;
  }
  return centres;
}
