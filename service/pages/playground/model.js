// The document the page shows: the network, its training and test samples, the last answers
// about them, and the edits that can be undone. Every other part reads it from here.
import { clone } from "./util.js";

export const model = {
  network: null,
  samples: null, // the training samples
  test: null, // the test samples, or null
  snapshot: null, // the weights Reset returns to: as loaded or last edited
  result: null, // the last /v1/gradients (or /v1/forward, without targets) answer on the training samples
  testLoss: null, // the loss on the test samples, from /v1/forward
  undo: [], // earlier {network, samples, test}, the latest last
};

const UNDO_DEPTH = 100;
let recompute = async () => {};

/** Who recomputes after a change: set once at start-up by main.js. */
export function onChange(fn) {
  recompute = fn;
}

export const changed = () => recompute();
export const units = () => model.network.units;
export const role = (u) => u.role || "hidden";
export const inputs = () => units().filter((u) => role(u) === "input");
export const outputs = () => units().filter((u) => role(u) === "output");
export const outputsHaveTargets = () => outputs().every((u) => model.samples.targets && u.id in model.samples.targets);
export const body = (extra = {}) => ({ network: model.network, samples: model.samples, ...extra });

function rows(a, what) {
  if (typeof a === "number") return [[a]];
  if (!Array.isArray(a)) throw new Error(`${what}: the playground edits arrays as nested lists of numbers`);
  return a.map((r) => (Array.isArray(r) ? r : [r]));
}

function readSamples(s, what) {
  const samples = { inputs: {}, targets: {} };
  for (const [id, a] of Object.entries(s.inputs || {})) samples.inputs[id] = rows(a, `${what}.inputs.${id}`);
  for (const [id, a] of Object.entries(s.targets || {})) samples.targets[id] = rows(a, `${what}.targets.${id}`);
  return samples;
}

/** A {network, samples[, test]} document as the page keeps it (weights as a list, arrays as rows). */
export function normalize(doc) {
  if (!doc || typeof doc !== "object" || !doc.network || !doc.samples) {
    throw new Error('the JSON needs "network" and "samples", as the API takes them');
  }
  const network = clone(doc.network);
  if (!Array.isArray(network.units)) throw new Error("network.units must be a list of units");
  if (network.weights && !Array.isArray(network.weights)) {
    const c = network.weights; // the columns form: zip it into one weight per edge
    network.weights = (c.source || []).map((s, i) => ({ source: s, target: c.target[i], value: c.value[i] }));
  }
  network.weights = network.weights || [];
  const test = doc.test ? readSamples(doc.test, "test") : null;
  return { network, samples: readSamples(doc.samples, "samples"), test };
}

/** Keep the network as the service gave it back (trained), in the page's form. */
export function adoptNetwork(network) {
  model.network = normalize({ network, samples: {} }).network;
}

/** Remember the document before an edit, so Undo can bring it back. */
export function remember() {
  model.undo.push(clone({ network: model.network, samples: model.samples, test: model.test }));
  if (model.undo.length > UNDO_DEPTH) model.undo.shift();
}

/** Take the last edit back; false when there is none. */
export function undo() {
  const last = model.undo.pop();
  if (!last) return false;
  Object.assign(model, last);
  model.snapshot = clone(model.network);
  return true;
}

export const documentOf = () => {
  const doc = { network: model.network, samples: model.samples };
  if (model.test) doc.test = model.test;
  return doc;
};
