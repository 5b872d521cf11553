/** Overview: queue depth, jobs by state, throughput and latency, workers, slots, dead letters. */
import { api } from "../api.ts";
import type { ConsoleOverview } from "../api-types.ts";
import { h, replace, svg, table } from "../dom.ts";
import { badge, duration, JOB_STATES } from "../format.ts";
import type { View } from "../main.ts";

function stat(label: string, value: string | number, detail?: string, href?: string): HTMLElement {
  const body = [h("span", { class: "stat-value" }, String(value)), h("span", { class: "stat-label" }, label), detail ? h("span", { class: "stat-detail" }, detail) : null];
  return h("li", { class: "stat" }, href ? h("a", { href }, body) : body);
}

/**
 * Completed and failed jobs per interval as stacked bars; the same figures are in the table
 * beside it, which is what assistive technology reads (the chart is hidden from it).
 */
function throughputChart(points: ConsoleOverview["throughput"]): SVGElement {
  const width = 300;
  const height = 80;
  const max = Math.max(1, ...points.map((p) => p.completed + p.failed));
  const barWidth = points.length === 0 ? width : width / points.length;
  const bars = points.flatMap((p, i) => {
    const completed = (p.completed / max) * (height - 2);
    const failed = (p.failed / max) * (height - 2);
    const x = (i * barWidth + 1).toFixed(1);
    const w = Math.max(1, barWidth - 2).toFixed(1);
    return [
      svg("rect", { class: "bar-completed", x, width: w, y: (height - completed).toFixed(1), height: completed.toFixed(1) }),
      svg("rect", { class: "bar-failed", x, width: w, y: (height - completed - failed).toFixed(1), height: failed.toFixed(1) }),
    ];
  });
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true", focusable: "false" }, bars);
}

function render(root: HTMLElement, overview: ConsoleOverview): void {
  const byState = overview.jobs.byState ?? {};
  const states = [...JOB_STATES.filter((s) => s in byState), ...Object.keys(byState).filter((s) => !(JOB_STATES as readonly string[]).includes(s))];
  const throughput = overview.throughput ?? [];
  const recent = throughput.slice(-10);
  const totalCompleted = throughput.reduce((sum, p) => sum + p.completed, 0);
  const totalFailed = throughput.reduce((sum, p) => sum + p.failed, 0);
  const minutes = throughput.length > 1 ? Math.max(1, Math.round(((throughput.at(-1)!.t - throughput[0]!.t) / 60_000) * (throughput.length / (throughput.length - 1)))) : 1;
  const depth = overview.queues.reduce((sum, q) => sum + (q.ready ?? 0), 0);

  replace(
    root,
    h(
      "ul",
      { class: "stats", "aria-label": "Totals" },
      stat("queued in the broker", depth, overview.queues.length === 1 ? overview.queues[0]!.name : `${overview.queues.length} queues`),
      stat("workers healthy", `${overview.workers.healthy} of ${overview.workers.total}`, undefined, "#/workers"),
      stat("slots busy", `${overview.slots.busy} of ${overview.slots.busy + overview.slots.free}`, `${overview.slots.free} free`),
      stat("dead letters", overview.deadLetters, undefined, "#/dead-letters"),
      stat("latency p50", duration(overview.latency?.p50), `p95 ${duration(overview.latency?.p95)}`),
    ),
    h(
      "section",
      { "aria-labelledby": "jobs-by-state" },
      h("h2", { id: "jobs-by-state" }, "Jobs by state"),
      h(
        "ul",
        { class: "state-counts" },
        states.map((state) => h("li", {}, h("a", { href: `#/jobs?state=${encodeURIComponent(state)}` }, badge(state), h("span", { class: "count" }, String(byState[state] ?? 0))))),
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "throughput" },
      h("h2", { id: "throughput" }, "Throughput"),
      h("p", {}, `${totalCompleted} completed and ${totalFailed} failed in the last ${minutes} min.`),
      throughputChart(throughput),
      h("p", { class: "legend", "aria-hidden": "true" }, h("span", { class: "key key-completed" }, "completed"), " ", h("span", { class: "key key-failed" }, "failed")),
      table({
        caption: "Completed and failed jobs per interval (latest 10)",
        columns: [
          { label: "Interval", cell: (p) => new Date(p.t).toLocaleTimeString(undefined, { hour12: false }) },
          { label: "Completed", cell: (p) => p.completed },
          { label: "Failed", cell: (p) => p.failed },
        ],
        rows: recent,
        empty: "No jobs finished yet.",
      }),
    ),
    h(
      "section",
      { "aria-labelledby": "queues" },
      h("h2", { id: "queues" }, "Queues"),
      table({
        caption: "Queue depth from the broker",
        captionHidden: true,
        columns: [
          { label: "Queue", cell: (q) => h("span", { class: "mono" }, q.name) },
          { label: "Ready", cell: (q) => q.ready ?? "—" },
          { label: "Unacked", cell: (q) => q.unacked ?? "—" },
          { label: "Consumers", cell: (q) => q.consumers ?? "—" },
        ],
        rows: overview.queues,
        empty: "The queue does not report its depth.",
      }),
    ),
  );
}

/** The overview; refreshed by the live stream's `overview` events. */
export const overviewView: View = async (app, root) => {
  const body = h("div", {});
  replace(root, h("h1", {}, "Overview"), body);
  render(body, await api.overview());
  const offOverview = app.live.on("overview", (overview) => render(body, overview));
  const offResync = app.live.on("resync", () => void api.overview().then((o) => render(body, o), () => {}));
  return () => {
    offOverview();
    offResync();
  };
};
