// Small helpers every part of the page uses: DOM building, number formatting, a seeded RNG.

export const SVG = "http://www.w3.org/2000/svg";
export const MATHML = "http://www.w3.org/1998/Math/MathML";

export const $ = (id) => document.getElementById(id);
export const clone = (x) => JSON.parse(JSON.stringify(x));
export const arrow = (s, t) => `${s} -> ${t}`;
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) node.append(c);
  return node;
}

export function svgEl(tag, attrs = {}) {
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

export const fmtInput = (v) => String(Number(v.toPrecision(6)));

/** The one number in a size-1 array (a number, [n] or [[n]]), else null. */
export function scalar(v) {
  while (Array.isArray(v) && v.length === 1) v = v[0];
  return typeof v === "number" ? v : null;
}

export function flat(v) {
  return Array.isArray(v) ? v.flat(Infinity) : [v];
}

/** One number for a matrix edge: its mean (the sign) and its root mean square (the size). */
export function summary(v) {
  const xs = flat(v);
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const rms = Math.sqrt(xs.reduce((a, b) => a + b * b, 0) / xs.length);
  return { mean, rms, single: xs.length === 1 ? xs[0] : null, count: xs.length };
}

export const signClass = (v) => (v > 0 ? "pos" : v < 0 ? "neg" : "");

export function parseNumber(text) {
  const t = String(text).trim();
  if (t === "") return null;
  const v = Number(t);
  return Number.isFinite(v) ? v : null;
}

/** A whole number from a field, within [lo, hi], or an error naming the field. */
export function readInt(id, name, lo, hi) {
  const v = parseNumber($(id).value);
  if (v === null || !Number.isInteger(v) || v < lo || v > hi) {
    throw new Error(`${name} must be a whole number from ${lo} to ${hi}`);
  }
  return v;
}

/** mulberry32: a small seeded generator, so a seed shown on the page gives the same numbers. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Save text as a file the browser downloads. */
export function download(text, type, name) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
