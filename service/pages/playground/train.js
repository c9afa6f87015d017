// Training: /v1/sgd with the optimizer the student picks, a step at a time (one call of the
// "Epochs per step" field's epochs) or streamed while Play runs. The optimizer's state from each answer goes
// back with the next call, so Play's calls train as one long call would.
import { api, guard, sgdEvents, showError } from "./api.js";
import { drawChart } from "./chart.js";
import { adoptNetwork, body, changed, model } from "./model.js";
import { $, clone, el, fmt, parseNumber, readInt, sleep } from "./util.js";

export const training = {
  train: [], // [epoch, loss] on the training samples: before training, then after steps or streamed epochs
  test: [], // [epoch, loss] on the test samples, after each step
  epochs: 0,
  streamed: 0, // progress events received from streamed trainings
  playing: false,
  state: null, // the optimizer's state from the last answer, when the service keeps one
  optimizers: ["sgd"],
  resumable: false, // whether the service answers with a state (it offers optimizers)
};

// what each optimizer takes beside the learning rate (torch.optim's names)
const TAKES_MOMENTUM = new Set(["sgd", "rmsprop"]);

/** Offer the optimizers /v1/info lists; a service without the list offers sgd (with momentum). */
export function offerOptimizers(info) {
  const names = info && Array.isArray(info.optimizers) && info.optimizers.length ? info.optimizers : null;
  training.optimizers = names || ["sgd"];
  training.resumable = names !== null;
  const select = $("optimizer");
  const current = select.value;
  select.replaceChildren(...training.optimizers.map((n) => el("option", { value: n, text: n })));
  if (training.optimizers.includes(current)) select.value = current;
  momentumField();
}

function momentumField() {
  const takes = TAKES_MOMENTUM.has($("optimizer").value);
  $("momentum").disabled = !takes;
}

/** Forget the curve and the optimizer's state; with `snapshot`, Reset returns to the network as it is now. */
export function resetTraining(snapshot = false) {
  training.train = [];
  training.test = [];
  training.epochs = 0;
  training.state = null;
  if (snapshot) model.snapshot = clone(model.network);
}

/** The loss of the network as computed now (after loading, an edit, or a step). */
export function noteLosses(trainLoss, testLoss) {
  const at = training.epochs;
  if (typeof trainLoss === "number" && !training.train.some((p) => p[0] === at)) training.train.push([at, trainLoss]);
  if (typeof testLoss === "number" && !training.test.some((p) => p[0] === at)) training.test.push([at, testLoss]);
}

function request(epochs) {
  const lr = parseNumber($("learning-rate").value);
  if (lr === null || lr <= 0) throw new Error("the learning rate must be a number above 0");
  const optimizer = $("optimizer").value;
  const extra = { learning_rate: lr, epochs };
  if (training.resumable) extra.optimizer = optimizer;
  if (TAKES_MOMENTUM.has(optimizer)) {
    const m = parseNumber($("momentum").value);
    if (m === null || m < 0 || m >= 1) throw new Error("the momentum must be a number from 0 up to (not including) 1");
    if (m > 0) extra.momentum = m;
  }
  if ($("batch-size").value.trim() !== "") {
    extra.batch_size = readInt("batch-size", "the batch size", 1, 1e6);
    extra.shuffle = true;
    extra.seed = readInt("data-seed", "the data seed", 0, 2 ** 31 - 1);
  }
  if (training.state) extra.state = training.state; // only what the last answer carried
  return body(extra);
}

function adopt(answer) {
  adoptNetwork(answer.network);
  training.state = answer.state || null;
}

/** One step: a call of "epochs per step" epochs. */
export async function step() {
  const epochs = readInt("epochs", "the epochs per step", 1, 10000);
  const answer = await api("/v1/sgd", request(epochs));
  if (!training.train.length) training.train.push([training.epochs, answer.loss_before]);
  adopt(answer);
  training.epochs += answer.history.length;
  training.train.push([training.epochs, answer.loss_after]);
  await changed();
}

async function streamedStep() {
  const epochs = readInt("epochs", "the epochs per step", 1, 10000);
  const base = training.epochs;
  for await (const { event, data } of sgdEvents(request(epochs))) {
    if (event === "progress") {
      training.streamed += 1;
      // a progress event counts this call's epochs from 0 (a resumed training's history goes on
      // from the state's count; its events do not)
      training.epochs = base + Math.max(1, Math.min(data.epoch + 1, epochs));
      training.train.push([training.epochs, data.loss]);
      chart();
    } else if (event === "result") {
      adopt(data);
      training.epochs = base + data.history.length;
      const last = data.history[data.history.length - 1];
      if (training.train[training.train.length - 1][0] !== training.epochs) training.train.push([training.epochs, last.loss]);
    }
  }
  await changed();
}

function buttons() {
  $("play").disabled = training.playing;
  $("step").disabled = training.playing;
  $("pause").disabled = !training.playing;
}

export async function play() {
  training.playing = true;
  buttons();
  while (training.playing) {
    try {
      await streamedStep();
    } catch (e) {
      showError(e);
      break;
    }
    await sleep(120);
  }
  training.playing = false;
  buttons();
}

export function chart() {
  const last = training.train.length ? training.train[training.train.length - 1][1] : null;
  const test = training.test.length ? training.test[training.test.length - 1][1] : null;
  const status = $("train-status");
  status.replaceChildren();
  if (last !== null) {
    status.append(`epoch ${training.epochs}: training loss `, el("span", { id: "train-loss", "data-value": String(last), text: fmt(last) }));
    if (test !== null) status.append(", test loss ", el("span", { id: "test-loss", "data-value": String(test), text: fmt(test) }));
  }
  status.dataset.steps = String(training.epochs);
  drawChart({ train: training.train, test: training.test, log: $("log-scale").checked, epochs: training.epochs, streamed: training.streamed });
}

export function wireTraining() {
  $("optimizer").addEventListener("change", () => {
    training.state = null; // another optimizer's buffers do not fit
    momentumField();
  });
  for (const id of ["batch-size", "momentum"]) $(id).addEventListener("change", () => (training.state = null));
  $("step").addEventListener("click", guard(step));
  $("play").addEventListener("click", guard(play));
  $("pause").addEventListener("click", () => {
    training.playing = false;
  });
  $("reset").addEventListener("click", guard(async () => {
    training.playing = false;
    model.network = clone(model.snapshot);
    resetTraining();
    await changed();
  }));
  $("log-scale").addEventListener("change", chart);
}
