// "Why this gradient": /v1/explain's answer for one weight, path by path, with its formula
// typeset (MathML) and its LaTeX source to copy.
import { api, showError } from "./api.js";
import { body } from "./model.js";
import { mathml } from "./mathml.js";
import { $, arrow, el, fmt, scalar } from "./util.js";

let seq = 0;

async function copy(latex, button) {
  try {
    await navigator.clipboard.writeText(latex);
    button.textContent = "Copied";
  } catch {
    // no clipboard (a page not focused, or no permission): the source is selectable below
    button.textContent = "Select the source below to copy it";
  }
  setTimeout(() => (button.textContent = "Copy LaTeX"), 1500);
}

export function clearExplain() {
  seq += 1;
  $("explain").replaceChildren(el("p", { class: "hint", text: "Pick an edge in the picture or an “Explain” button in the weights table." }));
}

export async function explain(k) {
  const mine = ++seq;
  const panel = $("explain");
  let res;
  try {
    res = await api("/v1/explain", body({ sample: 0 }));
  } catch (e) {
    if (mine === seq) showError(e);
    return;
  }
  if (mine !== seq) return;
  const x = res.weights[k];
  if (!x) return;
  const name = arrow(x.source, x.target);
  const g = scalar(x.gradient);
  const parts = [];
  const head = el("h3", { id: "explain-gradient", class: "id", text: `∂E/∂w(${x.source}→${x.target}) = ${g === null ? "a matrix" : fmt(g)}` });
  if (g !== null) head.dataset.value = String(g);
  head.dataset.weight = name;
  parts.push(head, el("p", { class: "hint", text: "For sample 1 (the first row of the samples table)." }));
  const formula = el("div", { class: "formula", tabindex: 0, role: "group", "aria-label": "the formula, typeset (scrolls sideways when long)" });
  formula.append(mathml(x.latex));
  parts.push(formula);
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
  const button = el("button", { type: "button", id: "copy-latex", "data-latex": x.latex, text: "Copy LaTeX" });
  button.addEventListener("click", () => copy(x.latex, button));
  const source = el("details", {}, el("summary", { text: "LaTeX source" }), el("pre", { class: "latex", text: x.latex }));
  parts.push(el("div", { class: "row" }, button), source);
  panel.replaceChildren(...parts);
}
