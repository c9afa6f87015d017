// Editing the network in the picture: add a unit, connect two, delete, change an activation,
// add a hidden layer. New weights are drawn small from a seeded generator the page shows; each
// edit can be undone, and one the service refuses is taken back with its reason shown.
import { showError } from "./api.js";
import { markSelection, view } from "./graph.js";
import { changed, inputs, model, outputs, remember, role, undo } from "./model.js";
import { resetTraining } from "./train.js";
import { $, el, readInt, rng } from "./util.js";

let draw = rng(1);

/** Start drawing weights afresh from the seed in the "Weight seed" field. */
export function reseed() {
  draw = rng(readInt("weight-seed", "the weight seed", 0, 2 ** 31 - 1));
}

const small = () => Number((draw() - 0.5).toFixed(4)); // uniform in [-0.5, 0.5), as TensorFlow Playground's

function freshId(prefix = "h") {
  const taken = new Set(model.network.units.map((u) => u.id));
  let n = 1;
  while (taken.has(`${prefix}${n}`)) n += 1;
  return `${prefix}${n}`;
}

/** Apply an edit: remembered for Undo, recomputed; refused by the service, taken back. */
export async function apply(edit) {
  remember();
  edit();
  resetTraining(true);
  undoButton();
  const refused = await changed();
  if (refused) {
    undo();
    undoButton();
    await changed();
    showError(refused);
  }
}

export async function undoEdit() {
  if (!undo()) return;
  resetTraining(true);
  undoButton();
  const known = new Set(model.network.units.map((u) => u.id));
  if (view.unit !== null && !known.has(view.unit)) view.unit = null;
  if (view.edge !== null && view.edge >= model.network.weights.length) view.edge = null;
  view.connecting = false;
  toolbar();
  await changed();
}

export function undoButton() {
  $("undo").disabled = model.undo.length === 0;
}

/** The buttons and the Activation select follow the selection. */
export function toolbar() {
  const unit = model.network && model.network.units.find((u) => u.id === view.unit);
  const select = $("activation");
  select.disabled = !unit || role(unit) === "input";
  select.value = unit && role(unit) !== "input" ? unit.activation || (role(unit) === "output" ? "identity" : "sigmoid") : "";
  $("connect").disabled = !unit;
  $("connect").setAttribute("aria-pressed", String(view.connecting));
  $("delete").disabled = !unit && view.edge === null;
  const hint = $("edit-hint");
  if (view.connecting) hint.textContent = `Connect: click (or focus and press Enter on) the unit the edge from ${view.unit} goes to. Escape cancels.`;
  else if (unit) hint.textContent = `Selected: unit ${unit.id}.`;
  else if (view.edge !== null && model.network.weights[view.edge]) {
    const e = model.network.weights[view.edge];
    hint.textContent = `Selected: weight ${e.source} → ${e.target}.`;
  } else hint.textContent = "Click a unit to select it.";
  markSelection();
}

export function offerActivations(names) {
  const select = $("activation");
  const none = el("option", { value: "", text: "(select a unit)", disabled: true });
  select.replaceChildren(none, ...names.map((n) => el("option", { value: n, text: n })));
  toolbar();
}

export function pickUnit(id) {
  if (view.connecting && view.unit !== null) {
    const source = view.unit;
    view.connecting = false;
    toolbar();
    return connect(source, id);
  }
  view.unit = view.unit === id ? null : id;
  view.edge = view.unit === null ? view.edge : null;
  toolbar();
  return null;
}

function connect(source, target) {
  const net = model.network;
  const t = net.units.find((u) => u.id === target);
  if (source === target) return showError(new Error("an edge needs two different units"));
  if (role(t) === "input") return showError(new Error(`${target} is an input unit: no weight goes into an input`));
  if (net.weights.some((w) => w.source === source && w.target === target)) return showError(new Error(`${source} → ${target} is there already`));
  view.edge = net.weights.length;
  view.unit = null;
  toolbar();
  return apply(() => net.weights.push({ source, target, value: small() }));
}

export function addUnit() {
  const id = freshId();
  view.unit = id;
  view.edge = null;
  return apply(() => model.network.units.push({ id, activation: "tanh", bias: 0 }));
}

export function startConnect() {
  if (view.unit === null) return;
  view.connecting = !view.connecting;
  toolbar();
}

export function cancel() {
  if (!view.connecting) return;
  view.connecting = false;
  toolbar();
}

function dropColumns(id) {
  for (const s of [model.samples, model.test]) {
    if (!s) continue;
    delete s.inputs[id];
    delete s.targets[id];
  }
}

export function deleteSelected() {
  const net = model.network;
  if (view.unit !== null) {
    const id = view.unit;
    view.unit = null;
    view.edge = null;
    return apply(() => {
      net.units = net.units.filter((u) => u.id !== id);
      net.weights = net.weights.filter((w) => w.source !== id && w.target !== id);
      dropColumns(id);
    });
  }
  if (view.edge !== null) {
    const k = view.edge;
    view.edge = null;
    return apply(() => net.weights.splice(k, 1));
  }
  return null;
}

export function setActivation(name) {
  const unit = model.network.units.find((u) => u.id === view.unit);
  if (!unit || role(unit) === "input") return null;
  return apply(() => {
    unit.activation = name;
  });
}

/** Each non-input unit's layer: the longest path to it from an input. */
function depths() {
  const net = model.network;
  const depth = new Map(net.units.map((u) => [u.id, 0]));
  for (let pass = 0; pass < net.units.length; pass++) {
    let moved = false;
    for (const w of net.weights) {
      if (depth.get(w.target) < depth.get(w.source) + 1) {
        depth.set(w.target, depth.get(w.source) + 1);
        moved = true;
      }
    }
    if (!moved) break;
  }
  return depth;
}

/** A new hidden layer of n units between the last hidden layer (or the inputs) and the outputs, fully connected. */
export function addLayer() {
  const n = readInt("layer-size", "the layer's units", 1, 64);
  const net = model.network;
  const depth = depths();
  const hidden = net.units.filter((u) => role(u) === "hidden");
  const deepest = Math.max(-1, ...hidden.map((u) => depth.get(u.id)));
  const last = deepest < 0 ? inputs() : hidden.filter((u) => depth.get(u.id) === deepest);
  const lastIds = new Set(last.map((u) => u.id));
  const outIds = new Set(outputs().map((u) => u.id));
  return apply(() => {
    const fresh = [];
    for (let i = 0; i < n; i++) {
      const id = freshId();
      net.units.push({ id, activation: "tanh", bias: 0 });
      fresh.push(id);
    }
    net.weights = net.weights.filter((w) => !(lastIds.has(w.source) && outIds.has(w.target)));
    for (const s of lastIds) for (const t of fresh) net.weights.push({ source: s, target: t, value: small() });
    for (const s of fresh) for (const t of outIds) net.weights.push({ source: s, target: t, value: small() });
  });
}
