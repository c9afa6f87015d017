// The network and samples as JSON: shown, exported, imported; and the picture as an SVG file.
import { api } from "./api.js";
import { view } from "./graph.js";
import { documentOf, model, outputsHaveTargets } from "./model.js";
import { $, download } from "./util.js";

export function syncJson() {
  const area = $("json");
  if (area !== document.activeElement) area.value = JSON.stringify(documentOf(), null, 2);
}

export function exportJson() {
  $("json").value = JSON.stringify(documentOf(), null, 2);
  download($("json").value, "application/json", "gradserve-network.json");
}

export async function downloadSvg() {
  const withSamples = view.show === "weights" || outputsHaveTargets();
  const samples = withSamples ? model.samples : null;
  const picture = await api("/v1/render", { network: model.network, samples, show: withSamples ? view.show : "weights" }, "text");
  download(picture, "image/svg+xml", "gradserve-network.svg");
}

export function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${e.message}`);
  }
}
