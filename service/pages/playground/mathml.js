// MathML from the LaTeX the service's /v1/explain writes (service/endpoints/explain.py and the
// activations' entries): fractions, sub- and superscripts, primes, hats, \mathrm names, Greek
// letters and a few operators. Browsers draw MathML natively: no script typesets it.
import { MATHML } from "./util.js";

const SYMBOLS = {
  partial: ["mi", "∂"], to: ["mo", "→"], cdot: ["mo", "⋅"], times: ["mo", "×"], odot: ["mo", "⊙"],
  top: ["mi", "⊤"], dots: ["mi", "…"], ldots: ["mi", "…"], sigma: ["mi", "σ"], delta: ["mi", "δ"],
  alpha: ["mi", "α"], beta: ["mi", "β"], eta: ["mi", "η"], lambda: ["mi", "λ"], sum: ["mo", "∑"],
};
const FUNCTIONS = new Set(["tanh", "sin", "cos", "exp", "log"]);
const SPACES = { ",": "0.1667em", ";": "0.2778em", quad: "1em", qquad: "2em", " ": "0.25em" };

function node(tag, text, attrs = {}) {
  const n = document.createElementNS(MATHML, tag);
  if (text !== undefined) n.textContent = text;
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  return n;
}

function wrap(tag, children, attrs = {}) {
  const n = node(tag, undefined, attrs);
  for (const c of children) n.append(c);
  return n;
}

const row = (children) => (children.length === 1 ? children[0] : wrap("mrow", children));

/** Split LaTeX into tokens: commands, braces, scripts, numbers, single characters. */
function tokenize(tex) {
  const tokens = [];
  const re = /\\([A-Za-z]+|.)|(\d+(?:\.\d+)?)|(\s+)|(.)/gsy;
  for (let m = re.exec(tex); m; m = re.exec(tex)) {
    if (m[1] !== undefined) tokens.push({ kind: "command", value: m[1] });
    else if (m[2] !== undefined) tokens.push({ kind: "number", value: m[2] });
    else if (m[4] !== undefined) tokens.push({ kind: "char", value: m[4] });
  }
  return tokens;
}

class Parser {
  constructor(tex) {
    this.tex = tex;
    this.tokens = tokenize(tex);
    this.at = 0;
  }

  peek() {
    return this.tokens[this.at];
  }

  next() {
    return this.tokens[this.at++];
  }

  /** Atoms up to a closing brace (or the end). */
  list() {
    const items = [];
    while (this.peek() && !(this.peek().kind === "char" && this.peek().value === "}")) items.push(this.scripted());
    return items;
  }

  group() {
    const t = this.next();
    if (!t) return node("mrow");
    if (t.kind === "char" && t.value === "{") {
      const items = this.list();
      this.next(); // the closing brace
      return row(items);
    }
    return this.atom(t);
  }

  /** The raw text of a {...} group, for \mathrm and \text. */
  text() {
    const t = this.next();
    if (!t || !(t.kind === "char" && t.value === "{")) return t ? t.value : "";
    let depth = 1;
    let out = "";
    for (let u = this.next(); u; u = this.next()) {
      if (u.kind === "char" && u.value === "{") depth += 1;
      if (u.kind === "char" && u.value === "}" && --depth === 0) break;
      out += u.kind === "command" ? (u.value.length === 1 ? u.value : `\\${u.value}`) : u.value;
    }
    return out;
  }

  scripted() {
    let base = this.atom(this.next());
    let sub = null;
    let sup = null;
    for (let t = this.peek(); t && t.kind === "char" && "_^'".includes(t.value); t = this.peek()) {
      this.next();
      if (t.value === "_") sub = this.group();
      else if (t.value === "^") sup = this.group();
      else sup = sup ? row([sup, node("mo", "′")]) : node("mo", "′");
    }
    if (sub && sup) base = wrap("msubsup", [base, sub, sup]);
    else if (sub) base = wrap("msub", [base, sub]);
    else if (sup) base = wrap("msup", [base, sup]);
    return base;
  }

  atom(t) {
    if (t.kind === "number") return node("mn", t.value);
    if (t.kind === "char") {
      if (t.value === "{") {
        const items = this.list();
        this.next();
        return row(items);
      }
      if (/[A-Za-z]/.test(t.value)) return node("mi", t.value);
      return node("mo", t.value === "-" ? "−" : t.value);
    }
    const name = t.value;
    if (name === "frac" || name === "tfrac" || name === "dfrac") return wrap("mfrac", [this.group(), this.group()]);
    if (name === "hat") return wrap("mover", [this.group(), node("mo", "^")], { accent: "true" });
    if (name === "mathrm" || name === "operatorname") return node("mi", this.text(), { mathvariant: "normal" });
    if (name === "text") return node("mtext", this.text());
    if (name in SPACES) return node("mspace", undefined, { width: SPACES[name] });
    if (name in SYMBOLS) return node(...SYMBOLS[name]);
    if (FUNCTIONS.has(name)) return node("mi", name, { mathvariant: "normal" });
    if (name.length === 1) return node("mo", name); // an escaped character: \_ \{ \}
    return node("mtext", `\\${name}`); // outside the subset: shown as written
  }
}

/** A <math> element for a LaTeX formula, with the source kept as its annotation. */
export function mathml(tex, display = "block") {
  const parser = new Parser(tex);
  const items = [];
  while (parser.peek()) {
    items.push(...parser.list());
    if (parser.peek()) parser.next(); // a stray closing brace
  }
  const semantics = wrap("semantics", [row(items), node("annotation", tex, { encoding: "application/x-tex" })]);
  return wrap("math", [semantics], { display });
}
