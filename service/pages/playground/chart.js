// The loss chart: training and test loss against the epoch, an SVG with labelled axes and
// ticks, on a linear or a log scale.
import { $, fmt, svgEl } from "./util.js";

const W = 480;
const H = 220;
const M = { left: 58, right: 14, top: 12, bottom: 40 };

/** About `count` round numbers covering [lo, hi]. */
function ticks(lo, hi, count = 5) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => span / s <= count) || 10 * power;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** The powers of ten covering [lo, hi] (both > 0). */
function logTicks(lo, hi) {
  const out = [];
  for (let p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) out.push(10 ** p);
  return out;
}

/**
 * Draw the chart. `train` and `test` are lists of [epoch, loss]; `log` picks the scale.
 */
export function drawChart({ train, test, log, epochs, streamed }) {
  const svg = $("loss-curve");
  svg.dataset.losses = JSON.stringify(train.map((p) => p[1]));
  svg.dataset.testLosses = JSON.stringify(test.map((p) => p[1]));
  svg.dataset.streamed = String(streamed);
  svg.dataset.scale = log ? "log" : "linear";
  svg.replaceChildren();
  const all = [...train, ...test];
  const caption = $("loss-caption");
  if (!all.length) {
    caption.textContent = "Step or Play to see the loss fall.";
    return;
  }
  const values = all.map((p) => p[1]).filter((v) => !log || v > 0);
  let [lo, hi] = [Math.min(...values), Math.max(...values)];
  if (!log) lo = Math.min(0, lo);
  if (log && lo === hi) [lo, hi] = [lo / 10, hi * 10];
  const yTicks = log ? logTicks(lo, hi) : ticks(lo, hi);
  if (log) [lo, hi] = [Math.min(lo, yTicks[0]), Math.max(hi, yTicks[yTicks.length - 1])];
  else [lo, hi] = [Math.min(lo, yTicks[0]), Math.max(hi, yTicks[yTicks.length - 1])];
  const xMax = Math.max(1, epochs, ...all.map((p) => p[0]));
  const xTicks = ticks(0, xMax).filter((v) => v <= xMax);
  const px = (e) => M.left + (e / xMax) * (W - M.left - M.right);
  const f = (v) => (log ? Math.log10(v) : v);
  const py = (v) => H - M.bottom - ((f(v) - f(lo)) / (f(hi) - f(lo) || 1)) * (H - M.top - M.bottom);
  const axes = svgEl("g", { class: "axes" });
  axes.append(
    svgEl("line", { class: "axis", x1: M.left, y1: H - M.bottom, x2: W - M.right, y2: H - M.bottom }),
    svgEl("line", { class: "axis", x1: M.left, y1: M.top, x2: M.left, y2: H - M.bottom }),
  );
  for (const t of xTicks) {
    axes.append(
      svgEl("line", { class: "tick", x1: px(t), y1: H - M.bottom, x2: px(t), y2: H - M.bottom + 4 }),
      svgEl("text", { class: "tick-label", x: px(t), y: H - M.bottom + 15, "text-anchor": "middle", text: fmt(t) }),
    );
  }
  for (const t of yTicks) {
    axes.append(
      svgEl("line", { class: "grid", x1: M.left, y1: py(t), x2: W - M.right, y2: py(t) }),
      svgEl("text", { class: "tick-label", x: M.left - 6, y: py(t), "text-anchor": "end", "dominant-baseline": "central", text: fmt(t) }),
    );
  }
  axes.append(
    svgEl("text", { class: "axis-label", x: (M.left + W - M.right) / 2, y: H - 6, "text-anchor": "middle", text: "epoch" }),
    svgEl("text", { class: "axis-label", x: 14, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(M.top + H - M.bottom) / 2})`, text: log ? "loss (log scale)" : "loss" }),
  );
  svg.append(axes);
  const line = (points, cls) => {
    const shown = points.filter((p) => !log || p[1] > 0);
    if (!shown.length) return;
    const pts = shown.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`);
    if (pts.length === 1) pts.push(pts[0]);
    svg.append(svgEl("polyline", { class: cls, points: pts.join(" ") }));
  };
  line(train, "train");
  line(test, "test");
  const legend = svgEl("g", { class: "legend" });
  const entries = test.length ? [["train", "training"], ["test", "test"]] : [["train", "training"]];
  entries.forEach(([cls, name], i) => {
    const x = W - M.right - 150 + i * 80;
    legend.append(svgEl("line", { class: `key ${cls}`, x1: x, y1: M.top + 6, x2: x + 18, y2: M.top + 6 }), svgEl("text", { class: "tick-label", x: x + 22, y: M.top + 6, "dominant-baseline": "central", text: name }));
  });
  svg.append(legend);
  const last = (ps) => ps[ps.length - 1][1];
  caption.textContent =
    `Training loss from ${fmt(train.length ? train[0][1] : NaN)} to ${fmt(train.length ? last(train) : NaN)} over ${epochs} epochs` +
    (test.length ? `; test loss now ${fmt(last(test))}.` : ".");
}
