// A layered (Sugiyama-style) layout of a network, with no dependencies; service/layout.py
// follows the same rules for /v1/render, so both pictures of a network look alike.
//
// 1. Layers by longest path from the inputs; outputs that feed nothing go to the last layer.
// 2. An edge that spans several layers gets a dummy point in each layer it crosses, so every
//    segment joins two neighbouring layers and a long edge runs through a slot of its own.
// 3. Within each layer, units and dummies are ordered by the barycentre of their neighbours,
//    sweeping down and up, keeping the order with the fewest crossings.
// 4. Segments are curves with horizontal tangents between two neighbouring columns: they stay
//    in the gap between the columns, so no edge passes behind a unit it does not join.
// 5. Edge labels go at the first spot along their edge whose box meets no other label or unit.

export const BOX = { w: 116, h: 72 };
const COLUMN = 270;
const ROW = 100; // a unit's row: its box and the gap below it
const SLOT = 24; // a long edge's slot in a layer it passes through
const MARGIN = 24;
const SWEEPS = 12;

export function layout(units, weights) {
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
  // a unit needs a row of its own; a long edge passing through a layer only a narrow slot
  const half = (n) => (n.dummy ? SLOT / 2 : ROW / 2);
  const extent = (row) => row.reduce((a, n) => a + 2 * half(n), 0);
  const tallest = Math.max(ROW, ...order.map(extent));
  const at = new Map();
  order.forEach((row, l) => {
    let y = MARGIN + BOX.h / 2 - ROW / 2 + (tallest - extent(row)) / 2;
    for (const n of row) {
      y += half(n);
      at.set(n.id, { x: MARGIN + BOX.w / 2 + l * COLUMN, y, dummy: n.dummy });
      y += half(n);
    }
  });

  const ports = portOffsets(chains, at);
  const routes = chains.map((chain, k) => route(chain, at, ports, k));
  const unitBoxes = ids.map((id) => box(at.get(id).x, at.get(id).y, BOX.w, BOX.h));
  return {
    position: new Map(ids.map((id) => [id, at.get(id)])),
    edges,
    routes,
    unitBoxes,
    width: 2 * MARGIN + BOX.w + depth * COLUMN,
    height: 2 * MARGIN + BOX.h + tallest - ROW,
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
function portOffsets(chains, at) {
  const outs = new Map();
  const ins = new Map();
  chains.forEach((chain, k) => {
    const [s, first] = chain;
    const t = chain[chain.length - 1];
    const last = chain[chain.length - 2];
    if (!outs.has(s)) outs.set(s, []);
    if (!ins.has(t)) ins.set(t, []);
    outs.get(s).push([at.get(first).y, k]);
    ins.get(t).push([at.get(last).y, k]);
  });
  const spread = (groups) => {
    const offset = new Map();
    for (const list of groups.values()) {
      list.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      const gap = Math.min(12, (BOX.h - 16) / Math.max(1, list.length - 1));
      list.forEach(([, k], i) => offset.set(k, (i - (list.length - 1) / 2) * gap));
    }
    return offset;
  };
  return { out: spread(outs), in: spread(ins) };
}

function route(chain, at, ports, k) {
  const points = [];
  chain.forEach((id, i) => {
    const p = at.get(id);
    if (i === 0) points.push([p.x + BOX.w / 2, p.y + ports.out.get(k)]);
    else if (i === chain.length - 1) points.push([p.x - BOX.w / 2, p.y + ports.in.get(k)]);
    else points.push([p.x - BOX.w / 2, p.y], [p.x + BOX.w / 2, p.y]); // straight through its slot
  });
  return points;
}

/** The SVG path through a route's points: curves between columns, straight through slots. */
export function pathData(points) {
  let d = `M ${points[0][0].toFixed(1)} ${points[0][1].toFixed(1)}`;
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    if (i % 2 === 0) {
      d += ` L ${x1.toFixed(1)} ${y1.toFixed(1)}`;
    } else {
      const m = (x1 - x0) / 2;
      d += ` C ${(x0 + m).toFixed(1)} ${y0.toFixed(1)}, ${(x1 - m).toFixed(1)} ${y1.toFixed(1)}, ${x1.toFixed(1)} ${y1.toFixed(1)}`;
    }
  }
  return d;
}

function bezier(p0, p1, t) {
  const m = (p1[0] - p0[0]) / 2;
  const c0 = [p0[0] + m, p0[1]];
  const c1 = [p1[0] - m, p1[1]];
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
export function placeLabels(routes, sizes, unitBoxes) {
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
        const c = bezier(points[i - 1], points[i], t);
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
