// Drift per feature: each feature's score against its threshold (the monitor's effect sizes).
import { api, badge, fmt, h, s, table } from "../lib.js";

export async function render(view) {
  const drift = await api("/v1/monitoring/drift");
  view.append(h("h1", {}, "Drift"));
  const features = Object.entries(drift.features ?? {}).map(([name, f]) => ({ name, ...f }));
  if (drift.prediction) features.push({ name: "prediction", ...drift.prediction });
  if (!drift.bundle_id) {
    view.append(h("p", { class: "empty" }, "No prediction logged in the drift window; nothing to compare yet."));
    return;
  }
  view.append(
    h("p", { class: "sub" }, `${drift.model_name} v${drift.model_version} (bundle `, h("span", { class: "mono" }, drift.bundle_id),
      `): ${fmt.n(drift.rows)} rows, ${fmt.time(drift.window_start)} – ${fmt.time(drift.window_end)}`),
    h("p", {}, "Dataset verdict: ", drift.drift ? badge("drift", "bad") : badge("no drift", "good"),
      ` ${fmt.pct(drift.share)} of features drifted over ${fmt.n(drift.dataset_window?.rows)} rows since ${fmt.time(drift.dataset_window?.start)}.`),
  );
  for (const f of features) f.severity = severity(f);
  features.sort((a, b) => b.severity - a.severity || a.name.localeCompare(b.name));
  view.append(h("div", { class: "card" },
    h("h2", { class: "flush" }, "Severity per feature (1 = the method's threshold; over 1 = drift)"),
    h("p", { class: "muted" }, "Effect sizes (PSI, W/σ, JS) as score ÷ threshold; the small-sample χ² test as log p ÷ log α (over 1 exactly when p < α)."),
    bars(features)));
  view.append(h("h2", {}, "Per feature"), table([
    { label: "Feature", value: (f) => f.name },
    { label: "Verdict", value: (f) => (f.drift ? badge("drift", "bad") : badge("ok", "good")) },
    { label: "Method", value: (f) => f.method },
    { label: "Score", num: true, value: (f) => fmt.num(f.score, 4) },
    { label: "Threshold", num: true, value: (f) => fmt.num(f.threshold, 3) },
    { label: "n", num: true, value: (f) => fmt.n(f.n) },
    { label: "PSI", num: true, value: (f) => fmt.num(f.psi) },
    { label: "W/σ", num: true, value: (f) => fmt.num(f.wasserstein) },
    { label: "JS", num: true, value: (f) => fmt.num(f.jensenshannon) },
    { label: "Nulls (ref → now)", num: true, value: (f) => `${fmt.pct(f.reference_null_fraction)} → ${fmt.pct(f.null_fraction)}` },
  ], features));
}

/** How far past its threshold a feature is: effect sizes grow with drift, a p-value shrinks. */
function severity(f) {
  // orders of magnitude: log p / log α is over 1 exactly when p < α
  if (f.method === "chisquare") return Math.log10(Math.max(f.score, 1e-300)) / Math.log10(f.threshold);
  return f.score / (f.threshold || 1);
}

function bars(features) {
  const W = 880, row = 22, left = 230, right = 110;
  const max = Math.min(4, Math.max(1.5, ...features.map((f) => f.severity)));
  const x = (v) => left + (Math.min(v, max) / max) * (W - left - right);
  const height = features.length * row + 28;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": `Drift score over threshold for ${features.length} features; the table below lists them` },
    s("title", {}, "Drift score divided by its threshold, per feature"));
  features.forEach((f, k) => {
    const ratio = f.severity, y = 4 + k * row;
    const words = `${f.name}: ${f.method} ${fmt.num(f.score, 4)} vs threshold ${fmt.num(f.threshold, 3)}${f.drift ? " — drift" : ""}`;
    svg.append(s("g", { class: "feature", "data-feature": f.name }, s("title", {}, words),
      s("text", { x: left - 8, y: y + 14, "text-anchor": "end", "font-size": 12 }, f.name),
      s("rect", { x: left, y: y + 3, width: Math.max(1, x(ratio) - left), height: row - 7, fill: f.drift ? "#d55e00" : "#0072b2", "fill-opacity": f.drift ? 1 : 0.7 }),
      s("text", { x: x(ratio) + 4, y: y + 14, "font-size": 11, fill: "#1b1f24" }, `${ratio > 999 ? ">999" : ratio.toFixed(2)}${ratio > max ? " ▸" : ""}${f.drift ? " ✕ drift" : ""}`)));
  });
  svg.append(s("line", { x1: x(1), x2: x(1), y1: 0, y2: height - 22, stroke: "#1b1f24", "stroke-dasharray": "4 3" }),
    s("text", { x: x(1), y: height - 6, "text-anchor": "middle", "font-size": 11 }, "threshold"));
  return svg;
}
