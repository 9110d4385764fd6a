// Lineage: a prediction (request id) or a bundle walked back to the log offsets it came from.
import { api, badge, fmt, h } from "../lib.js";

const WHAT = {
  prediction: "The served answer",
  bundle: "The model bundle that computed it",
  training_run: "The training run that built the bundle",
  dataset: "The point-in-time dataset it was trained on",
  plan: "The feature plan that defined the columns",
  offline_partitions: "The offline store partitions the dataset read",
  log_offsets: "The event-log offsets those partitions hold",
};

const SHOWN = {
  prediction: ["entity", "logged_at", "probability", "role", "served", "model_name", "model_version", "bundle_id", "as_of", "feature_age_s"],
  bundle: ["model_name", "path"],
  training_run: ["model_name", "model_version", "candidate", "started_at", "completed_at"],
  dataset: ["row_count", "built_at", "path", "content_hash"],
  plan: ["project", "plan_hash"],
  offline_partitions: ["rows", "unchanged_since_build"],
};

export async function render(view, id) {
  view.append(h("h1", {}, "Lineage"));
  const form = h("form", { class: "inline", role: "search", onsubmit: (e) => { e.preventDefault(); const v = input.value.trim(); if (v) location.hash = `#/lineage/${encodeURIComponent(v)}`; } });
  const input = h("input", { type: "search", id: "lineage-id", name: "id", value: id ?? "", placeholder: "request id or bundle id", "aria-label": "Prediction request id or bundle id" });
  form.append(h("label", { for: "lineage-id" }, "Trace"), input, h("button", { type: "submit" }, "Trace"));
  view.append(form);
  if (!id) {
    view.append(h("p", { class: "muted" }, "Give a prediction's request id (a station page links its latest one) or a bundle id (the Models page links each)."));
    return;
  }
  const result = await api(`/v1/lineage/${encodeURIComponent(id)}`);
  view.append(h("p", {}, result.problems.length ? badge(`${result.problems.length} problem(s)`, "bad") : badge("every link verified", "good"), " ",
    h("span", { class: "muted" }, `${result.steps.length} steps from ${id}`)));
  if (result.problems.length) view.append(h("ul", { class: "error" }, result.problems.map((p) => h("li", {}, p))));
  view.append(h("ol", { class: "steps", "aria-label": "Lineage steps, from the prediction back to the log" }, result.steps.map(step)));
  view.append(h("details", {}, h("summary", {}, "The raw trace (JSON)"), h("pre", { class: "mono" }, JSON.stringify(result, null, 2))));
}

function step(st) {
  const fields = (SHOWN[st.kind] ?? []).filter((k) => st[k] !== undefined && st[k] !== null);
  const extra = [];
  if (st.kind === "bundle" && st.lineage) extra.push(["dataset", st.lineage.dataset_name], ["seed", st.lineage.seed], ["plan hash", st.lineage.plan_hash]);
  if (st.kind === "offline_partitions" && st.partitions) extra.push(["partitions", `${st.partitions.length} (${st.partitions[0] ?? ""} … ${st.partitions.at(-1) ?? ""})`]);
  if (st.kind === "log_offsets" && st.partitions) extra.push(["offsets", Object.entries(st.partitions).map(([p, r]) => `p${p}: ${r.first}..${r.last}`).join(", ")]);
  return h("li", { class: "step", "data-kind": st.kind },
    h("div", {}, h("span", { class: "kind" }, st.kind.replace("_", " ")), " ", h("span", { class: "mono" }, String(st.id))),
    h("div", { class: "muted" }, WHAT[st.kind] ?? ""),
    h("dl", {}, [...fields.map((k) => [k, show(k, st[k])]), ...extra].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])));
}

function show(key, value) {
  if (typeof value === "number" && key === "probability") return fmt.p(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  return value;
}
