// The gradserve playground: plain ES modules on the public REST API, the same one the SDK uses.
// This module starts the page: it wires the controls to the parts (api, graph, edit, tables,
// explain, train, heatmap, data, check, files) and runs one recomputation after every change.
import { ApiError, api, clearError, guard, showError } from "./api.js";
import { checkMine, checkShown } from "./check.js";
import { drawDataset, loadCsv, showSliders } from "./data.js";
import { addLayer, addUnit, cancel, deleteSelected, offerActivations, pickUnit, reseed, setActivation, startConnect, toolbar, undoButton, undoEdit } from "./edit.js";
import { EXAMPLES } from "./examples.js";
import { clearExplain, explain } from "./explain.js";
import { downloadSvg, exportJson, parseJson, syncJson } from "./files.js";
import { drawGraph, handlers, onResize, view } from "./graph.js";
import { heatmaps } from "./heatmap.js";
import { body, model, normalize, onChange, outputsHaveTargets } from "./model.js";
import { buildTables, updateTables, watchEdits } from "./tables.js";
import { chart, noteLosses, offerOptimizers, resetTraining, wireTraining } from "./train.js";
import { $, clone, fmt } from "./util.js";

let computing = 0;
let shape = null; // what the tables were built for

/** The tables are rebuilt only when the network's shape or the samples' count changed (not while typing). */
function shapeOf() {
  const n = model.network;
  const counts = (s) => s && [s.inputs, s.targets].map((a) => Object.entries(a).map(([id, rows]) => [id, rows.length]));
  return JSON.stringify([n.units.map((u) => [u.id, u.role, u.activation]), n.weights.map((w) => [w.source, w.target]), counts(model.samples), counts(model.test)]);
}

function testLoss() {
  const t = model.test;
  const ready = t && model.network.units.filter((u) => u.role === "output").every((u) => t.targets && u.id in t.targets);
  return ready ? api("/v1/forward", { network: model.network, samples: t }).then((r) => r.loss) : Promise.resolve(null);
}

/** Ask the service about the network as it is now and show every answer; the refusal, if any, is returned. */
async function recompute() {
  const mine = ++computing;
  let refused = null;
  try {
    const [result, lossOnTest] = await Promise.all([
      outputsHaveTargets() ? api("/v1/gradients", body({ include_units: true })) : api("/v1/forward", body()),
      testLoss(),
    ]);
    if (mine !== computing) return null;
    model.result = result;
    model.testLoss = lossOnTest;
    noteLosses(result.loss, lossOnTest);
    clearError();
  } catch (e) {
    if (mine !== computing) return null;
    model.result = null;
    showError(e);
    refused = e;
  }
  const loss = model.result && typeof model.result.loss === "number" ? model.result.loss : null;
  $("loss").textContent = loss === null ? "" : `E = ${fmt(loss)} (training samples)`;
  if (loss !== null) $("loss").dataset.value = String(loss);
  if (shapeOf() !== shape) {
    shape = shapeOf();
    buildTables();
  }
  await drawGraph();
  if (mine !== computing) return refused;
  toolbar();
  updateTables();
  chart();
  syncJson();
  if (model.result && model.network.weights.length) {
    // the explain panel is never blank: the first edge until another is picked
    if (view.edge === null || view.edge >= model.network.weights.length) view.edge = 0;
    await explain(view.edge);
  } else clearExplain();
  if (model.result) await heatmaps();
  return refused;
}

let current = "chain"; // the example (or "custom") the menu names

/** Show a document; one the service refuses leaves the page (and the Example menu) as it was. */
async function load(doc, name) {
  const next = normalize(doc);
  if (model.network && name === "custom") {
    try {
      await api("/v1/forward", { network: next.network, samples: next.samples }); // refused before anything changes
    } catch (e) {
      $("example").value = current;
      throw e;
    }
  }
  Object.assign(model, next, { snapshot: clone(next.network), result: null, undo: [] });
  Object.assign(view, { edge: null, unit: null, connecting: false, pictures: new Map() });
  resetTraining();
  undoButton();
  $("check-summary").textContent = "";
  current = name;
  $("example").value = name;
  if (name !== "custom") $("dataset").value = "";
  history.replaceState(null, "", name === "custom" ? location.pathname : `?example=${encodeURIComponent(name)}`);
  await recompute();
}

function openExample(name) {
  const doc = EXAMPLES[name];
  if (!doc) throw new Error(`no example named ${JSON.stringify(name)}; try one of ${Object.keys(EXAMPLES).join(", ")}`);
  return load(doc, name);
}

async function info() {
  try {
    const i = await api("/v1/info");
    $("service-info").textContent = `gradserve ${i.version}`;
    offerActivations(i.activations);
    offerOptimizers(i);
  } catch (e) {
    $("service-info").textContent = "gradserve";
    offerOptimizers(null);
    if (e instanceof ApiError && e.status === 401) showError(e);
  }
}

function typing(target) {
  return target instanceof HTMLTextAreaElement || (target instanceof HTMLInputElement && !["checkbox", "radio", "range", "file"].includes(target.type));
}

function keys() {
  document.addEventListener("keydown", (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && !ev.shiftKey && ev.key.toLowerCase() === "z" && !typing(ev.target)) {
      ev.preventDefault();
      guard(undoEdit)();
    } else if (ev.key === "Escape") cancel();
    else if (ev.key === "Delete" && ev.target instanceof Element && ev.target.closest("#graph")) guard(deleteSelected)();
  });
}

async function start() {
  const key = sessionStorage.getItem("gradserve-api-key");
  if (key) $("api-key").value = key;
  onChange(recompute);
  handlers.edge = (k) => {
    view.edge = k;
    view.unit = null;
    view.connecting = false;
    toolbar();
    explain(k);
  };
  handlers.unit = guard(async (id) => pickUnit(id));
  $("example").addEventListener("change", guard((ev) => (ev.target.value === "custom" ? null : openExample(ev.target.value))));
  $("api-key").addEventListener("change", guard(async (ev) => {
    sessionStorage.setItem("gradserve-api-key", ev.target.value.trim());
    await info();
    await recompute();
  }));
  for (const radio of document.querySelectorAll('input[name="show"]')) {
    radio.addEventListener("change", () => {
      view.show = radio.value;
      drawGraph();
    });
  }
  onResize(() => model.network && drawGraph());
  $("add-unit").addEventListener("click", guard(addUnit));
  $("connect").addEventListener("click", startConnect);
  $("delete").addEventListener("click", guard(deleteSelected));
  $("activation").addEventListener("change", guard((ev) => setActivation(ev.target.value)));
  $("add-layer").addEventListener("click", guard(addLayer));
  $("undo").addEventListener("click", guard(undoEdit));
  $("weight-seed").addEventListener("change", guard(reseed));
  $("dataset").addEventListener("change", guard(drawDataset));
  for (const id of ["noise", "test-share", "data-seed"]) {
    $(id).addEventListener("input", showSliders);
    $(id).addEventListener("change", guard(drawDataset));
  }
  $("csv-file").addEventListener("change", guard(async (ev) => {
    const file = ev.target.files[0];
    ev.target.value = "";
    if (file) await loadCsv(file);
  }));
  wireTraining();
  $("check-shown").addEventListener("click", guard(checkShown));
  $("check-mine").addEventListener("click", guard(checkMine));
  $("load-json").addEventListener("click", guard(() => load(parseJson($("json").value), "custom")));
  $("export-json").addEventListener("click", guard(exportJson));
  $("download-svg").addEventListener("click", guard(downloadSvg));
  $("import-file").addEventListener("change", guard(async (ev) => {
    const file = ev.target.files[0];
    if (file) await load(parseJson(await file.text()), "custom");
  }));
  watchEdits();
  keys();
  reseed();
  showSliders();
  const name = new URLSearchParams(location.search).get("example") || "chain";
  await info();
  await guard(openExample)(name);
  document.body.dataset.ready = "true";
}

start();
