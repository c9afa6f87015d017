// The service's public REST API, as the page speaks it, and how its refusals are shown.
import { $, el } from "./util.js";

export class ApiError extends Error {
  constructor(status, problem, text) {
    const detail = (problem && (problem.detail || problem.title)) || text || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.problem = problem;
  }
}

// A request to the service with the key, if one is given; a network failure says which path.
export async function send(path, body, accept = "application/json") {
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
export async function plainAnswer(response) {
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

export async function api(path, body, as = "json") {
  const response = await send(path, body);
  if (response.ok && as === "text") return response.text();
  return plainAnswer(response);
}

/** A streamed /v1/sgd: its events as they come, `progress` ones then the `result`. */
export async function* sgdEvents(payload) {
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

// ---------------------------------------------------------------- the message box

export function showError(e) {
  const box = $("status");
  box.replaceChildren();
  if (e instanceof ApiError && e.status === 401) {
    // the page sends the key itself: the student's part is the field, not a header
    const go = el("button", { type: "button", text: "Go to the API key field" });
    go.addEventListener("click", () => $("api-key").focus());
    box.append(el("strong", { text: "401 unauthorised: " }), "this service needs an API key. Type it in the “API key” field at the top. ", go);
    $("api-key").setAttribute("aria-invalid", "true");
  } else if (e instanceof ApiError) {
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

export function clearError() {
  $("status").hidden = true;
  $("status").replaceChildren();
  $("api-key").removeAttribute("aria-invalid");
}

/** An event handler whose failure is shown rather than thrown. */
export function guard(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (e) {
      showError(e);
    }
  };
}
