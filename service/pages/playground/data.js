// Where the samples come from: a data set drawn by the page (Dataset, Noise, Test share, a
// data seed) or a CSV file of samples; either replaces the samples, as one edit.
import { apply } from "./edit.js";
import { DATASETS, generate, readCsv } from "./datasets.js";
import { inputs, model, outputs } from "./model.js";
import { $, readInt, rng } from "./util.js";

function settings() {
  return {
    random: rng(readInt("data-seed", "the data seed", 0, 2 ** 31 - 1)),
    noise: Number($("noise").value) / 100,
    testShare: Number($("test-share").value) / 100,
  };
}

export function showSliders() {
  $("noise-value").textContent = `${$("noise").value}%`;
  $("test-share-value").textContent = `${$("test-share").value}%`;
}

/** Draw the chosen data set for the network's two inputs and its (first) output. */
export function drawDataset() {
  const name = $("dataset").value;
  if (!DATASETS.includes(name)) return null;
  const ins = inputs();
  const outs = outputs();
  if (ins.length !== 2 || !outs.length) {
    throw new Error(`the data sets have two inputs and one output; this network has ${ins.length} input${ins.length === 1 ? "" : "s"} and ${outs.length} output${outs.length === 1 ? "" : "s"}`);
  }
  const drawn = generate(name, { ...settings(), a: ins[0].id, b: ins[1].id, o: outs[0].id });
  return apply(() => {
    model.samples = drawn.samples;
    model.test = drawn.test;
  });
}

export async function loadCsv(file) {
  const text = await file.text();
  const read = readCsv(
    text,
    inputs().map((u) => u.id),
    outputs().map((u) => u.id),
    settings(),
  );
  $("dataset").value = "";
  $("csv-status").textContent = `${file.name}: ${read.samples.inputs[inputs()[0].id].length} training samples${read.test ? `, ${read.test.inputs[inputs()[0].id].length} test samples` : ""}.`;
  return apply(() => {
    model.samples = read.samples;
    model.test = read.test;
  });
}
