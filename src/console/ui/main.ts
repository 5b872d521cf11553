/**
 * The console's web page: plain TypeScript modules bundled by tsup (esbuild) into one script and
 * one stylesheet, no framework and no runtime dependency, so it runs under the console's strict
 * Content-Security-Policy (`script-src 'self'`, `style-src 'self'`: no inline script, no inline
 * style) and renders every piece of user data as text (see `dom.ts`).
 *
 * Routing is by the URL's hash (`#/jobs/<id>`), so the server only serves one page and the page
 * works under any mount prefix. Each route renders into a fresh container: a view that answers late
 * after the user moved on writes into a detached element, never over the new view.
 */
import { api, ApiError } from "./api.ts";
import { createApp } from "./app.ts";
import type { App } from "./app.ts";
import { h, replace } from "./dom.ts";
import { Live } from "./live.ts";
import { auditView } from "./views/audit.ts";
import { deadLettersView } from "./views/dead-letters.ts";
import { jobView } from "./views/job.ts";
import { jobsView } from "./views/jobs.ts";
import { overviewView } from "./views/overview.ts";
import { submitView } from "./views/submit.ts";
import { workerView, workersView } from "./views/workers.ts";

/** A view renders into `root` and returns what to undo when the user leaves it. */
export type View = (app: App, root: HTMLElement, params: { id?: string; query: URLSearchParams }) => Promise<(() => void) | void>;

const SECTIONS = [
  { path: "/overview", label: "Overview" },
  { path: "/jobs", label: "Jobs" },
  { path: "/workers", label: "Workers" },
  { path: "/dead-letters", label: "Dead letters" },
  { path: "/audit", label: "Audit" },
] as const;

function route(hash: string): { section: string; view: View; id?: string; query: URLSearchParams } {
  const raw = hash.replace(/^#/, "") || "/overview";
  const [path = "/overview", search = ""] = raw.split("?", 2);
  const query = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean).map((p) => decodeURIComponent(p));
  const [first, second] = parts;
  switch (first) {
    case "jobs":
      if (second === "new") return { section: "/jobs", view: submitView, query };
      if (second !== undefined) return { section: "/jobs", view: jobView, id: second, query };
      return { section: "/jobs", view: jobsView, query };
    case "workers":
      return second === undefined ? { section: "/workers", view: workersView, query } : { section: "/workers", view: workerView, id: second, query };
    case "dead-letters":
      return { section: "/dead-letters", view: deadLettersView, query };
    case "audit":
      return { section: "/audit", view: auditView, query };
    default:
      return { section: "/overview", view: overviewView, query };
  }
}

async function boot(): Promise<void> {
  const main = document.getElementById("main") as HTMLElement;
  const nav = document.getElementById("nav") as HTMLElement;
  const notice = document.getElementById("notice") as HTMLElement;
  const live = new Live(document.getElementById("live-status") as HTMLElement);

  let session;
  try {
    session = await api.session();
  } catch (error) {
    const status = error instanceof ApiError && error.status ? ` (${error.status})` : "";
    replace(main, h("h1", {}, "The console is unavailable"), h("p", { class: "error" }, `${error instanceof Error ? error.message : String(error)}${status}`));
    return;
  }
  const app = createApp(session, live, document.getElementById("toasts") as HTMLElement);

  if (session.readOnly || !Object.values(session.actions).some(Boolean)) {
    notice.hidden = false;
    replace(
      notice,
      h("strong", {}, "Read-only. "),
      "You can look at everything here, but every action is disabled: this console has no authorize hook that allows you to change anything.",
    );
  }
  if (session.user) document.getElementById("live-status")?.before(h("p", { class: "user" }, `Signed in as ${session.user}`));

  const links = SECTIONS.map((s) => h("a", { href: `#${s.path}`, "data-path": s.path }, s.label));
  replace(nav, h("ul", {}, links.map((a) => h("li", {}, a))));

  let leave: (() => void) | void = undefined;
  let first = true;
  const show = async () => {
    const target = route(location.hash);
    if (leave) leave();
    leave = undefined;
    for (const link of links) {
      if (link.dataset.path === target.section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const root = h("div", { class: "view" });
    main.replaceChildren(root);
    try {
      leave = await target.view(app, root, { id: target.id, query: target.query });
    } catch (error) {
      replace(root, h("h1", {}, "Something went wrong"), h("p", { class: "error" }, error instanceof Error ? error.message : String(error)));
    }
    if (!root.isConnected && leave) {
      leave();
      leave = undefined;
    }
    const heading = root.querySelector("h1");
    document.title = `${heading?.textContent ?? "Console"} · Blacktree console`;
    // Move focus to the new view's heading, so keyboard and screen-reader users land on it.
    if (!first && heading && root.isConnected) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
    first = false;
  };
  window.addEventListener("hashchange", () => void show());
  live.start();
  await show();
}

void boot();
