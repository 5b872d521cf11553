/** Overview: queue depth, jobs by state, throughput and latency, workers, slots, dead letters. */
import { api } from "../api.ts";
import type { ConsoleOverview } from "../../api-types.ts";
import { h, replace, svg, table } from "../dom.ts";
import { badge, duration, JOB_STATES, time } from "../format.ts";
import type { View } from "../main.ts";

function stat(label: string, value: string | number, detail?: string, href?: string): HTMLElement {
  const body = [h("span", { class: "stat-value" }, String(value)), h("span", { class: "stat-label" }, label), detail ? h("span", { class: "stat-detail" }, detail) : null];
  return h("li", { class: "stat" }, href ? h("a", { href }, body) : body);
}

/**
 * Completed and failed jobs per interval as stacked bars; the same figures are in the table
 * beside it, which is what assistive technology reads (the chart is hidden from it).
 */
/** How many jobs a percentile covers; "of the newest 10,000 ended" when the store read only those. */
function over(figure: { count: number; capped?: true }): string {
  return figure.capped === true ? `${figure.count} of the newest 10,000 ended` : String(figure.count);
}

function throughputChart(points: ConsoleOverview["throughput"]["buckets"]): SVGElement {
  const width = 300;
  const height = 80;
  const max = Math.max(1, ...points.map((p) => p.completed + p.failed + p.cancelled));
  const barWidth = points.length === 0 ? width : width / points.length;
  const bars = points.flatMap((p, i) => {
    let top = height;
    const x = (i * barWidth + 0.5).toFixed(1);
    const w = Math.max(0.5, barWidth - 1).toFixed(1);
    return (["completed", "failed", "cancelled"] as const).map((kind) => {
      const size = (p[kind] / max) * (height - 2);
      top -= size;
      return svg("rect", { class: `bar-${kind}`, x, width: w, y: top.toFixed(1), height: size.toFixed(1) });
    });
  });
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true", focusable: "false" }, bars);
}

function render(root: HTMLElement, overview: ConsoleOverview): void {
  const byState = overview.jobs.byState ?? {};
  const states = [...JOB_STATES.filter((s) => s in byState), ...Object.keys(byState).filter((s) => !(JOB_STATES as readonly string[]).includes(s))];
  const { bucketMs, buckets } = overview.throughput;
  const total = (kind: "completed" | "failed" | "cancelled") => buckets.reduce((sum, b) => sum + b[kind], 0);
  const minutes = Math.max(1, Math.round((buckets.length * bucketMs) / 60_000));
  const recent = buckets.filter((b) => b.completed + b.failed + b.cancelled > 0).slice(-6).reverse();
  const jobQueues = overview.queues.filter((q) => q.role === "jobs");
  const depth = jobQueues.reduce((sum, q) => sum + q.ready, 0);
  const latency = overview.latency;

  replace(
    root,
    h(
      "ul",
      { class: "stats", "aria-label": "Totals" },
      stat("waiting in the queue", overview.queues.length === 0 ? "—" : depth, overview.queueError ?? (jobQueues.length === 1 ? jobQueues[0]!.name : `${jobQueues.length} queues`)),
      stat("workers healthy", `${overview.workers.healthy} of ${overview.workers.total}`, overview.workers.known === false ? "no pool reports here" : undefined, "#/workers"),
      stat("slots busy", `${overview.slots.busy} of ${overview.slots.total}`, `${overview.slots.free} free`),
      stat("dead letters", overview.deadLetters ?? "—", undefined, "#/dead-letters"),
      stat("run time p50", latency.p50Ms === null ? "—" : duration(latency.p50Ms), latency.p95Ms === null ? "no attempt ended lately" : `p95 ${duration(latency.p95Ms)} over ${over(latency)}`),
      overview.wait
        ? stat("wait to start p50", overview.wait.p50Ms === null ? "—" : duration(overview.wait.p50Ms), overview.wait.p95Ms === null ? "no job started lately" : `p95 ${duration(overview.wait.p95Ms)} over ${over(overview.wait)}`)
        : null,
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
      h(
        "p",
        {},
        `${total("completed")} completed, ${total("failed")} failed and ${total("cancelled")} cancelled in the last ${minutes} min (bars of ${duration(bucketMs)}), `,
        overview.figuresFrom === "store" ? "from the job records." : "as this console saw them since it started.",
      ),
      throughputChart(buckets),
      h(
        "p",
        { class: "legend", "aria-hidden": "true" },
        h("span", { class: "key key-completed" }, "completed"),
        " ",
        h("span", { class: "key key-failed" }, "failed"),
        " ",
        h("span", { class: "key key-cancelled" }, "cancelled"),
      ),
      table({
        caption: "Latest intervals with results",
        columns: [
          { label: "From", cell: (b) => time(b.t) },
          { label: "Completed", cell: (b) => b.completed },
          { label: "Failed", cell: (b) => b.failed },
          { label: "Cancelled", cell: (b) => b.cancelled },
        ],
        rows: recent,
        empty: "No job ended in this window.",
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
          { label: "Holds", cell: (q) => (q.role === "jobs" ? "jobs" : q.role === "dead" ? "dead letters" : "other") },
          { label: "Ready", cell: (q) => q.ready },
          { label: "Consumers", cell: (q) => q.consumers },
        ],
        rows: overview.queues,
        empty: overview.queueError ? `The queue's depth is unavailable: ${overview.queueError}` : "This queue does not report its depth.",
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
