// The weights, units and samples as tables of numbers anyone can edit; an edit recomputes.
import { gradient, handlers, unitValue } from "./graph.js";
import { changed, inputs, model, outputs, remember, role } from "./model.js";
import { resetTraining } from "./train.js";
import { $, arrow, el, flat, fmt, fmtInput, parseNumber, scalar, signClass, summary } from "./util.js";

const EDIT_DELAY_MS = 300;
const SHOWN_SAMPLES = 20;

function numberInput(label, value, data) {
  const input = el("input", { type: "text", inputmode: "decimal", "aria-label": label, value: fmtInput(value), autocomplete: "off" });
  Object.assign(input.dataset, data);
  return input;
}

const idCell = (text, extra = {}) => el("th", { scope: "row", class: "id", ...extra, text });

export function buildTables() {
  const net = model.network;
  const wbody = $("weights-table").tBodies[0];
  wbody.replaceChildren();
  const cbody = $("check-table").tBodies[0];
  cbody.replaceChildren();
  net.weights.forEach((e, k) => {
    const v = scalar(e.value);
    const name = arrow(e.source, e.target);
    const valueCell = v === null ? el("td", { text: "a matrix (edit it as JSON)" }) : el("td", {}, numberInput(`weight ${name}`, v, { kind: "weight", index: k }));
    const button = el("button", { type: "button", "aria-label": `explain weight ${name}`, text: "Explain" });
    button.addEventListener("click", () => handlers.edge(k));
    wbody.append(el("tr", {}, idCell(`${e.source} → ${e.target}`), valueCell, el("td", { class: "grad", "data-index": k }), el("td", {}, button)));
    const mine = el("input", { type: "text", inputmode: "decimal", "aria-label": `your gradient for ${name}`, autocomplete: "off", "data-index": k });
    cbody.append(
      el("tr", { "data-index": k }, idCell(`${e.source} → ${e.target}`), el("td", {}, mine), el("td", { class: "checked" }), el("td", { class: "numeric" }), el("td", { class: "result" })),
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
        idCell(`${u.id}${role(u) === "hidden" ? "" : ` (${role(u)})`}`),
        el("td", { text: kind }),
        bias,
        ...["s", "z", "delta"].map((q) => el("td", { "data-unit": u.id, "data-q": q })),
      ),
    );
  }
  buildSamplesTable();
}

function buildSamplesTable() {
  const table = $("samples-table");
  const ins = inputs();
  const outs = outputs().filter((u) => model.samples.targets[u.id]);
  const head = el("tr", {}, el("th", { scope: "col", text: "sample" }));
  for (const u of ins) head.append(el("th", { scope: "col", class: "id", text: `input ${u.id}` }));
  for (const u of outs) head.append(el("th", { scope: "col", class: "id", text: `target ${u.id}` }));
  table.tHead.replaceChildren(head);
  const tbody = table.tBodies[0];
  tbody.replaceChildren();
  const first = ins.length ? model.samples.inputs[ins[0].id] : [];
  const batch = first ? first.length : 0;
  const shown = Math.min(batch, SHOWN_SAMPLES);
  // samples are numbered from 1 here, in the units ("sample 1") and in explain alike
  for (let n = 0; n < shown; n++) {
    const tr = el("tr", {}, el("th", { scope: "row", text: String(n + 1) }));
    for (const [u, kind, arrays] of [...ins.map((u) => [u, "input", model.samples.inputs]), ...outs.map((u) => [u, "target", model.samples.targets])]) {
      const row = arrays[u.id] && arrays[u.id][n];
      const v = row && row.length === 1 ? row[0] : null;
      tr.append(typeof v === "number" ? el("td", {}, numberInput(`${kind} ${u.id}, sample ${n + 1}`, v, { kind, unit: u.id, sample: n })) : el("td", { text: "a vector (edit it as JSON)" }));
    }
    tbody.append(tr);
  }
  if (batch > shown) tbody.append(el("tr", {}, el("td", { colspan: 1 + ins.length + outs.length, text: `and samples ${shown + 1} to ${batch} (edit them as JSON)` })));
  const testCount = model.test && ins.length ? model.test.inputs[ins[0].id].length : 0;
  table.caption.textContent = `Training samples: ${batch}${testCount ? `; test samples: ${testCount} more, held out` : ""}`;
}

export function updateTables() {
  for (const td of document.querySelectorAll("#weights-table td.grad")) {
    const g = gradient(Number(td.dataset.index));
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
  // the inputs show the model's numbers (training changes them) unless someone is typing in them
  for (const input of document.querySelectorAll("input[data-kind]")) {
    if (input === document.activeElement || input.getAttribute("aria-invalid") === "true") continue;
    const v = readModel(input.dataset);
    if (v !== null) input.value = fmtInput(v);
  }
}

function readModel(d) {
  if (d.kind === "weight") return scalar(model.network.weights[Number(d.index)].value);
  if (d.kind === "bias") {
    const u = model.network.units.find((x) => x.id === d.unit);
    return u.bias === undefined || u.bias === null ? 0 : scalar(u.bias);
  }
  const arrays = d.kind === "input" ? model.samples.inputs : model.samples.targets;
  return arrays[d.unit][Number(d.sample)][0];
}

function writeModel(d, v) {
  if (d.kind === "weight") model.network.weights[Number(d.index)].value = v;
  else if (d.kind === "bias") model.network.units.find((x) => x.id === d.unit).bias = v;
  else (d.kind === "input" ? model.samples.inputs : model.samples.targets)[d.unit][Number(d.sample)][0] = v;
}

const pending = new WeakMap();

/** Typing in a table's number: after a pause, the model takes it (one undo step a field) and recomputes. */
export function watchEdits() {
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
        remember();
        writeModel(input.dataset, v);
        resetTraining(input.dataset.kind === "weight" || input.dataset.kind === "bias");
        changed();
      }, EDIT_DELAY_MS),
    );
  });
}
