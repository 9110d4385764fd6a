// Deployment health (the monitor's verdict per deployment) and the serving windows it judged.
import { api, badge, fmt, h, legendItem, table, timeChart, toneOf } from "../lib.js";

export async function render(view) {
  const [health, scan] = await Promise.all([api("/v1/monitoring/health"), api("/v1/monitoring/windows?hours=6")]);
  view.append(h("h1", {}, "Deployment health"),
    h("p", { class: "sub" }, "Each deployment judged over the monitor's lookback period; the detail names the check that decided."));
  const deployments = health.deployments ?? [];
  if (!deployments.length) view.append(h("p", { class: "empty" }, "No deployment has written a metrics window yet."));
  view.append(h("div", { class: "grid cards" }, deployments.map((d) => h("section", { class: "card deployment", "aria-label": `Deployment ${d.deployment_id}: ${d.status}`, "data-status": d.status },
    h("h2", { class: "flush" }, d.deployment_id),
    h("p", {}, badge(d.status, toneOf[d.status] ?? "muted")),
    h("p", {}, d.detail),
    h("p", { class: "muted" }, `${d.model_name || "no model"} v${d.model_version || "–"} · ${fmt.n(d.evaluated_windows)} windows, ${fmt.n(d.missing_window_count)} missing · ${fmt.n(d.request_count)} requests`),
    d.inconclusive?.length ? h("p", {}, badge(`inconclusive: ${d.inconclusive.join(", ")}`, "info")) : null,
    h("p", { class: "muted" }, `latest window ends ${fmt.time(d.latest_window_end)}`)))));
  const windows = scan.windows;
  view.append(h("h2", {}, "Serving windows (last 6 h)"));
  if (!windows.length) { view.append(h("p", { class: "empty" }, "No window in this period.")); return; }
  const ids = [...new Set(windows.map((w) => w.deployment_id))];
  for (const id of ids) {
    const mine = windows.filter((w) => w.deployment_id === id);
    const byStart = new Map();
    for (const w of mine) {
      const t = new Date(w.window_start).getTime();
      const acc = byStart.get(t) ?? { requests: 0, failures: 0, p95: null };
      acc.requests += w.request_count;
      acc.failures += w.failure_count + w.rejected_count;
      if (w.latency_p95_ms !== null) acc.p95 = Math.max(acc.p95 ?? 0, w.latency_p95_ms);
      byStart.set(t, acc);
    }
    const pts = [...byStart.entries()].sort((a, b) => a[0] - b[0]);
    const maxReq = Math.max(1, ...pts.map(([, v]) => v.requests));
    const maxP95 = Math.max(1, ...pts.map(([, v]) => v.p95 ?? 0));
    view.append(h("div", { class: "card" },
      h("h3", { class: "flush" }, `${id}: requests and p95 latency per window`),
      timeChart({
        title: `Requests and p95 latency per window of ${id}`,
        desc: `${pts.length} windows`,
        series: [
          { label: "requests per window", kind: "bars", colour: "#0072b2", points: pts.map(([t, v]) => [t, v.requests]) },
          { label: "failed or rejected per window", kind: "bars", colour: "#d55e00", points: pts.map(([t, v]) => [t, v.failures]) },
          { label: "p95 latency, ms (right axis)", kind: "line", colour: "#e69f00", axis: "right", points: pts.filter(([, v]) => v.p95 !== null).map(([t, v]) => [t, v.p95]) },
        ],
        left: { min: 0, max: maxReq * 1.1, label: "requests" },
        right: { min: 0, max: maxP95 * 1.2, label: "p95 ms", fmt: (v) => v.toFixed(1) },
        width: 1000, height: 260,
      }),
      h("div", { class: "legend" }, legendItem("requests", "#0072b2"), legendItem("failed or rejected", "#d55e00"), legendItem("p95 latency", "#e69f00", "line"))));
  }
  view.append(h("h2", {}, "Windows"), table([
    { label: "Deployment", value: (w) => w.deployment_id },
    { label: "Endpoint", value: (w) => w.endpoint_name },
    { label: "Start", value: (w) => fmt.time(w.window_start) },
    { label: "Requests", num: true, value: (w) => fmt.n(w.request_count) },
    { label: "Failed", num: true, value: (w) => fmt.n(w.failure_count) },
    { label: "Rejected", num: true, value: (w) => fmt.n(w.rejected_count) },
    { label: "p50 ms", num: true, value: (w) => fmt.num(w.latency_p50_ms, 1) },
    { label: "p95 ms", num: true, value: (w) => fmt.num(w.latency_p95_ms, 1) },
    { label: "p99 ms", num: true, value: (w) => fmt.num(w.latency_p99_ms, 1) },
    { label: "Model", value: (w) => (w.model_version ? `v${w.model_version}` : "–") },
  ], [...windows].reverse().slice(0, 200)));
  if (scan.bad_lines.length) {
    view.append(h("h2", {}, "Unreadable window lines"), table([
      { label: "File", value: (b) => h("span", { class: "mono" }, b.file) },
      { label: "Line", num: true, value: (b) => b.line },
      { label: "Reason", value: (b) => b.reason },
    ], scan.bad_lines));
  }
}
