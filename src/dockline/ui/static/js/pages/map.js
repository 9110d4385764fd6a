// The station map: positions from station information, coloured by the latest prediction's
// risk (viridis), the latest decision's truck moves as arrows; a table says the same in words.
import { api, badge, fmt, h, legendItem, riskColour, s, table } from "../lib.js";

const W = 880, H = 620, PAD = 36;

export async function render(view) {
  const [data, log] = await Promise.all([api("/v1/stations"), api("/v1/decisions?limit=1")]);
  const stations = data.stations.filter((x) => x.lat !== null && x.lon !== null);
  const decision = log.decisions.at(-1) ?? null;
  const scored = stations.filter((x) => x.prediction);
  const atRisk = scored.filter((x) => x.prediction.label);
  view.append(
    h("h1", {}, "Stations"),
    h("p", { class: "sub" }, `Risk of ${"empty"} in the next hour, from each station's latest served prediction. Data as of ${fmt.time(data.as_of)}.`),
    h("div", { class: "kpis" },
      kpi(fmt.n(data.stations.length), "stations"),
      kpi(fmt.n(scored.length), "with a prediction"),
      kpi(fmt.n(atRisk.length), "flagged at risk"),
      kpi(decision ? fmt.n(decision.actions.length) : "–", "truck moves in the last decision")),
  );
  const grid = h("div", { class: "grid two" });
  grid.append(h("div", { class: "card map" }, drawMap(stations, decision), legend()),
    h("div", {}, decisionCard(decision, stations)));
  view.append(grid);
  const ordered = [...data.stations].sort((a, b) => (b.prediction?.probability ?? -1) - (a.prediction?.probability ?? -1));
  view.append(h("h2", { id: "station-table" }, "All stations (the map as a table)"),
    table([
      { label: "Station", value: (r) => h("a", { href: `#/station/${encodeURIComponent(r.station_id)}` }, r.name ?? r.station_id) },
      { label: "Id", value: (r) => h("span", { class: "mono" }, r.station_id) },
      { label: "Risk", num: true, value: (r) => (r.prediction ? fmt.p(r.prediction.probability) : "–") },
      { label: "Flag", value: (r) => (r.prediction ? (r.prediction.label ? badge("at risk", "bad") : badge("ok", "good")) : badge("no prediction", "muted")) },
      { label: "Bikes", num: true, value: (r) => (r.status ? fmt.n(r.status.bikes) : "–") },
      { label: "Docks", num: true, value: (r) => (r.status ? fmt.n(r.status.docks) : "–") },
      { label: "Capacity", num: true, value: (r) => fmt.n(r.capacity) },
      { label: "Reported", value: (r) => (r.status ? fmt.time(r.status.at) : "–") },
    ], ordered));
}

function kpi(v, k) {
  return h("div", { class: "kpi" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k));
}

function project(stations) {
  const lats = stations.map((x) => x.lat), lons = stations.map((x) => x.lon);
  const lat0 = Math.min(...lats), lat1 = Math.max(...lats), lon0 = Math.min(...lons), lon1 = Math.max(...lons);
  const k = Math.cos(((lat0 + lat1) / 2) * Math.PI / 180);  // equirectangular: a km is a km both ways
  const spanX = Math.max((lon1 - lon0) * k, 1e-6), spanY = Math.max(lat1 - lat0, 1e-6);
  const unit = Math.min((W - 2 * PAD) / spanX, (H - 2 * PAD) / spanY);
  const ox = (W - spanX * unit) / 2, oy = (H - spanY * unit) / 2;
  return (lat, lon) => [ox + (lon - lon0) * k * unit, H - oy - (lat - lat0) * unit];
}

function drawMap(stations, decision) {
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "group", "aria-label": "Station map: one focusable marker per station; press Enter to open a station", id: "station-map" },
    s("title", {}, "Station map coloured by the risk of running empty"),
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0L10,5L0,10z", fill: "#1b1f24" }))));
  if (!stations.length) return svg;
  const xy = project(stations);
  const byId = new Map(stations.map((x) => [x.station_id, x]));
  const grid = s("g", { "aria-hidden": "true", stroke: "#eef1f4" });
  for (let gx = 0; gx <= W; gx += 55) grid.append(s("line", { x1: gx, x2: gx, y1: 0, y2: H }));
  for (let gy = 0; gy <= H; gy += 55) grid.append(s("line", { x1: 0, x2: W, y1: gy, y2: gy }));
  svg.append(grid);
  const moves = s("g", { class: "moves", role: "list", "aria-label": "Truck moves of the latest decision" });
  for (const a of decision?.actions ?? []) {
    const from = byId.get(a.from_station), to = byId.get(a.to_station);
    if (!from || !to) continue;
    const [x1, y1] = xy(from.lat, from.lon), [x2, y2] = xy(to.lat, to.lon);
    const len = Math.hypot(x2 - x1, y2 - y1) || 1, ux = (x2 - x1) / len, uy = (y2 - y1) / len;
    const words = `Truck ${a.truck_id} moves ${a.bikes} bikes from ${from.name ?? a.from_station} to ${to.name ?? a.to_station}, arriving ${fmt.time(a.eta)}`;
    moves.append(s("g", { class: "move", role: "listitem", "aria-label": words },
      s("title", {}, words),
      s("line", { x1: x1 + ux * 12, y1: y1 + uy * 12, x2: x2 - ux * 13, y2: y2 - uy * 13, "marker-end": "url(#arrow)" }),
      s("text", { x: (x1 + x2) / 2 + 6, y: (y1 + y2) / 2 - 6, "font-size": 15, "font-weight": 700, fill: "#1b1f24", stroke: "#fff", "stroke-width": 4, "paint-order": "stroke" }, `${a.bikes}`)));
  }
  const markers = s("g", { class: "markers" });
  const ordered = [...stations].sort((a, b) => (a.prediction?.probability ?? -1) - (b.prediction?.probability ?? -1));
  for (const st of ordered) {
    const [x, y] = xy(st.lat, st.lon);
    const p = st.prediction?.probability;
    const r = 6 + 6 * Math.sqrt(Math.min(1, (st.capacity ?? 15) / 40));
    const words = `${st.name ?? st.station_id} (${st.station_id}): ` + (p === undefined
      ? "no prediction"
      : `risk of empty ${fmt.p(p)}${st.prediction.label ? ", flagged" : ""}`) +
      (st.status ? `; ${st.status.bikes} bikes, ${st.status.docks} docks` : "");
    const open = () => { location.hash = `#/station/${encodeURIComponent(st.station_id)}`; };
    markers.append(s("g", {
      class: `marker${p === undefined ? " none" : ""}`, tabindex: 0, role: "link", "aria-label": words,
      "data-station": st.station_id, "data-probability": p ?? "",
      onclick: open, onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } },
    },
    s("title", {}, words),
    s("circle", { class: "ring", cx: x, cy: y, r: r + 4, fill: "none" }),
    s("circle", { class: "dot", cx: x, cy: y, r, fill: p === undefined ? "#fff" : riskColour(p) }),
    st.prediction?.label ? s("circle", { cx: x, cy: y, r: 2.2, fill: "#fff", "aria-hidden": "true" }) : null));
  }
  // name the stations a reader should look at: the flagged ones and those a truck visits
  const named = new Set((decision?.actions ?? []).flatMap((a) => [a.from_station, a.to_station]));
  for (const st of stations) if (st.prediction?.label) named.add(st.station_id);
  const labels = s("g", { "aria-hidden": "true", "font-size": 13, fill: "#1b1f24" });
  for (const id of named) {
    const st = byId.get(id);
    if (!st) continue;
    const [x, y] = xy(st.lat, st.lon);
    const left = x > W * 0.7;
    labels.append(s("text", { x: left ? x - 16 : x + 16, y: y + 4, "text-anchor": left ? "end" : "start", stroke: "#fff", "stroke-width": 4, "paint-order": "stroke" }, st.name ?? id));
  }
  svg.append(moves, markers, labels);
  return svg;
}

function legend() {
  const ramp = s("svg", { width: 180, height: 14, "aria-hidden": "true" },
    ...Array.from({ length: 18 }, (_, k) => s("rect", { x: k * 10, y: 0, width: 10, height: 14, fill: riskColour(k / 17) })));
  return h("div", { class: "legend" },
    h("span", {}, "risk 0 ", ramp, " 1"),
    legendItem("no prediction yet", "#57606a", "circle"),
    h("span", {}, "white centre: flagged (over the model's threshold)"),
    h("span", {}, "→ truck move (bikes)"),
    h("span", {}, "marker size: capacity"));
}

function decisionCard(decision, stations) {
  const names = new Map(stations.map((x) => [x.station_id, x.name ?? x.station_id]));
  if (!decision) {
    return h("div", { class: "card" }, h("h2", {}, "Latest decision"), h("p", { class: "empty" }, "No decision in the audit log yet (`dockline decide run`)."));
  }
  return h("div", { class: "card" },
    h("h2", { class: "flush" }, "Latest decision"),
    h("p", {}, badge(decision.policy, "info"), " ", badge(`gate: ${decision.health_gate}`, decision.health_gate === "open" ? "good" : "warn"),
      " ", h("span", { class: "muted" }, fmt.time(decision.cycle_time))),
    h("p", { class: "muted" }, decision.reasons.join(", ") || "no reason codes"),
    decision.actions.length
      ? table([
        { label: "Truck", value: (a) => a.truck_id },
        { label: "From", value: (a) => h("a", { href: `#/station/${encodeURIComponent(a.from_station)}` }, names.get(a.from_station) ?? a.from_station) },
        { label: "To", value: (a) => h("a", { href: `#/station/${encodeURIComponent(a.to_station)}` }, names.get(a.to_station) ?? a.to_station) },
        { label: "Bikes", num: true, value: (a) => a.bikes },
        { label: "ETA", value: (a) => fmt.short(a.eta) },
      ], decision.actions, { wrap: false })
      : h("p", { class: "empty" }, "No moves in this cycle."),
    h("p", { class: "muted mono" }, `decision ${decision.decision_id.slice(0, 16)} · expected benefit ${fmt.num(decision.expected_benefit, 2)}`));
}
