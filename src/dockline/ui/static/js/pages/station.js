// A station: the model's answer now (and why, when the API explains), its bikes, its served
// predictions with the outcome once the label is known, and the decisions that moved its bikes.
import { ApiError, api, badge, fmt, h, legendItem, s, table, timeChart } from "../lib.js";

const BIKES = "#0072b2", DOCKS = "#56b4e9", PRED = "#e69f00", HIT = "#d55e00", MISS = "#009e73";

export async function render(view, id) {
  if (!id) { location.hash = "#/map"; return; }
  const params = new URLSearchParams(location.search);
  const hours = params.get("hours") ?? "24";
  const [all, history] = await Promise.all([
    api("/v1/stations"),
    api(`/v1/stations/${encodeURIComponent(id)}/history?hours=${encodeURIComponent(hours)}`),
  ]);
  const info = all.stations.find((x) => x.station_id === id) ?? { station_id: id };
  view.append(
    h("p", {}, h("a", { href: "#/map" }, "← all stations")),
    h("h1", {}, info.name ?? id),
    h("p", { class: "sub" }, h("span", { class: "mono" }, id), ` · capacity ${fmt.n(info.capacity)}`,
      info.status ? ` · ${info.status.bikes} bikes, ${info.status.docks} docks at ${fmt.time(info.status.at)}` : ""),
  );
  const grid = h("div", { class: "grid two" });
  const now = h("div", { class: "card", id: "prediction-now", "aria-live": "polite" }, h("p", { class: "loading" }, "Asking the model…"));
  grid.append(h("div", { class: "card" }, h("h2", { class: "flush" }, `Last ${hours} h`), historyChart(history), chartLegend()), now);
  view.append(grid);
  await predictNow(now, id);
  view.append(h("h2", {}, "Served predictions"), h("div", { id: "predictions" }, predictionTable(history)));
  view.append(h("h2", {}, "Decisions that moved bikes here"), decisionTable(history, id));
}

async function predictNow(card, id) {
  let answer;
  try {
    answer = await api("/v1/predict?explain=true", { entity: id });
  } catch (err) {
    const words = err instanceof ApiError ? `${err.message} (${err.reason})` : err.message;
    card.replaceChildren(h("h2", { class: "flush" }, "Prediction now"), h("p", { class: "error", "data-reason": err.reason ?? "" }, words));
    return;
  }
  const flagged = answer.label;
  card.replaceChildren(
    h("h2", { class: "flush" }, "Prediction now"),
    h("div", { class: "kpis" },
      h("div", { class: "kpi" }, h("div", { class: "v", id: "probability", "data-probability": answer.probability }, fmt.p(answer.probability)), h("div", { class: "k" }, "probability of empty next hour")),
      h("div", { class: "kpi" }, h("div", { class: "v" }, fmt.p(answer.threshold)), h("div", { class: "k" }, "threshold"))),
    h("p", {}, flagged ? badge("flagged at risk", "bad") : badge("not flagged", "good"), " ",
      answer.status === "ok" ? "" : badge(`${answer.status}: ${answer.reason}`, "warn")),
    h("p", { class: "muted" }, `${answer.model.name} v${answer.model.version} (${answer.model.role}), bundle `,
      h("span", { class: "mono" }, answer.model.bundle_id), `; features as of ${fmt.time(answer.as_of)}`),
    h("p", {}, h("a", { href: `#/lineage/${encodeURIComponent(answer.request_id)}`, id: "trace-link" }, `Trace this prediction (${answer.request_id})`)),
    contributions(answer),
  );
}

function contributions(answer) {
  if (!answer.contributions || typeof answer.contributions !== "object") {
    return h("p", { class: "muted", id: "no-contributions" }, "This deployment does not explain its predictions (no contributions in the answer).");
  }
  const top = Object.entries(answer.contributions)
    .filter(([, v]) => typeof v === "number")
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1])).slice(0, 8);
  // names (the longest plan feature is ~28 characters at ~7.5 px) | bar ← mid → bar, value text
  const W = 580, row = 24, left = 236, room = 48;
  const mid = left + (W - left) / 2;
  const max = Math.max(...top.map(([, v]) => Math.abs(v)), 1e-9);
  const unit = ((W - left) / 2 - room) / max;
  const svg = s("svg", { class: "chart bars", viewBox: `0 0 ${W} ${top.length * row + 10}`, role: "img", "aria-label": "Top contributions to the model's raw score" },
    s("title", {}, "Top feature contributions (raw score units)"));
  top.forEach(([name, v], k) => {
    const y = 4 + k * row;
    const words = `${name}: ${v >= 0 ? "+" : ""}${v.toFixed(3)} (${v >= 0 ? "towards" : "away from"} empty)`;
    svg.append(s("g", {}, s("title", {}, words),
      s("text", { x: left - 8, y: y + 15, "text-anchor": "end", "font-size": 12 }, name),
      s("rect", { class: v >= 0 ? "pos" : "neg", x: v >= 0 ? mid : mid + v * unit, y: y + 3, width: Math.max(1, Math.abs(v) * unit), height: row - 8 }),
      s("text", { x: v >= 0 ? mid + v * unit + 4 : mid + v * unit - 4, y: y + 15, "font-size": 11, "text-anchor": v >= 0 ? "start" : "end" }, (v >= 0 ? "+" : "") + v.toFixed(2))));
  });
  svg.append(s("line", { x1: mid, x2: mid, y1: 0, y2: top.length * row + 8, stroke: "#1b1f24" }));
  return h("div", { id: "contributions" },
    h("h3", {}, "Why: top contributions"),
    h("p", { class: "muted" }, `base value ${fmt.num(answer.base_value)} + contributions = raw score ${fmt.num(answer.raw_score)}; vermillion pushes towards empty, blue away.`),
    svg,
    table([{ label: "Feature", value: (r) => r[0] }, { label: "Contribution", num: true, value: (r) => r[1].toFixed(4) }], top, { wrap: false }));
}

function ms(iso) { return new Date(iso).getTime(); }

function historyChart(history) {
  const cap = Math.max(1, ...history.status.map((r) => r.capacity ?? r.bikes + r.docks));
  const preds = history.predictions;
  const series = [
    { label: "bikes available", kind: "step", colour: BIKES, points: history.status.map((r) => [ms(r.t), r.bikes]) },
    { label: "docks available", kind: "step", colour: DOCKS, dash: "5 3", points: history.status.map((r) => [ms(r.t), r.docks]) },
    {
      label: "served predictions: probability of empty (right axis)", kind: "dots", colour: PRED, axis: "right",
      points: preds.map((p) => [ms(p.t), p.probability, `${fmt.time(p.t)}: p=${fmt.p(p.probability)}, ${p.outcome === null ? "outcome not known yet" : p.outcome ? "it did go empty" : "it did not go empty"}`, p.outcome]),
      shape: (p) => (p[3] === null ? "circle" : p[3] ? "triangle" : "square"),
      colourOf: (p) => (p[3] === null ? PRED : p[3] ? HIT : MISS),
    },
  ];
  const marks = history.decisions.map((d) => ({
    t: ms(d.cycle_time), colour: "#cc79a7", label: "truck",
    title: d.actions.map((a) => `${a.truck_id}: ${a.bikes} bikes ${a.from_station} → ${a.to_station}`).join("; "),
  }));
  if (!series[0].points.length && !preds.length) return h("p", { class: "empty" }, "No status reports or predictions in this period.");
  return timeChart({
    title: `Bikes and predictions of station ${history.station_id}`,
    desc: `${history.status.length} status reports and ${preds.length} served predictions from ${fmt.time(history.start)} to ${fmt.time(history.end)}`,
    series, marks, left: { min: 0, max: cap, label: "bikes / docks" }, right: { min: 0, max: 1, label: "p(empty)" },
  });
}

function chartLegend() {
  return h("div", { class: "legend" },
    legendItem("bikes", BIKES, "line"), legendItem("docks", DOCKS, "dash"),
    legendItem("prediction, outcome not known yet", PRED, "circle"),
    legendItem("went empty", HIT, "triangle"), legendItem("did not", MISS, "square"),
    legendItem("truck move", "#cc79a7", "dash"));
}

function predictionTable(history) {
  const rows = [...history.predictions].reverse();
  if (!rows.length) return h("p", { class: "empty" }, "No served prediction in this period.");
  return table([
    { label: "Logged", value: (r) => fmt.time(r.t) },
    { label: "p(empty)", num: true, value: (r) => fmt.p(r.probability) },
    { label: "Flag", value: (r) => (r.label ? badge("at risk", "bad") : badge("ok", "good")) },
    { label: "Outcome", value: (r) => (r.outcome === null ? badge("not known yet", "muted") : r.outcome ? badge("went empty", "bad") : badge("did not", "good")) },
    { label: "Model", value: (r) => `v${r.model_version} (${r.role})` },
    { label: "Lineage", value: (r) => h("a", { href: `#/lineage/${encodeURIComponent(r.request_id)}` }, "trace") },
  ], rows);
}

function decisionTable(history, id) {
  const rows = history.decisions.flatMap((d) => d.actions.map((a) => ({ d, a })));
  if (!rows.length) return h("p", { class: "empty" }, "No truck moved bikes to or from this station in this period.");
  return table([
    { label: "Cycle", value: (r) => fmt.time(r.d.cycle_time) },
    { label: "Policy", value: (r) => r.d.policy },
    { label: "Move", value: (r) => (r.a.to_station === id ? `+${r.a.bikes} bikes from ${r.a.from_station}` : `−${r.a.bikes} bikes to ${r.a.to_station}`) },
    { label: "Truck", value: (r) => r.a.truck_id },
    { label: "ETA", value: (r) => fmt.time(r.a.eta) },
    { label: "Reasons", value: (r) => r.d.reasons.join(", ") },
  ], rows);
}
