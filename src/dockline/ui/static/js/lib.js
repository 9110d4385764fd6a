// Shared helpers: the JSON API, DOM and SVG builders, the palette and number formats.

/** An API error carrying the server's machine-readable `reason`. */
export class ApiError extends Error {
  constructor(status, reason, message) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

/** GET (or POST with `body`) a JSON endpoint of this deployment (same origin only). */
export async function api(path, body) {
  const init = body === undefined
    ? { headers: { Accept: "application/json" } }
    : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    throw new ApiError(response.status, data?.reason ?? "http_error", data?.message ?? response.statusText);
  }
  return data;
}

/** `h("p", {class: "x"}, "text", child)`: an element; attributes starting with `on` are handlers. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  return fill(el, attrs, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** The same for SVG elements. */
export function s(tag, attrs = {}, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Viridis (perceptually uniform, readable in every common colour-vision deficiency and in grey).
const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];

/** Risk colour: viridis reversed, so high risk is dark purple and low risk light yellow. */
export function riskColour(p) {
  const x = Math.min(1, Math.max(0, 1 - p)) * (VIRIDIS.length - 1);
  const i = Math.floor(x);
  const j = Math.min(VIRIDIS.length - 1, i + 1);
  return mix(VIRIDIS[i], VIRIDIS[j], x - i);
}

function mix(a, b, t) {
  const pa = [1, 3, 5].map((k) => parseInt(a.slice(k, k + 2), 16));
  const pb = [1, 3, 5].map((k) => parseInt(b.slice(k, k + 2), 16));
  return "#" + pa.map((v, k) => Math.round(v + (pb[k] - v) * t).toString(16).padStart(2, "0")).join("");
}

/** Okabe-Ito: eight colours distinguishable with any common colour-vision deficiency. */
export const OKABE_ITO = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];

export const fmt = {
  p: (x) => (x === null || x === undefined ? "–" : x.toFixed(3)),
  pct: (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`),
  n: (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US")),
  num: (x, d = 3) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d)),
  time: (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 16) + "Z" : "–"),
  short: (iso) => (iso ? new Date(iso).toISOString().slice(11, 16) : "–"),
  us: (us) => new Date(us / 1000).toISOString().replace("T", " ").slice(0, 16) + "Z",
};

/** A status badge: the word and a shape, not colour alone. */
export function badge(text, tone) {
  const icon = { good: "✓", warn: "!", bad: "✕", info: "•", muted: "–" }[tone] ?? "";
  return h("span", { class: `badge ${tone}` }, h("span", { "aria-hidden": "true" }, icon), text);
}

export const toneOf = {
  healthy: "good", degraded: "warn", unhealthy: "bad", FRESH: "good", STALE: "bad",
};

/** A table from column specs `[{label, value: row => node|text, num?}]`. */
export function table(columns, rows, { caption, wrap = true } = {}) {
  const t = h("table", {},
    caption ? h("caption", { class: "muted caption" }, caption) : null,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.value(row)))))),
  );
  return wrap ? h("div", { class: "table-wrap" }, t) : t;
}

/** Linear scale `[d0, d1] -> [r0, r1]`. */
export function scale(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  const f = (x) => r0 + ((x - d0) / span) * (r1 - r0);
  f.ticks = (n = 5) => Array.from({ length: n + 1 }, (_, k) => d0 + ((d1 - d0) * k) / n);
  return f;
}

/**
 * A time-series chart: `series` = [{label, points: [[ms, y]], colour, kind: "line"|"step"|"dots"|"bars", axis: "left"|"right", shape?}].
 * Returns an SVG with a <title>, a <desc> and one labelled group per series.
 */
export function timeChart({ title, desc, series, left, right, width = 720, height = 280, marks = [] }) {
  const m = { l: 52, r: right ? 56 : 16, t: 28, b: 34 };
  const all = series.flatMap((x) => x.points.map((p) => p[0])).concat(marks.map((k) => k.t));
  // half a step of padding either side (bars stay inside); a single instant gets ± 5 minutes
  const sorted = [...new Set(all)].sort((a, b) => a - b);
  const step = sorted.length > 1 ? Math.min(...sorted.slice(1).map((v, k) => v - sorted[k])) : 6e5;
  const pad = series.some((x) => x.kind === "bars") || sorted.length < 2 ? step / 2 : 0;
  const t0 = sorted[0] - pad, t1 = sorted.at(-1) + pad;
  const x = scale(t0, t1, m.l, width - m.r);
  const tick = (axis) => axis.fmt ?? ((v) => (axis.max - axis.min < 10 ? v.toFixed(1) : String(Math.round(v))));
  const yl = scale(left.min, left.max, height - m.b, m.t);
  const yr = right ? scale(right.min, right.max, height - m.b, m.t) : null;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title },
    s("title", {}, title), s("desc", {}, desc ?? title));
  const axes = s("g", { "aria-hidden": "true", "font-size": 12, fill: "#57606a" });
  for (const v of yl.ticks(4)) {
    axes.append(s("line", { x1: m.l, x2: width - m.r, y1: yl(v), y2: yl(v), stroke: "#e6eaef" }));
    axes.append(s("text", { x: m.l - 6, y: yl(v) + 4, "text-anchor": "end" }, tick(left)(v)));
  }
  if (yr) for (const v of yr.ticks(4)) axes.append(s("text", { x: width - m.r + 6, y: yr(v) + 4 }, right.fmt ? right.fmt(v) : v.toFixed(2)));
  const span = t1 - t0;
  for (let k = 0; k <= 6; k++) {
    const t = t0 + (span * k) / 6;
    const iso = new Date(t).toISOString();
    const label = span > 2 * 864e5 ? iso.slice(5, 16).replace("T", " ") : span < 9e5 ? iso.slice(11, 19) : iso.slice(11, 16);
    axes.append(s("text", { x: x(t), y: height - m.b + 18, "text-anchor": "middle" }, label));
  }
  axes.append(s("text", { x: 6, y: 12 }, left.label ?? ""));
  if (right) axes.append(s("text", { x: width - 6, y: 12, "text-anchor": "end" }, right.label ?? ""));
  svg.append(axes);
  for (const mark of marks) {
    const mx = x(mark.t), nearEnd = mx > width - m.r - 60;
    svg.append(s("g", { class: "mark" },
      s("title", {}, mark.title),
      s("line", { x1: mx, x2: mx, y1: m.t, y2: height - m.b, stroke: mark.colour ?? "#000", "stroke-dasharray": "4 3", "stroke-width": 1.5 }),
      s("text", { x: nearEnd ? mx - 4 : mx + 4, y: m.t + 16, "font-size": 12, fill: mark.colour ?? "#000", "text-anchor": nearEnd ? "end" : "start", stroke: "#fff", "stroke-width": 3, "paint-order": "stroke" }, mark.label ?? "")));
  }
  for (const line of series) {
    const y = line.axis === "right" ? yr : yl;
    const g = s("g", { "aria-label": line.label, role: "group" }, s("title", {}, line.label));
    const pts = line.points;
    if (line.kind === "dots") {
      for (const p of pts) g.append(shape(line.shape?.(p) ?? "circle", x(p[0]), y(p[1]), line.colourOf?.(p) ?? line.colour, p[2]));
    } else if (line.kind === "bars") {
      const w = Math.min(28, Math.max(2, (x(t0 + step) - x(t0)) * 0.7));
      for (const p of pts) g.append(s("rect", { x: x(p[0]) - w / 2, y: y(p[1]), width: w, height: Math.max(0, y(0) - y(p[1])), fill: line.colour, opacity: 0.75 }));
    } else if (pts.length) {
      let d = `M${x(pts[0][0])},${y(pts[0][1])}`;
      for (let k = 1; k < pts.length; k++) {
        d += line.kind === "step" ? `H${x(pts[k][0])}V${y(pts[k][1])}` : `L${x(pts[k][0])},${y(pts[k][1])}`;
      }
      g.append(s("path", { d, fill: "none", stroke: line.colour, "stroke-width": 2, "stroke-dasharray": line.dash ?? null }));
    }
    svg.append(g);
  }
  return svg;
}

function shape(kind, cx, cy, colour, tip) {
  const node = kind === "triangle"
    ? s("path", { d: `M${cx},${cy - 6}L${cx + 6},${cy + 5}L${cx - 6},${cy + 5}Z`, fill: colour, stroke: "#1b1f24" })
    : kind === "square"
      ? s("rect", { x: cx - 4.5, y: cy - 4.5, width: 9, height: 9, fill: colour, stroke: "#1b1f24" })
      : s("circle", { cx, cy, r: 4.5, fill: "#fff", stroke: colour, "stroke-width": 2 });
  if (tip) node.append(s("title", {}, tip));
  return node;
}

/** A legend entry: a swatch shape and its words. */
export function legendItem(label, colour, kind = "square") {
  const sw = s("svg", { width: 16, height: 14, "aria-hidden": "true" },
    kind === "line" ? s("line", { x1: 0, x2: 16, y1: 7, y2: 7, stroke: colour, "stroke-width": 3 })
      : kind === "dash" ? s("line", { x1: 0, x2: 16, y1: 7, y2: 7, stroke: colour, "stroke-width": 2, "stroke-dasharray": "4 3" })
        : shape(kind, 8, 7, colour));
  return h("span", {}, sw, " ", label);
}
