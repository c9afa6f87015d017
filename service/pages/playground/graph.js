// The network's picture, drawn from /v1/render?format=layout: the service lays the network out
// (its layers, the order within them, the edges' routes and where their labels go); this page
// adds what it shows in the units (their values, a picture of z) and makes units and edges
// selectable by mouse and keyboard.
import { api } from "./api.js";
import { model, outputsHaveTargets } from "./model.js";
import { $, arrow, el, flat, fmt, summary, svgEl } from "./util.js";

const NARROW = window.matchMedia("(max-width: 600px)"); // a phone: layers top to bottom
const PICTURE = 36; // a unit's heat map, in the drawing's units

export const view = {
  show: "gradients",
  edge: null, // index of the weight being explained
  unit: null, // id of the selected unit
  connecting: false, // the next unit clicked is the target of an edge from `unit`
  pictures: new Map(), // unit id -> its heat map: {canvas, key}
  seq: 0,
};

/** What a click or Enter on a unit or an edge does: set by main.js. */
export const handlers = { edge: () => {}, unit: () => {} };

export function onResize(fn) {
  NARROW.addEventListener("change", fn);
}

function gradientOf(k) {
  const g = model.result && model.result.gradients;
  return g && Array.isArray(g.weights) && g.weights[k] ? g.weights[k].value : null;
}

/** Sample 1's value of s, z or delta at a unit (a number, or an array for a layer). */
export function unitValue(id, q) {
  const u = model.result && model.result.units && model.result.units[id];
  if (!u || u[q] === undefined || u[q] === null) return null;
  const first = u[q][0];
  return Array.isArray(first) && first.length === 1 ? first[0] : first;
}

export const gradient = gradientOf;

/** The service's layout of the network: with the shown values when it can compute them. */
function requestLayout() {
  const computed = model.result !== null;
  const show = computed && (view.show === "weights" || outputsHaveTargets()) ? view.show : "weights";
  const orient = NARROW.matches ? "vertical" : "horizontal";
  const samples = computed ? model.samples : null;
  return api(`/v1/render?format=layout&orient=${orient}`, { network: model.network, samples, show });
}

/** Cut a text element's content with an ellipsis until it is at most `width` wide. */
function fit(text, width) {
  const full = text.textContent;
  if (text.getComputedTextLength() <= width) return;
  let lo = 0;
  let hi = full.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    text.textContent = `${full.slice(0, mid)}…`;
    if (text.getComputedTextLength() <= width) lo = mid;
    else hi = mid - 1;
  }
  text.textContent = `${full.slice(0, lo)}…`;
}

function activate(node, fn) {
  node.addEventListener("click", fn);
  node.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      fn();
    }
  });
}

export async function drawGraph() {
  const seq = ++view.seq;
  const host = $("graph");
  const net = model.network;
  let lay;
  try {
    lay = await requestLayout();
  } catch (e) {
    if (seq !== view.seq || net !== model.network) return;
    // when the computation failed too, its error (shown above) says why; else this one does
    const note = model.result === null ? "No picture: the service cannot draw this network (see the message above)." : `No picture: ${e.message}`;
    host.replaceChildren(el("p", { class: "hint", text: note }));
    $("graph-caption").textContent = "";
    return;
  }
  // an answer for a network since replaced (loaded, trained) is dropped: its own redraw follows
  if (seq !== view.seq || net !== model.network) return;
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
    const name = arrow(e.source, e.target);
    const group = svgEl("g", {
      class: `edge${view.edge === k ? " selected" : ""}`,
      tabindex: 0,
      role: "button",
      "data-source": e.source,
      "data-target": e.target,
      "data-edge": `${e.source}->${e.target}`,
      "data-index": k,
      "aria-label": `weight ${name}: value ${weightText}, gradient ${gradText}. Explain`,
    });
    group.append(
      svgEl("title", { text: `weight ${name}` }),
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
    labelGroup.addEventListener("click", () => handlers.edge(k));
    activate(group, () => handlers.edge(k));
    edgeLayer.append(group);
    labelLayer.append(labelGroup);
  }
  const unitLayer = svgEl("g", { class: "units" });
  const fits = [];
  for (const u of lay.units) {
    const [x0, y0] = [u.x - u.width / 2, u.y - u.height / 2];
    const kind = u.role === "input" ? "input" : u.activation;
    const selected = view.unit === u.id;
    const g = svgEl("g", {
      class: `unit ${u.role}${selected ? " selected" : ""}${view.connecting && selected ? " connecting" : ""}`,
      "data-unit": u.id,
      tabindex: 0,
      role: "button",
      "aria-pressed": String(selected),
      "aria-label": `unit ${u.id}, ${u.role}, ${kind}${view.connecting ? ": connect to it" : ": select"}`,
    });
    g.append(svgEl("title", { text: `${u.id} (${u.role}, ${kind})` }));
    g.append(svgEl("rect", { x: x0, y: y0, width: u.width, height: u.height, rx: 8 }));
    const picture = u.role !== "input" && view.pictures.has(u.id);
    const textWidth = u.width - 12 - (picture ? PICTURE + 6 : 0);
    let y = y0 + 15;
    const size = u.size > 1 ? ` (${u.size})` : "";
    const title = svgEl("text", { x: x0 + 8, y, class: "name", text: `${u.id}${size} · ${kind}` });
    g.append(title);
    fits.push([title, u.width - 16]);
    for (const [q, name] of [["s", "s"], ["z", "z"], ["delta", "δ"]]) {
      const v = unitValue(u.id, q);
      if (v === null) continue;
      y += 15;
      const shown = typeof v === "number" ? fmt(v) : `‖${fmt(Math.hypot(...flat(v)))}‖`;
      const line = svgEl("text", { x: x0 + 8, y, class: "value", "data-q": q, text: `${name} = ${shown}` });
      g.append(line);
      fits.push([line, textWidth]);
    }
    if (u.role !== "input") {
      // a canvas in the drawing, painted from the page's own pixels: no image URL for the CSP to weigh
      const holder = svgEl("foreignObject", {
        class: "picture",
        x: x0 + u.width - PICTURE - 5,
        y: y0 + u.height - PICTURE - 5,
        width: PICTURE,
        height: PICTURE,
        "data-unit": u.id,
      });
      holder.append(el("canvas", { width: 1, height: 1, "aria-hidden": "true" }));
      g.append(holder);
    }
    activate(g, () => handlers.unit(u.id));
    unitLayer.append(g);
  }
  svg.append(edgeLayer, unitLayer, labelLayer);
  host.replaceChildren(svg);
  for (const [text, width] of fits) fit(text, width); // measured once drawn
  showPictures(view.pictures);
  $("graph-caption").textContent = lay.caption;
}

/** Put new heat maps into the drawn units (the next redraw keeps them): id -> {canvas, key}. */
export function showPictures(pictures) {
  view.pictures = pictures;
  for (const holder of document.querySelectorAll("#graph foreignObject.picture")) {
    const picture = pictures.get(holder.dataset.unit);
    const canvas = holder.firstElementChild;
    holder.setAttribute("visibility", picture ? "visible" : "hidden");
    if (!picture) {
      holder.removeAttribute("data-key");
      continue;
    }
    canvas.width = picture.canvas.width;
    canvas.height = picture.canvas.height;
    canvas.getContext("2d").drawImage(picture.canvas, 0, 0);
    holder.dataset.key = picture.key; // which values it shows: a test sees it change
  }
}

/** Mark the selected edge and unit in the drawn picture without asking for a new layout. */
export function markSelection() {
  for (const g of document.querySelectorAll("#graph .edge")) g.classList.toggle("selected", Number(g.dataset.index) === view.edge);
  for (const g of document.querySelectorAll("#graph .unit")) {
    const on = g.dataset.unit === view.unit;
    g.classList.toggle("selected", on);
    g.classList.toggle("connecting", on && view.connecting);
    g.setAttribute("aria-pressed", String(on));
  }
}
