// The gradserve playground: plain JS on the public REST API, the same one the SDK uses.
// The graph is drawn from /v1/render?format=layout: the service lays the network out (its
// layers, the order within them, the edges' routes and where their labels go); this page adds
// what it shows in the units and makes the edges clickable.

const SVG = "http://www.w3.org/2000/svg";
const GRID = 64; // the heatmap's grid is GRID x GRID points, one /v1/forward
const EDIT_DELAY_MS = 300;
const NARROW = window.matchMedia("(max-width: 600px)"); // a phone: layers top to bottom

const w = (source, target, value) => ({ source, target, value });
const EXAMPLES = {
  chain: {
    network: {
      units: [{ id: "x", role: "input" }, { id: "j" }, { id: "k" }, { id: "o", role: "output" }],
      weights: [w("x", "j", 0.5), w("j", "k", -0.3), w("k", "o", 0.8)],
    },
    samples: { inputs: { x: [[1.5]] }, targets: { o: [[0.25]] } },
  },
  two_inputs: {
    network: {
      units: [
        { id: "x1", role: "input" },
        { id: "x2", role: "input" },
        { id: "j", bias: 0.1 },
        { id: "o", role: "output" },
      ],
      weights: [w("x1", "j", 0.4), w("x2", "j", 0.9), w("j", "o", -1.3)],
    },
    samples: { inputs: { x1: [[0.7]], x2: [[-1.2]] }, targets: { o: [[1.0]] } },
  },
  fan_out: {
    network: {
      units: [
        { id: "x", role: "input" },
        { id: "j" },
        { id: "o1", role: "output" },
        { id: "o2", role: "output" },
      ],
      weights: [w("x", "j", 0.7), w("j", "o1", 1.2), w("j", "o2", -0.6)],
    },
    samples: { inputs: { x: [[0.8]] }, targets: { o1: [[0.5]], o2: [[0.1]] } },
  },
  two_outputs: {
    network: {
      units: [{ id: "x", role: "input" }, { id: "j" }, { id: "k1" }, { id: "k2" }, { id: "o", role: "output" }],
      weights: [w("x", "j", 0.6), w("j", "k1", 1.1), w("j", "k2", -0.7), w("k1", "o", 0.5), w("k2", "o", 1.4)],
    },
    samples: { inputs: { x: [[0.9]] }, targets: { o: [[-0.4]] } },
  },
  xor: {
    network: {
      units: [
        { id: "x1", role: "input" },
        { id: "x2", role: "input" },
        { id: "h1", activation: "tanh", bias: 0.1 },
        { id: "h2", activation: "tanh", bias: -0.2 },
        { id: "o", role: "output", activation: "sigmoid", bias: 0.05 },
      ],
      weights: [
        w("x1", "h1", 1.2),
        w("x2", "h1", -0.9),
        w("x1", "h2", -1.1),
        w("x2", "h2", 1.3),
        w("h1", "o", 0.8),
        w("h2", "o", 0.7),
      ],
    },
    samples: {
      inputs: { x1: [[0], [0], [1], [1]], x2: [[0], [1], [0], [1]] },
      targets: { o: [[0], [1], [1], [0]] },
    },
  },
};

const state = {
  network: null,
  samples: null,
  snapshot: null, // the weights Reset returns to: as loaded or last edited
  result: null, // the last /v1/gradients (or /v1/forward, without targets) answer
  show: "gradients",
  selected: null, // index of the weight being explained
  losses: [], // the loss curve: the loss before training, then after steps or streamed epochs
  lossSteps: [], // the step (epoch) each of those losses was reached at
  steps: 0,
  streamed: 0, // progress events received from streamed trainings
  playing: false,
  seq: { compute: 0, explain: 0, heatmap: 0, layout: 0 },
};

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);
const clone = (x) => JSON.parse(JSON.stringify(x));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) node.append(c);
  return node;
}

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, String(v));
  }
  return node;
}

/** A number as people read it: four significant digits, exponents only when needed. */
export function fmt(v) {
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

/** The one number in a size-1 array (a number, [n] or [[n]]), else null. */
function scalar(v) {
  while (Array.isArray(v) && v.length === 1) v = v[0];
  return typeof v === "number" ? v : null;
}

function flat(v) {
  return Array.isArray(v) ? v.flat(Infinity) : [v];
}

/** One number for a matrix edge: its mean (the sign) and its root mean square (the size). */
function summary(v) {
  const xs = flat(v);
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const rms = Math.sqrt(xs.reduce((a, b) => a + b * b, 0) / xs.length);
  return { mean, rms, single: xs.length === 1 ? xs[0] : null, count: xs.length };
}

const signClass = (v) => (v > 0 ? "pos" : v < 0 ? "neg" : "");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const arrow = (s, t) => `${s} -> ${t}`;

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, problem, text) {
    const detail = (problem && (problem.detail || problem.title)) || text || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.problem = problem;
  }
}

// A request to the service with the key, if one is given; a network failure says which path.
async function send(path, body, accept = "application/json") {
  const headers = { Accept: accept };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch (e) {
    throw new Error(`the service did not answer ${path}: ${e.message}`);
  }
}

// A plain answer's JSON document; a problem thrown as an ApiError.
async function plainAnswer(response) {
  const text = await response.text();
  let doc = null;
  try {
    doc = JSON.parse(text);
  } catch {
    doc = null;
  }
  if (!response.ok) throw new ApiError(response.status, doc, text);
  return doc;
}

async function api(path, body, as = "json") {
  const response = await send(path, body);
  if (response.ok && as === "text") return response.text();
  return plainAnswer(response);
}

function showError(e) {
  const box = $("status");
  box.replaceChildren();
  if (e instanceof ApiError) {
    const title = (e.problem && e.problem.title) || "error";
    box.append(el("strong", { text: `${e.status} ${title}: ` }), e.message);
    const errors = (e.problem && e.problem.errors) || [];
    if (errors.length) {
      box.append(el("ul", {}, ...errors.slice(0, 8).map((x) => el("li", { text: `${(x.loc || []).join(".")}: ${x.msg}` }))));
    }
  } else {
    box.append(e.message || String(e));
  }
  box.hidden = false;
}

function clearError() {
  $("status").hidden = true;
  $("status").replaceChildren();
}

const body = (extra = {}) => ({ network: state.network, samples: state.samples, ...extra });
const units = () => state.network.units;
const role = (u) => u.role || "hidden";
const outputsHaveTargets = () =>
  units()
    .filter((u) => role(u) === "output")
    .every((u) => state.samples.targets && u.id in state.samples.targets);

// ---------------------------------------------------------------- loading

function rows(a, what) {
  if (typeof a === "number") return [[a]];
  if (!Array.isArray(a)) throw new Error(`${what}: the playground edits arrays as nested lists of numbers`);
  return a.map((r) => (Array.isArray(r) ? r : [r]));
}

function normalize(doc) {
  if (!doc || typeof doc !== "object" || !doc.network || !doc.samples) {
    throw new Error('the JSON needs "network" and "samples", as the API takes them');
  }
  const network = clone(doc.network);
  if (!Array.isArray(network.units)) throw new Error('network.units must be a list of units');
  if (network.weights && !Array.isArray(network.weights)) {
    const c = network.weights; // the columns form: zip it into one weight per edge
    network.weights = (c.source || []).map((s, i) => w(s, c.target[i], c.value[i]));
  }
  network.weights = network.weights || [];
  const samples = { inputs: {}, targets: {} };
  for (const [id, a] of Object.entries(doc.samples.inputs || {})) samples.inputs[id] = rows(a, `inputs.${id}`);
  for (const [id, a] of Object.entries(doc.samples.targets || {})) samples.targets[id] = rows(a, `targets.${id}`);
  return { network, samples };
}

function load(doc) {
  const { network, samples } = normalize(doc);
  state.network = network;
  state.samples = samples;
  state.snapshot = clone(network);
  state.result = null;
  state.selected = null;
  resetLosses();
  $("explain").replaceChildren(el("p", { class: "hint", text: "Pick an edge in the picture or an “Explain” button in the weights table." }));
  $("check-summary").textContent = "";
  buildTables();
  drawLoss();
  return recompute();
}

// ---------------------------------------------------------------- computing

async function recompute() {
  const seq = ++state.seq.compute;
  try {
    const result = outputsHaveTargets()
      ? await api("/v1/gradients", body({ include_units: true }))
      : await api("/v1/forward", body());
    if (seq !== state.seq.compute) return;
    state.result = result;
    if (!state.losses.length && typeof result.loss === "number") addLoss(result.loss);
    clearError();
  } catch (e) {
    if (seq !== state.seq.compute) return;
    state.result = null;
    showError(e);
  }
  showLoss();
  await drawGraph();
  if (seq !== state.seq.compute) return;
  updateTables();
  drawLoss();
  syncJson();
  if (state.selected !== null && state.result) await explain(state.selected);
  if (state.result) await heatmap();
}

function gradientOf(k) {
  const g = state.result && state.result.gradients;
  return g && Array.isArray(g.weights) && g.weights[k] ? g.weights[k].value : null;
}

function unitValue(id, q) {
  const u = state.result && state.result.units && state.result.units[id];
  if (!u || u[q] === undefined || u[q] === null) return null;
  const first = u[q][0]; // sample 1
  return Array.isArray(first) && first.length === 1 ? first[0] : first;
}

// ---------------------------------------------------------------- the graph

/** The service's layout of the network: with the shown values when it can compute them. */
function requestLayout() {
  const computed = state.result !== null;
  const show = computed && (state.show === "weights" || outputsHaveTargets()) ? state.show : "weights";
  const orient = NARROW.matches ? "vertical" : "horizontal";
  const samples = computed ? state.samples : null;
  return api(`/v1/render?format=layout&orient=${orient}`, { network: state.network, samples, show });
}

async function drawGraph() {
  const seq = ++state.seq.layout;
  const host = $("graph");
  const net = state.network;
  let lay;
  try {
    lay = await requestLayout();
  } catch (e) {
    if (seq !== state.seq.layout || net !== state.network) return;
    // when the computation failed too, its error (shown above) says why; else this one does
    const note = state.result === null ? "No picture: the service cannot draw this network (see the message above)." : `No picture: ${e.message}`;
    host.replaceChildren(el("p", { class: "hint", text: note }));
    $("graph-caption").textContent = "";
    return;
  }
  // an answer for a network since replaced (loaded, trained) is dropped: its own redraw follows
  if (seq !== state.seq.layout || net !== state.network) return;
  const indexOf = new Map(net.weights.map((e, k) => [arrow(e.source, e.target), k]));
  const svg = svgEl("svg", {
    width: lay.width,
    height: lay.height,
    viewBox: `0 0 ${lay.width} ${lay.height}`,
    role: "group",
    "aria-label": "the network: units and weights",
    "data-show": lay.show,
    "data-orient": lay.orient,
  });
  const edgeLayer = svgEl("g", { class: "edges" });
  const labelLayer = svgEl("g", { class: "edge-labels" });
  for (const edge of lay.edges) {
    const k = indexOf.get(arrow(edge.source, edge.target));
    const e = net.weights[k];
    const weightText = summary(e.value).single !== null ? fmt(summary(e.value).single) : "a matrix";
    const g = gradientOf(k);
    const gradText = g === null ? "not computed" : summary(g).single !== null ? fmt(summary(g).single) : "a matrix";
    const group = svgEl("g", {
      class: `edge${state.selected === k ? " selected" : ""}`,
      tabindex: 0,
      role: "button",
      "data-source": e.source,
      "data-target": e.target,
      "data-index": k,
      "aria-label": `weight ${arrow(e.source, e.target)}: value ${weightText}, gradient ${gradText}. Explain`,
    });
    group.append(
      svgEl("path", { class: "halo", d: edge.path, "stroke-width": edge.stroke_width + 7 }),
      svgEl("path", { class: "hit", d: edge.path }),
      svgEl("path", { class: "line", d: edge.path, stroke: edge.colour, "stroke-width": edge.stroke_width }),
    );
    const label = svgEl("text", {
      x: edge.label.x,
      y: edge.label.y,
      "font-size": lay.label_font_size,
      "text-anchor": "middle",
      "dominant-baseline": "central",
      fill: edge.colour,
      text: edge.label.text,
    });
    const labelGroup = svgEl("g", { class: "edge-label", "data-source": e.source, "data-target": e.target, "data-index": k });
    labelGroup.append(label);
    for (const node of [group, labelGroup]) node.addEventListener("click", () => select(k));
    group.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        select(k);
      }
    });
    edgeLayer.append(group);
    labelLayer.append(labelGroup);
  }
  const unitLayer = svgEl("g", { class: "units" });
  for (const u of lay.units) {
    const [x0, y0] = [u.x - u.width / 2, u.y - u.height / 2];
    const g = svgEl("g", { class: `unit ${u.role}`, "data-unit": u.id });
    g.append(svgEl("rect", { x: x0, y: y0, width: u.width, height: u.height, rx: 8 }));
    let y = y0 + 15;
    const kind = u.role === "input" ? "input" : u.activation;
    const size = u.size > 1 ? ` (${u.size})` : "";
    g.append(svgEl("text", { x: x0 + 8, y, class: "name", text: `${u.id}${size} · ${kind}` }));
    for (const [q, name] of [["s", "s"], ["z", "z"], ["delta", "δ"]]) {
      const v = unitValue(u.id, q);
      if (v === null) continue;
      y += 15;
      const shown = typeof v === "number" ? fmt(v) : `‖${fmt(Math.hypot(...flat(v)))}‖`;
      g.append(svgEl("text", { x: x0 + 8, y, "data-q": q, text: `${name} = ${shown}` }));
    }
    unitLayer.append(g);
  }
  svg.append(edgeLayer, unitLayer, labelLayer);
  host.replaceChildren(svg);
  $("graph-caption").textContent = lay.caption;
}

function showLoss() {
  const loss = state.result && typeof state.result.loss === "number" ? state.result.loss : null;
  $("loss").textContent = loss === null ? "" : `E = ${fmt(loss)}`;
  if (loss !== null) $("loss").dataset.value = String(loss);
}

function select(k) {
  state.selected = k;
  for (const g of document.querySelectorAll("#graph .edge")) {
    g.classList.toggle("selected", Number(g.dataset.index) === k);
  }
  explain(k);
}

// ---------------------------------------------------------------- tables

function numberInput(label, value, data) {
  const input = el("input", { type: "text", inputmode: "decimal", "aria-label": label, value: fmtInput(value), autocomplete: "off" });
  Object.assign(input.dataset, data);
  return input;
}

const fmtInput = (v) => String(Number(v.toPrecision(6)));

function buildTables() {
  const net = state.network;
  const wbody = $("weights-table").tBodies[0];
  wbody.replaceChildren();
  const cbody = $("check-table").tBodies[0];
  cbody.replaceChildren();
  net.weights.forEach((e, k) => {
    const v = scalar(e.value);
    const name = arrow(e.source, e.target);
    const valueCell = v === null ? el("td", { text: "a matrix (edit it as JSON)" }) : el("td", {}, numberInput(`weight ${name}`, v, { kind: "weight", index: k }));
    const button = el("button", { type: "button", "aria-label": `explain weight ${name}`, text: "Explain" });
    button.addEventListener("click", () => select(k));
    wbody.append(
      el("tr", {}, el("th", { scope: "row", text: `${e.source} → ${e.target}` }), valueCell, el("td", { class: "grad", "data-index": k }), el("td", {}, button)),
    );
    const mine = el("input", { type: "text", inputmode: "decimal", "aria-label": `your gradient for ${name}`, autocomplete: "off", "data-index": k });
    cbody.append(
      el(
        "tr",
        { "data-index": k },
        el("th", { scope: "row", text: `${e.source} → ${e.target}` }),
        el("td", {}, mine),
        el("td", { class: "checked" }),
        el("td", { class: "numeric" }),
        el("td", { class: "result" }),
      ),
    );
  });
  const ubody = $("units-table").tBodies[0];
  ubody.replaceChildren();
  for (const u of net.units) {
    const input = role(u) === "input";
    const b = u.bias === undefined || u.bias === null ? 0 : scalar(u.bias);
    const bias = input ? el("td", { text: "—" }) : b === null ? el("td", { text: "a vector (edit it as JSON)" }) : el("td", {}, numberInput(`bias of ${u.id}`, b, { kind: "bias", unit: u.id }));
    const kind = input ? "input" : u.activation || (role(u) === "output" ? "identity" : "sigmoid");
    ubody.append(
      el(
        "tr",
        {},
        el("th", { scope: "row", text: `${u.id}${role(u) === "hidden" ? "" : ` (${role(u)})`}` }),
        el("td", { text: kind }),
        bias,
        ...["s", "z", "delta"].map((q) => el("td", { "data-unit": u.id, "data-q": q })),
      ),
    );
  }
  buildSamplesTable();
  $("heatmap-panel").hidden = !heatmapAxes();
}

function buildSamplesTable() {
  const table = $("samples-table");
  const ins = units().filter((u) => role(u) === "input");
  const outs = units().filter((u) => role(u) === "output" && state.samples.targets[u.id]);
  const head = el("tr", {}, el("th", { scope: "col", text: "sample" }));
  for (const u of ins) head.append(el("th", { scope: "col", text: `input ${u.id}` }));
  for (const u of outs) head.append(el("th", { scope: "col", text: `target ${u.id}` }));
  table.tHead.replaceChildren(head);
  const tbody = table.tBodies[0];
  tbody.replaceChildren();
  const first = ins.length ? state.samples.inputs[ins[0].id] : [];
  const batch = first ? first.length : 0;
  const shown = Math.min(batch, 20);
  for (let n = 0; n < shown; n++) {
    const tr = el("tr", {}, el("th", { scope: "row", text: String(n + 1) }));
    for (const [u, kind, arrays] of [...ins.map((u) => [u, "input", state.samples.inputs]), ...outs.map((u) => [u, "target", state.samples.targets])]) {
      const row = arrays[u.id] && arrays[u.id][n];
      const v = row && row.length === 1 ? row[0] : null;
      tr.append(
        typeof v === "number"
          ? el("td", {}, numberInput(`${kind} ${u.id}, sample ${n + 1}`, v, { kind, unit: u.id, sample: n }))
          : el("td", { text: "a vector (edit it as JSON)" }),
      );
    }
    tbody.append(tr);
  }
  if (batch > shown) tbody.append(el("tr", {}, el("td", { colspan: 1 + ins.length + outs.length, text: `and ${batch - shown} more samples (edit them as JSON)` })));
}

function updateTables() {
  for (const td of document.querySelectorAll("#weights-table td.grad")) {
    const g = gradientOf(Number(td.dataset.index));
    const v = g === null ? null : scalar(g);
    td.textContent = g === null ? "—" : v === null ? `rms ${fmt(summary(g).rms)}` : fmt(v);
    td.className = `grad ${v === null ? "" : signClass(v)}`;
    if (v !== null) td.dataset.value = String(v);
  }
  for (const td of document.querySelectorAll("#units-table td[data-q]")) {
    const v = unitValue(td.dataset.unit, td.dataset.q);
    td.textContent = v === null ? "—" : typeof v === "number" ? fmt(v) : `‖${fmt(Math.hypot(...flat(v)))}‖`;
    if (typeof v === "number") td.dataset.value = String(v);
  }
  // the inputs show the model's numbers (SGD changes them) unless someone is typing in them
  for (const input of document.querySelectorAll("input[data-kind]")) {
    if (input === document.activeElement || input.getAttribute("aria-invalid") === "true") continue;
    const v = readModel(input.dataset);
    if (v !== null) input.value = fmtInput(v);
  }
}

function readModel(d) {
  if (d.kind === "weight") return scalar(state.network.weights[Number(d.index)].value);
  if (d.kind === "bias") {
    const u = units().find((x) => x.id === d.unit);
    return u.bias === undefined || u.bias === null ? 0 : scalar(u.bias);
  }
  const arrays = d.kind === "input" ? state.samples.inputs : state.samples.targets;
  return arrays[d.unit][Number(d.sample)][0];
}

function writeModel(d, v) {
  if (d.kind === "weight") state.network.weights[Number(d.index)].value = v;
  else if (d.kind === "bias") units().find((x) => x.id === d.unit).bias = v;
  else (d.kind === "input" ? state.samples.inputs : state.samples.targets)[d.unit][Number(d.sample)][0] = v;
}

function parseNumber(text) {
  const t = text.trim();
  if (t === "") return null;
  const v = Number(t);
  return Number.isFinite(v) ? v : null;
}

const pending = new WeakMap();
document.addEventListener("input", (ev) => {
  const input = ev.target;
  if (!(input instanceof HTMLInputElement) || !input.dataset.kind) return;
  clearTimeout(pending.get(input));
  pending.set(
    input,
    setTimeout(() => {
      const v = parseNumber(input.value);
      input.setAttribute("aria-invalid", v === null ? "true" : "false");
      if (v === null) return;
      writeModel(input.dataset, v);
      if (input.dataset.kind === "weight" || input.dataset.kind === "bias") state.snapshot = clone(state.network);
      resetLosses();
      recompute();
    }, EDIT_DELAY_MS),
  );
});

// ---------------------------------------------------------------- explain

async function explain(k) {
  const seq = ++state.seq.explain;
  const panel = $("explain");
  let res;
  try {
    res = await api("/v1/explain", body({ sample: 0 }));
  } catch (e) {
    if (seq === state.seq.explain) showError(e);
    return;
  }
  if (seq !== state.seq.explain) return;
  const x = res.weights[k];
  const name = arrow(x.source, x.target);
  const g = scalar(x.gradient);
  const parts = [];
  const head = el("h3", { id: "explain-gradient", text: `∂E/∂w(${x.source}→${x.target}) = ${g === null ? "a matrix" : fmt(g)}` });
  if (g !== null) head.dataset.value = String(g);
  head.dataset.weight = name;
  parts.push(head);
  const zs = scalar(x.z_source);
  const dt = scalar(x.delta_target);
  if (zs !== null && dt !== null) {
    parts.push(el("p", { text: `= z(${x.source}) × δ(${x.target}) = ${fmt(zs)} × ${fmt(dt)}` }));
  }
  if (x.paths && x.paths.length) {
    parts.push(el("p", { text: `${x.paths.length} path${x.paths.length > 1 ? "s" : ""} from ${x.target} to the outputs; each is the product of its factors:` }));
    const list = el("ol", { class: "paths", id: "explain-paths" });
    for (const p of x.paths) {
      const item = el("li", { "data-value": String(p.value) }, el("span", { class: "route", text: `${x.source} → ${p.units.join(" → ")}: ` }));
      p.factors.forEach((f, i) => {
        if (i) item.append(" × ");
        item.append(el("span", { class: "factor", "data-name": f.name, "data-value": String(f.value), text: `${f.name} = ${fmt(f.value)}` }));
      });
      item.append(" = ", el("strong", { text: fmt(p.value) }));
      list.append(item);
    }
    parts.push(list);
    const sum = x.paths.reduce((a, p) => a + p.value, 0);
    parts.push(el("p", { id: "explain-sum", "data-value": String(sum), text: `Sum of the paths: ${fmt(sum)}${x.paths_truncated ? " (more paths than listed)" : ""}` }));
  } else {
    parts.push(el("p", { class: "hint", text: "Paths are listed for weights between units of size 1." }));
  }
  parts.push(el("p", { class: "hint", text: "The formula, with the numbers in (LaTeX):" }), el("pre", { class: "latex", text: x.latex }));
  panel.replaceChildren(...parts);
}

// ---------------------------------------------------------------- training

function resetLosses() {
  state.losses = [];
  state.lossSteps = [];
  state.steps = 0;
}

function addLoss(loss) {
  state.losses.push(loss);
  state.lossSteps.push(state.steps);
}

async function step() {
  const lr = parseNumber($("learning-rate").value);
  if (lr === null || lr <= 0) throw new Error("the learning rate must be a number above 0");
  const res = await api("/v1/sgd", body({ learning_rate: lr, epochs: 1 }));
  if (!state.losses.length) addLoss(res.loss_before);
  state.network = normalize({ network: res.network, samples: state.samples }).network;
  state.steps += 1;
  addLoss(res.loss_after);
  await recompute();
}

// Play trains PLAY_EPOCHS epochs a request, streamed: the curve grows from each progress event
// as it comes (throttled by the service to a few a second), the network from the result.
const PLAY_EPOCHS = 50;

async function* sgdEvents(payload) {
  const response = await send("/v1/sgd", payload, "text/event-stream");
  if (!response.ok || !(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
    yield { event: "result", data: await plainAnswer(response) }; // refused before training: a plain answer
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the training's stream ended before its result");
    buffer += value.replace(/\r\n?/g, "\n");
    for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue; // a heartbeat
      const doc = JSON.parse(data.join("\n"));
      if (name === "error") throw new ApiError(doc.status, doc, doc.detail);
      yield { event: name, data: doc };
      if (name === "result") {
        reader.cancel();
        return;
      }
    }
  }
}

async function playEpochs() {
  const lr = parseNumber($("learning-rate").value);
  if (lr === null || lr <= 0) throw new Error("the learning rate must be a number above 0");
  const base = state.steps;
  for await (const { event, data } of sgdEvents(body({ learning_rate: lr, epochs: PLAY_EPOCHS }))) {
    if (event === "progress") {
      state.steps = base + data.epoch + 1;
      state.streamed += 1;
      addLoss(data.loss);
      drawLoss();
    } else if (event === "result") {
      state.network = normalize({ network: data.network, samples: state.samples }).network;
      state.steps = base + data.history.length;
      const last = data.history[data.history.length - 1];
      if (state.lossSteps[state.lossSteps.length - 1] !== state.steps) addLoss(last.loss);
    }
  }
  await recompute();
}

function trainButtons() {
  $("play").disabled = state.playing;
  $("step").disabled = state.playing;
  $("pause").disabled = !state.playing;
}

async function play() {
  state.playing = true;
  trainButtons();
  while (state.playing) {
    try {
      await playEpochs();
    } catch (e) {
      showError(e);
      break;
    }
    await sleep(120);
  }
  state.playing = false;
  trainButtons();
}

function drawLoss() {
  const svg = $("loss-curve");
  const ls = state.losses;
  svg.dataset.losses = JSON.stringify(ls);
  svg.dataset.streamed = String(state.streamed);
  svg.replaceChildren();
  const last = ls.length ? ls[ls.length - 1] : null;
  $("train-status").textContent = last === null ? "" : `step ${state.steps}: loss ${fmt(last)}`;
  $("train-status").dataset.steps = String(state.steps);
  const caption = $("loss-caption");
  if (ls.length < 2) {
    caption.textContent = "Step or Play to see the loss fall.";
    return;
  }
  const hi = Math.max(...ls);
  const lo = Math.min(0, ...ls);
  const span = hi - lo || 1;
  const at = state.lossSteps;
  const first = at[0];
  const width = at[at.length - 1] - first || 1;
  const points = ls.map((v, i) => `${(((at[i] - first) / width) * 390 + 5).toFixed(1)},${(155 - ((v - lo) / span) * 145).toFixed(1)}`);
  svg.append(svgEl("line", { x1: 5, y1: 155, x2: 395, y2: 155, class: "axis" }), svgEl("polyline", { points: points.join(" ") }));
  caption.textContent = `Loss from ${fmt(ls[0])} to ${fmt(last)} over ${state.steps} steps (the axis starts at ${fmt(lo)}).`;
}

// ---------------------------------------------------------------- checking

async function check(gradients, label) {
  const res = await api("/v1/check", body({ gradients }));
  const byName = new Map(res.weights.map((x) => [arrow(x.source, x.target), x]));
  for (const tr of $("check-table").tBodies[0].rows) {
    const e = state.network.weights[Number(tr.dataset.index)];
    const x = byName.get(arrow(e.source, e.target));
    const [checked, numeric, result] = ["checked", "numeric", "result"].map((c) => tr.querySelector(`td.${c}`));
    checked.textContent = x ? fmt(scalar(x.checked) ?? summary(x.checked).rms) : "—";
    numeric.textContent = x ? fmt(scalar(x.numeric) ?? summary(x.numeric).rms) : "—";
    result.textContent = x ? (x.ok ? "pass" : "fail") : "not checked";
    result.className = `result ${x ? (x.ok ? "pass" : "fail") : ""}`;
  }
  const summaryText = `${label}: ${res.ok ? "every one passes" : "some fail"} (largest absolute error ${fmt(res.max_abs_error)}, relative ${fmt(res.max_rel_error)})`;
  $("check-summary").textContent = summaryText;
  $("check-summary").dataset.ok = String(res.ok);
}

async function checkShown() {
  if (!state.result || !state.result.gradients) throw new Error("no gradients shown yet: give every output a target");
  await check(state.result.gradients, "The shown gradients");
}

async function checkMine() {
  const weights = [];
  for (const input of $("check-table").querySelectorAll("input")) {
    if (input.value.trim() === "") continue;
    const v = parseNumber(input.value);
    input.setAttribute("aria-invalid", v === null ? "true" : "false");
    if (v === null) throw new Error(`${input.getAttribute("aria-label")}: not a number`);
    const e = state.network.weights[Number(input.dataset.index)];
    weights.push({ source: e.source, target: e.target, value: v });
  }
  if (!weights.length) throw new Error("type at least one gradient in the “your ∂E/∂w” column first");
  await check({ weights }, "Your gradients");
}

// ---------------------------------------------------------------- the heatmap

function heatmapAxes() {
  const ins = units().filter((u) => role(u) === "input");
  const outs = units().filter((u) => role(u) === "output");
  const one = (u) => !u.size || u.size === 1;
  return ins.length === 2 && outs.length === 1 && [...ins, ...outs].every(one) ? { a: ins[0].id, b: ins[1].id, o: outs[0].id } : null;
}

async function heatmap() {
  const axes = heatmapAxes();
  $("heatmap-panel").hidden = !axes;
  if (!axes) return;
  const seq = ++state.seq.heatmap;
  const column = (id) => state.samples.inputs[id].map((r) => r[0]);
  const range = (vs) => {
    const lo = Math.min(...vs);
    const hi = Math.max(...vs);
    const pad = Math.max(1, (hi - lo) * 0.25);
    return [lo - pad, hi + pad];
  };
  const [ax, bx] = [range(column(axes.a)), range(column(axes.b))];
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
    res = await api("/v1/forward", { network: state.network, samples: { inputs: { [axes.a]: xs, [axes.b]: ys } } });
  } catch (e) {
    if (seq === state.seq.heatmap) showError(e);
    return;
  }
  if (seq !== state.seq.heatmap) return;
  const values = flat(res.outputs[axes.o]);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const small = document.createElement("canvas");
  small.width = GRID;
  small.height = GRID;
  const image = small.getContext("2d").createImageData(GRID, GRID);
  const shade = (v) => {
    const t = hi > lo ? Math.min(1, Math.max(0, (v - lo) / (hi - lo))) : 0.5;
    const [end, f] = t < 0.5 ? [[178, 24, 43], 1 - 2 * t] : [[33, 102, 172], 2 * t - 1];
    return end.map((c) => Math.round(255 + (c - 255) * f));
  };
  values.forEach((v, i) => {
    image.data.set([...shade(v), 255], 4 * i);
  });
  small.getContext("2d").putImageData(image, 0, 0);
  const canvas = $("heatmap");
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  const xsS = column(axes.a);
  const ysS = column(axes.b);
  const targets = state.samples.targets[axes.o];
  xsS.forEach((x, n) => {
    const px = ((x - ax[0]) / (ax[1] - ax[0])) * canvas.width;
    const py = ((bx[1] - ysS[n]) / (bx[1] - bx[0])) * canvas.height;
    ctx.beginPath();
    ctx.arc(px, py, 5, 0, 2 * Math.PI);
    ctx.fillStyle = targets && targets[n] ? `rgb(${shade(targets[n][0]).join(",")})` : "#ffffff";
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#1d1d1f";
    ctx.stroke();
  });
  canvas.dataset.points = String(values.length);
  $("heatmap-caption").textContent =
    `${axes.o} over ${axes.a} from ${fmt(ax[0])} to ${fmt(ax[1])} (across) and ${axes.b} from ${fmt(bx[0])} to ${fmt(bx[1])} (up): ` +
    `red ${fmt(lo)}, white between, blue ${fmt(hi)}; the dots are the samples, filled with their target's colour.`;
}

// ---------------------------------------------------------------- JSON

function syncJson() {
  const area = $("json");
  if (area !== document.activeElement) area.value = JSON.stringify({ network: state.network, samples: state.samples }, null, 2);
}

function exportJson() {
  $("json").value = JSON.stringify({ network: state.network, samples: state.samples }, null, 2);
  const url = URL.createObjectURL(new Blob([$("json").value], { type: "application/json" }));
  const a = el("a", { href: url, download: "gradserve-network.json" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function downloadSvg() {
  const withSamples = state.show === "weights" || outputsHaveTargets();
  const picture = await api("/v1/render", { network: state.network, samples: withSamples ? state.samples : null, show: withSamples ? state.show : "weights" }, "text");
  const url = URL.createObjectURL(new Blob([picture], { type: "image/svg+xml" }));
  const a = el("a", { href: url, download: "gradserve-network.svg" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${e.message}`);
  }
}

// ---------------------------------------------------------------- wiring

function guard(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (e) {
      showError(e);
    }
  };
}

function openExample(name) {
  const doc = EXAMPLES[name];
  if (!doc) throw new Error(`no example named ${JSON.stringify(name)}; try one of ${Object.keys(EXAMPLES).join(", ")}`);
  $("example").value = name;
  return load(doc);
}

async function start() {
  const key = sessionStorage.getItem("gradserve-api-key");
  if (key) $("api-key").value = key;
  $("example").addEventListener("change", guard(async (ev) => {
    history.replaceState(null, "", `?example=${encodeURIComponent(ev.target.value)}`);
    await openExample(ev.target.value);
  }));
  $("api-key").addEventListener("change", guard(async (ev) => {
    sessionStorage.setItem("gradserve-api-key", ev.target.value.trim());
    await info();
    await recompute();
  }));
  for (const radio of document.querySelectorAll('input[name="show"]')) {
    radio.addEventListener("change", () => {
      state.show = radio.value;
      drawGraph();
    });
  }
  NARROW.addEventListener("change", () => state.network && drawGraph());
  $("step").addEventListener("click", guard(step));
  $("play").addEventListener("click", guard(play));
  $("pause").addEventListener("click", () => {
    state.playing = false;
  });
  $("reset").addEventListener("click", guard(async () => {
    state.playing = false;
    state.network = clone(state.snapshot);
    resetLosses();
    await recompute();
  }));
  $("check-shown").addEventListener("click", guard(checkShown));
  $("check-mine").addEventListener("click", guard(checkMine));
  $("load-json").addEventListener("click", guard(() => load(parseJson($("json").value))));
  $("export-json").addEventListener("click", guard(exportJson));
  $("download-svg").addEventListener("click", guard(downloadSvg));
  $("import-file").addEventListener("change", guard(async (ev) => {
    const file = ev.target.files[0];
    if (file) await load(parseJson(await file.text()));
  }));
  const name = new URLSearchParams(location.search).get("example") || "chain";
  await Promise.all([info(), guard(openExample)(name)]);
  document.body.dataset.ready = "true";
}

async function info() {
  try {
    const i = await api("/v1/info");
    $("service-info").textContent = `gradserve ${i.version}`;
  } catch (e) {
    $("service-info").textContent = "gradserve";
    if (e instanceof ApiError && e.status === 401) showError(e);
  }
}

start();
