// The dashboard's router: `#/page/arg` → a page module's `render(main, arg)`.
import { ApiError, h } from "./lib.js";
import * as map from "./pages/map.js";
import * as station from "./pages/station.js";
import * as health from "./pages/health.js";
import * as drift from "./pages/drift.js";
import * as performance from "./pages/performance.js";
import * as models from "./pages/models.js";
import * as lineage from "./pages/lineage.js";

const PAGES = { map, station, health, drift, performance, models, lineage };
const NAV = { station: "map" };  // a station page belongs to the map in the navigation
let generation = 0;

async function route() {
  const [name = "map", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = PAGES[name] ?? map;
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  const main = document.getElementById("main");
  const mine = ++generation;
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === (NAV[name] ?? name)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.setAttribute("aria-busy", "true");
  main.replaceChildren(h("p", { class: "loading" }, "Loading…"));
  const view = h("div", { class: "page", "data-page": name });
  try {
    await page.render(view, arg);
  } catch (err) {
    view.replaceChildren(errorBox(err));
  }
  if (mine !== generation) return;  // a newer navigation won
  main.replaceChildren(view);
  main.setAttribute("aria-busy", "false");
  document.title = `${view.querySelector("h1")?.textContent ?? "dashboard"} · dockline`;
  if (route.moved) main.focus({ preventScroll: true });  // keyboard users land on the new page
  route.moved = true;
}

export function errorBox(err) {
  const reason = err instanceof ApiError ? err.reason : "error";
  return h("div", { class: "error", role: "alert", "data-reason": reason },
    h("strong", {}, "Could not load this page: "), err.message, " ", h("span", { class: "mono" }, `(${reason})`));
}

window.addEventListener("hashchange", route);
route();
