// Data sets of two inputs, drawn as TensorFlow Playground draws them (its src/dataset.ts:
// the same shapes, radii, padding and noise), from a seeded generator the page shows; and
// samples read from a CSV file.
import { parseNumber } from "./util.js";

export const DATASETS = ["circle", "xor", "gauss", "spiral"];
export const SAMPLES = 500; // TensorFlow Playground's count

function uniform(random, a, b) {
  return random() * (b - a) + a;
}

// Marsaglia's polar method, as TensorFlow Playground draws its gaussians
function normal(random, mean, variance) {
  let v1, v2, s;
  do {
    v1 = 2 * random() - 1;
    v2 = 2 * random() - 1;
    s = v1 * v1 + v2 * v2;
  } while (s > 1 || s === 0);
  return mean + Math.sqrt(variance) * Math.sqrt((-2 * Math.log(s)) / s) * v1;
}

const SHAPES = {
  circle(random, n, noise) {
    const radius = 5;
    const points = [];
    const ring = (lo, hi) => {
      for (let i = 0; i < n / 2; i++) {
        const r = uniform(random, lo, hi);
        const angle = uniform(random, 0, 2 * Math.PI);
        const [x, y] = [r * Math.sin(angle), r * Math.cos(angle)];
        const [nx, ny] = [uniform(random, -radius, radius) * noise, uniform(random, -radius, radius) * noise];
        points.push({ x, y, label: Math.hypot(x + nx, y + ny) < radius * 0.5 ? 1 : 0 });
      }
    };
    ring(0, radius * 0.5); // inside
    ring(radius * 0.7, radius); // outside
    return points;
  },
  xor(random, n, noise) {
    const points = [];
    const padded = () => {
      const v = uniform(random, -5, 5);
      return v + (v > 0 ? 0.3 : -0.3);
    };
    for (let i = 0; i < n; i++) {
      const x = padded();
      const y = padded();
      const [nx, ny] = [uniform(random, -5, 5) * noise, uniform(random, -5, 5) * noise];
      points.push({ x, y, label: (x + nx) * (y + ny) >= 0 ? 1 : 0 });
    }
    return points;
  },
  gauss(random, n, noise) {
    const variance = 0.5 + (noise / 0.5) * 3.5; // noise 0 to 0.5 spreads the variance 0.5 to 4
    const points = [];
    for (const [c, label] of [[2, 1], [-2, 0]]) {
      for (let i = 0; i < n / 2; i++) points.push({ x: normal(random, c, variance), y: normal(random, c, variance), label });
    }
    return points;
  },
  spiral(random, n, noise) {
    const points = [];
    const half = n / 2;
    for (const [turn, label] of [[0, 1], [Math.PI, 0]]) {
      for (let i = 0; i < half; i++) {
        const r = (i / half) * 5;
        const t = ((1.75 * i) / half) * 2 * Math.PI + turn;
        points.push({ x: r * Math.sin(t) + uniform(random, -1, 1) * noise, y: r * Math.cos(t) + uniform(random, -1, 1) * noise, label });
      }
    }
    return points;
  },
};

/** Fisher-Yates, from the same generator. */
function shuffle(random, xs) {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}

/** Points shuffled and split: the first (1 - testShare) for training, the rest for the test. */
function split(random, points, testShare, a, b, o) {
  shuffle(random, points);
  const nTest = Math.round(points.length * testShare);
  const nTrain = Math.max(1, points.length - nTest);
  const as = (ps) => ({
    inputs: { [a]: ps.map((p) => [p.x]), [b]: ps.map((p) => [p.y]) },
    targets: { [o]: ps.map((p) => [p.label]) },
  });
  const test = points.slice(nTrain);
  return { samples: as(points.slice(0, nTrain)), test: test.length ? as(test) : null };
}

/** A data set's training and test samples for inputs a, b and output o (targets 1 and 0). */
export function generate(name, { random, noise, testShare, a, b, o, n = SAMPLES }) {
  if (!SHAPES[name]) throw new Error(`no data set named ${name}`);
  return split(random, SHAPES[name](random, n, noise), testShare, a, b, o);
}

/** A CSV file of samples: a header naming the input and output units, one sample a line.
 * A bad file is an error naming its line and why. */
export function readCsv(text, inputIds, outputIds, { random, testShare }) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const cells = (line) => line.split(",").map((c) => c.trim().replace(/^"(.*)"$/, "$1"));
  const header = cells(lines[0] || "");
  const seen = new Set();
  for (const name of header) {
    if (!name) throw new Error("line 1: a column without a name (the header names the input and output units)");
    if (seen.has(name)) throw new Error(`line 1: the column ${name} is named twice`);
    if (!inputIds.includes(name) && !outputIds.includes(name)) {
      throw new Error(`line 1: ${name} is not an input or output unit (the network's are ${[...inputIds, ...outputIds].join(", ")})`);
    }
    seen.add(name);
  }
  for (const id of inputIds) if (!seen.has(id)) throw new Error(`line 1: no column for the input unit ${id}`);
  const targets = outputIds.filter((id) => seen.has(id));
  const rows = [];
  lines.slice(1).forEach((line, k) => {
    const n = k + 2;
    if (line.trim() === "") return;
    const values = cells(line);
    if (values.length !== header.length) throw new Error(`line ${n}: ${values.length} values, but the header names ${header.length} columns`);
    rows.push(
      values.map((v, c) => {
        const x = parseNumber(v);
        if (x === null) throw new Error(`line ${n}: ${JSON.stringify(v)} in column ${header[c]} is not a number`);
        return x;
      }),
    );
  });
  if (!rows.length) throw new Error("the file has a header but no samples");
  shuffle(random, rows);
  const nTest = Math.min(rows.length - 1, Math.round(rows.length * testShare));
  const as = (rs) => ({
    inputs: Object.fromEntries(inputIds.map((id) => [id, rs.map((r) => [r[header.indexOf(id)]])])),
    targets: Object.fromEntries(targets.map((id) => [id, rs.map((r) => [r[header.indexOf(id)]])])),
  });
  return { samples: as(rows.slice(0, rows.length - nTest)), test: nTest ? as(rows.slice(rows.length - nTest)) : null };
}
