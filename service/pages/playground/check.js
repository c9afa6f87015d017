// Gradient checking by the service's central differences (/v1/check): the shown gradients,
// or the student's own.
import { api } from "./api.js";
import { body, model } from "./model.js";
import { $, arrow, fmt, parseNumber, scalar, summary } from "./util.js";

async function check(gradients, label) {
  const res = await api("/v1/check", body({ gradients }));
  const byName = new Map(res.weights.map((x) => [arrow(x.source, x.target), x]));
  for (const tr of $("check-table").tBodies[0].rows) {
    const e = model.network.weights[Number(tr.dataset.index)];
    const x = byName.get(arrow(e.source, e.target));
    const [checked, numeric, result] = ["checked", "numeric", "result"].map((c) => tr.querySelector(`td.${c}`));
    checked.textContent = x ? fmt(scalar(x.checked) ?? summary(x.checked).rms) : "—";
    numeric.textContent = x ? fmt(scalar(x.numeric) ?? summary(x.numeric).rms) : "—";
    result.textContent = x ? (x.ok ? "pass" : "fail") : "not checked";
    result.className = `result ${x ? (x.ok ? "pass" : "fail") : ""}`;
  }
  $("check-summary").textContent = `${label}: ${res.ok ? "every one passes" : "some fail"} (largest absolute error ${fmt(res.max_abs_error)}, relative ${fmt(res.max_rel_error)})`;
  $("check-summary").dataset.ok = String(res.ok);
}

export async function checkShown() {
  if (!model.result || !model.result.gradients) throw new Error("no gradients shown yet: give every output a target");
  await check(model.result.gradients, "The shown gradients");
}

export async function checkMine() {
  const weights = [];
  for (const input of $("check-table").querySelectorAll("input")) {
    if (input.value.trim() === "") continue;
    const v = parseNumber(input.value);
    input.setAttribute("aria-invalid", v === null ? "true" : "false");
    if (v === null) throw new Error(`${input.getAttribute("aria-label")}: not a number`);
    const e = model.network.weights[Number(input.dataset.index)];
    weights.push({ source: e.source, target: e.target, value: v });
  }
  if (!weights.length) throw new Error("type at least one gradient in the “your ∂E/∂w” column first");
  await check({ weights }, "Your gradients");
}
