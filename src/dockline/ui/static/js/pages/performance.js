// Live performance: per bundle and window, PR-AUC etc. with 95 % intervals once labels land,
// the label-free estimate before, and the bundle's test metric as the reference line.
import { api, fmt, h, legendItem, s, table } from "../lib.js";

const METRICS = ["pr_auc", "brier", "ece", "precision", "recall"];

export async function render(view) {
  const perf = await api("/v1/monitoring/performance");
  view.append(h("h1", {}, "Live performance"),
    h("p", { class: "sub" }, `${fmt.n(perf.rows)} served model predictions, ${fmt.time(perf.start)} – ${fmt.time(perf.end)}; labels join once known.`));
  if (!perf.windows.length) { view.append(h("p", { class: "empty" }, "No model prediction logged in the period.")); return; }
  const labelled = perf.windows.reduce((n, w) => n + w.labelled, 0);
  const total = perf.windows.reduce((n, w) => n + w.predictions, 0);
  view.append(h("div", { class: "kpis" },
    h("div", { class: "kpi" }, h("div", { class: "v" }, fmt.n(total)), h("div", { class: "k" }, "predictions")),
    h("div", { class: "kpi" }, h("div", { class: "v" }, fmt.n(labelled)), h("div", { class: "k" }, "with a known label")),
    h("div", { class: "kpi" }, h("div", { class: "v" }, fmt.n(perf.windows.length)), h("div", { class: "k" }, "windows"))));
  const grid = h("div", { class: "grid cards" });
  for (const metric of ["pr_auc", "brier", "ece"]) grid.append(h("div", { class: "card" }, h("h2", { class: "flush" }, metric), metricChart(perf, metric)));
  view.append(grid, h("div", { class: "legend" }, legendItem("live, 95 % interval", "#0072b2", "square"), legendItem("label-free estimate", "#e69f00", "circle"), legendItem("test metric of the bundle", "#1b1f24", "dash")));
  const rows = perf.windows.flatMap((w) => METRICS.map((m) => ({ w, m })));
  view.append(h("h2", {}, "Per window"), table([
    { label: "Bundle", value: (r) => h("a", { class: "mono", href: `#/lineage/${encodeURIComponent(r.w.bundle_id)}` }, r.w.bundle_id) },
    { label: "v", num: true, value: (r) => r.w.model_version },
    { label: "Window", value: (r) => fmt.us(r.w.window_start_us) },
    { label: "n", num: true, value: (r) => fmt.n(r.w.predictions) },
    { label: "Labelled", num: true, value: (r) => fmt.n(r.w.labelled) },
    { label: "Metric", value: (r) => r.m },
    { label: "Live [95 % CI]", num: true, value: (r) => { const v = r.w.metrics[r.m]; return v && v.value !== null ? `${fmt.num(v.value)} [${fmt.num(v.low)}, ${fmt.num(v.high)}]` : "–"; } },
    { label: "Estimate", num: true, value: (r) => fmt.num(r.w.estimate[r.m]) },
    { label: "Test", num: true, value: (r) => fmt.num(perf.reference[r.w.bundle_id]?.[r.m]) },
  ], rows));
}

function metricChart(perf, metric) {
  const W = 360, H = 200, m = { l: 44, r: 10, t: 10, b: 28 };
  const ws = perf.windows;
  const t0 = Math.min(...ws.map((w) => w.window_start_us)), t1 = Math.max(...ws.map((w) => w.window_start_us));
  const inset = 16;  // keep the first and last window's marks inside the frame
  const x = (t) => m.l + inset + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (W - m.l - m.r - 2 * inset);
  const seen = ws.flatMap((w) => [w.metrics[metric]?.high, w.metrics[metric]?.value, w.estimate[metric]])
    .concat(Object.values(perf.reference).map((r) => r[metric])).filter((v) => typeof v === "number");
  const top = Math.min(1, Math.max(0.05, ...seen) * 1.15);
  const y = (v) => H - m.b - (v / top) * (H - m.t - m.b);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${metric} per window: live with interval, estimate and test reference` },
    s("title", {}, `${metric} per window`));
  for (const v of [0, 0.25, 0.5, 0.75, 1].map((k) => k * top)) {
    svg.append(s("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), stroke: "#e6eaef" }),
      s("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#57606a" }, v.toFixed(2)));
  }
  svg.append(s("text", { x: m.l, y: H - 8, "font-size": 10, fill: "#57606a" }, fmt.us(t0)),
    s("text", { x: W - m.r, y: H - 8, "font-size": 10, fill: "#57606a", "text-anchor": "end" }, fmt.us(t1)));
  for (const id of new Set(ws.map((w) => w.bundle_id))) {
    const ref = perf.reference[id]?.[metric];
    if (ref !== undefined) svg.append(s("line", { x1: m.l, x2: W - m.r, y1: y(ref), y2: y(ref), stroke: "#1b1f24", "stroke-dasharray": "5 4" }, s("title", {}, `test ${metric} of ${id}: ${fmt.num(ref)}`)));
  }
  for (const w of ws) {
    const v = w.metrics[metric], est = w.estimate[metric], cx = x(w.window_start_us);
    if (v && v.value !== null) {
      const words = `${fmt.us(w.window_start_us)}: live ${metric} ${fmt.num(v.value)} [${fmt.num(v.low)}, ${fmt.num(v.high)}] on ${w.labelled} labels`;
      svg.append(s("g", {}, s("title", {}, words),
        v.low !== null ? s("line", { x1: cx, x2: cx, y1: y(v.low), y2: y(v.high), stroke: "#0072b2", "stroke-width": 2 }) : null,
        s("rect", { x: cx - 4, y: y(v.value) - 4, width: 8, height: 8, fill: "#0072b2" })));
    }
    if (est !== null && est !== undefined) {
      svg.append(s("circle", { cx: cx + 6, cy: y(est), r: 4, fill: "#fff", stroke: "#e69f00", "stroke-width": 2 }, s("title", {}, `${fmt.us(w.window_start_us)}: estimated ${metric} ${fmt.num(est)}`)));
    }
  }
  return svg;
}
