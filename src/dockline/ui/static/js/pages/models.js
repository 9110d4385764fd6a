// Models: every registered version with its aliases and the promotion gate's verdict, and the
// append-only alias history (who moved which alias, when, why, on what evidence).
import { api, badge, fmt, h, table } from "../lib.js";

export async function render(view) {
  const data = await api("/v1/models");
  view.append(h("h1", {}, "Models"));
  if (!data.models.length) { view.append(h("p", { class: "empty" }, "No registered model yet (`dockline train` registers one).")); return; }
  for (const model of data.models) {
    const section = h("section", { class: "model", "aria-label": model.model, "data-model": model.model });
    section.append(h("h2", {}, model.model));
    const champion = model.versions.find((v) => v.aliases.includes("champion"));
    section.append(h("p", { class: "sub" }, champion ? `Champion: version ${champion.version} (bundle ${champion.bundle_id})` : "No champion: serving answers 503 until one is promoted."));
    section.append(table([
      { label: "Version", num: true, value: (v) => v.version },
      { label: "Aliases", value: (v) => (v.aliases.length ? v.aliases.map((a) => badge(a, a === "champion" ? "info" : "muted")) : "–") },
      { label: "Bundle", value: (v) => h("a", { class: "mono", href: `#/lineage/${encodeURIComponent(v.bundle_id)}` }, v.bundle_id) },
      { label: "Registered", value: (v) => fmt.time(v.created_at) },
      { label: "Gate", value: (v) => (v.gate ? (v.gate.passed ? badge("passed", "good") : badge("failed", "bad")) : badge("none", "muted")) },
      { label: "Primary metric", value: (v) => (v.gate ? `${v.gate.primary_metric} ${fmt.num(v.gate.value, 4)}` : "–") },
      { label: "Baselines", value: (v) => (v.gate ? Object.entries(v.gate.baselines).map(([k, x]) => `${k} ${fmt.num(x, 4)}`).join(", ") : "–") },
      { label: "ECE (max)", num: true, value: (v) => (v.gate ? `${fmt.num(v.gate.ece, 4)} (${fmt.num(v.gate.max_ece, 2)})` : "–") },
      { label: "Why not", value: (v) => (v.gate?.reasons?.length ? h("ul", { class: "reasons" }, v.gate.reasons.map((r) => h("li", {}, r))) : "–") },
    ], [...model.versions].reverse(), { caption: "Versions, newest first, with the promotion gate's verdict" }));
    section.append(h("h3", {}, "Alias history"));
    section.append(model.history.length ? table([
      { label: "At", value: (e) => fmt.time(e.at) },
      { label: "Action", value: (e) => badge(e.action, e.action === "rollback" ? "bad" : e.action === "promote" ? "good" : "info") },
      { label: "Alias", value: (e) => e.alias },
      { label: "From → to", value: (e) => `${e.from_version ?? "–"} → ${e.to_version ?? "–"}` },
      { label: "Who", value: (e) => e.actor },
      { label: "Why", value: (e) => e.reason },
      { label: "Evidence", value: (e) => (Object.keys(e.evidence ?? {}).length ? h("details", {}, h("summary", {}, "show"), h("pre", { class: "mono" }, JSON.stringify(e.evidence, null, 2))) : "–") },
    ], [...model.history].reverse(), { caption: "Append-only, newest first" }) : h("p", { class: "empty" }, "No alias has moved yet."));
    view.append(section);
  }
}
