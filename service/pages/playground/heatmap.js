// Pictures over the input plane, for networks with two inputs: each unit's z in its box in the
// graph, as TensorFlow Playground's neurons show theirs, and the output's in its own panel.
// One /v1/forward over a grid answers them all (it gives every unit's z).
import { api, showError } from "./api.js";
import { showPictures } from "./graph.js";
import { inputs, model, outputs } from "./model.js";
import { $, flat, fmt } from "./util.js";

const GRID = 64; // GRID x GRID points, one /v1/forward
const ENDS = { neg: [178, 24, 43], pos: [33, 102, 172] };
let seq = 0;

const one = (u) => !u.size || u.size === 1;

/** The two inputs a picture spans, or null when the network has not exactly two (of size 1). */
function plane() {
  const ins = inputs();
  return ins.length === 2 && ins.every(one) ? [ins[0].id, ins[1].id] : null;
}

function outputAxis() {
  const outs = outputs();
  return plane() && outs.length === 1 && one(outs[0]) ? outs[0].id : null;
}

export function hasPictures() {
  return plane() !== null;
}

// where an activation's z lies, for a colour scale that means the same over training
const BOUNDED = { sigmoid: [0, 1], tanh: [-1, 1], neat_sigmoid: [0, 1], neat_tanh: [-1, 1], hat: [0, 1], clamped: [-1, 1] };

function scaleOf(unit, values) {
  const bounded = BOUNDED[unit.activation || (unit.role === "output" ? "identity" : "sigmoid")];
  if (bounded) return bounded;
  const m = Math.max(1e-12, ...values.map(Math.abs));
  return [-m, m];
}

function shade(v, lo, hi) {
  const t = hi > lo ? Math.min(1, Math.max(0, (v - lo) / (hi - lo))) : 0.5;
  const [end, f] = t < 0.5 ? [ENDS.neg, 1 - 2 * t] : [ENDS.pos, 2 * t - 1];
  return end.map((c) => Math.round(255 + (c - 255) * f));
}

function paint(values, lo, hi) {
  const canvas = document.createElement("canvas");
  canvas.width = GRID;
  canvas.height = GRID;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(GRID, GRID);
  values.forEach((v, i) => image.data.set([...shade(v, lo, hi), 255], 4 * i));
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function range(vs) {
  const lo = Math.min(...vs);
  const hi = Math.max(...vs);
  const pad = Math.max(1, (hi - lo) * 0.1);
  return [lo - pad, hi + pad];
}

export async function heatmaps() {
  const axes = plane();
  const o = outputAxis();
  $("heatmap-panel").hidden = !o;
  if (!axes) {
    showPictures(new Map());
    return;
  }
  const mine = ++seq;
  const [a, b] = axes;
  const column = (s, id) => (s && s.inputs[id] ? s.inputs[id].map((r) => r[0]) : []);
  const [ax, bx] = [range([...column(model.samples, a), ...column(model.test, a)]), range([...column(model.samples, b), ...column(model.test, b)])];
  const xs = [];
  const ys = [];
  for (let r = 0; r < GRID; r++) {
    for (let c = 0; c < GRID; c++) {
      xs.push(ax[0] + ((c + 0.5) / GRID) * (ax[1] - ax[0]));
      ys.push(bx[1] - ((r + 0.5) / GRID) * (bx[1] - bx[0])); // up is larger
    }
  }
  let res;
  try {
    res = await api("/v1/forward", { network: model.network, samples: { inputs: { [a]: xs, [b]: ys } } });
  } catch (e) {
    if (mine === seq) showError(e);
    return;
  }
  if (mine !== seq) return;
  const pictures = new Map();
  for (const u of model.network.units) {
    if ((u.role || "hidden") === "input" || !one(u) || !res.units[u.id]) continue;
    const values = flat(res.units[u.id].z);
    const [lo, hi] = scaleOf(u, values);
    const key = values.reduce((a, v, i) => a + v * ((i % 97) + 1), 0); // a digest of the values
    pictures.set(u.id, { canvas: paint(values, lo, hi), key: String(key) });
  }
  showPictures(pictures);
  if (o) drawOutput(flat(res.outputs[o]), { a, b, o, ax, bx });
}

function drawOutput(values, { a, b, o, ax, bx }) {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const canvas = $("heatmap");
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(paint(values, lo, hi), 0, 0, canvas.width, canvas.height);
  const dots = (s, filled) => {
    if (!s || !s.inputs[a]) return;
    const targets = s.targets && s.targets[o];
    s.inputs[a].forEach((row, n) => {
      const px = ((row[0] - ax[0]) / (ax[1] - ax[0])) * canvas.width;
      const py = ((bx[1] - s.inputs[b][n][0]) / (bx[1] - bx[0])) * canvas.height;
      ctx.beginPath();
      ctx.arc(px, py, filled ? 3.5 : 3, 0, 2 * Math.PI);
      ctx.fillStyle = targets && targets[n] ? `rgb(${shade(targets[n][0], lo, hi).join(",")})` : "#ffffff";
      if (filled) ctx.fill();
      ctx.lineWidth = filled ? 1.2 : 1.6;
      ctx.strokeStyle = filled ? "#1d1d1f" : ctx.fillStyle === "#ffffff" ? "#1d1d1f" : ctx.fillStyle;
      ctx.stroke();
    });
  };
  dots(model.samples, true);
  dots(model.test, false);
  canvas.dataset.points = String(values.length);
  $("heatmap-caption").textContent =
    `${o} over ${a} from ${fmt(ax[0])} to ${fmt(ax[1])} (across) and ${b} from ${fmt(bx[0])} to ${fmt(bx[1])} (up): ` +
    `red ${fmt(lo)}, white between, blue ${fmt(hi)}; filled dots are the training samples, rings the test samples, in their target's colour.`;
}
