/**
 * Jobs: the filtered list (newest first, a page at a time), kept live by the stream, and bulk
 * cancel / retry by the same filter with the count shown before anything runs.
 */
import { api, queryToFilter } from "../api.ts";
import type { ConsoleJobFilter, ConsoleJobSummary } from "../../api-types.ts";
import type { App } from "../app.ts";
import { h, replace, tableHead, tableRow } from "../dom.ts";
import type { Column } from "../dom.ts";
import { badge, jobLink, progressBar, time } from "../format.ts";
import { applyJobEvent, catchUp } from "../job-events.ts";
import { debounce } from "../live.ts";
import type { View } from "../main.ts";
import { filterForm, isEmptyFilter, savedFilters } from "./filter-form.ts";

const columns: ReadonlyArray<Column<ConsoleJobSummary>> = [
  { label: "Job", cell: (j) => jobLink(j.id), className: "nowrap" },
  { label: "Type", cell: (j) => j.type },
  { label: "State", cell: (j) => [badge(j.state), j.deadLetter ? h("span", { class: "muted" }, " dead-lettered") : null] },
  { label: "Progress", cell: (j) => progressBar(j.progress?.progress, j.progress?.message) },
  { label: "Attempt", className: "nowrap", cell: (j) => `${j.attempt > 0 ? `${j.attempt} of ${j.maxAttempts}` : "not started"}${j.redrives > 0 ? ` (redriven ${j.redrives}×)` : ""}` },
  { label: "Worker", cell: (j) => (j.workerId ? h("a", { href: `#/workers/${encodeURIComponent(j.workerId)}` }, j.workerId) : "—") },
  { label: "Created", cell: (j) => time(j.createdAt), className: "nowrap" },
  { label: "Why", cell: (j) => j.error?.message ?? j.deadLetter?.reason ?? j.reason ?? "" },
];

function describeFilter(filter: ConsoleJobFilter): string {
  const parts: string[] = [];
  if (filter.state?.length) parts.push(`state ${filter.state.join(" or ")}`);
  if (filter.type) parts.push(`type ${filter.type}`);
  if (filter.idPrefix) parts.push(`id starting ${filter.idPrefix}`);
  if (filter.since !== undefined) parts.push(`created from ${new Date(filter.since).toLocaleString()}`);
  if (filter.until !== undefined) parts.push(`created before ${new Date(filter.until).toLocaleString()}`);
  for (const [k, v] of Object.entries(filter.metadata ?? {})) parts.push(`${k}=${v}`);
  if (filter.q) parts.push(`matching “${filter.q}”`);
  return parts.length === 0 ? "all jobs" : parts.join(", ");
}

/** Asks for the count first, then (confirmed) runs the bulk action on exactly that many. */
async function bulk(app: App, action: "cancel" | "retry", filter: ConsoleJobFilter, refresh: () => void): Promise<void> {
  const preview = await app.run(`Count the jobs to ${action}`, () => api.bulkPreview(action, filter));
  if (!preview) return;
  if (preview.count === 0) {
    const left = preview.excluded > 0 ? ` (${preview.excluded} left out: their payload was not kept as submitted)` : "";
    app.toast(`No job matching ${describeFilter(filter)} can be ${action === "cancel" ? "cancelled" : "retried"}${left}.`);
    return;
  }
  const verb = action === "cancel" ? "Cancel" : "Retry";
  const data = await app.confirm({
    title: `${verb} ${preview.count} job${preview.count === 1 ? "" : "s"}?`,
    body: [
      h("p", {}, `${verb} every job matching ${describeFilter(filter)}: ${preview.count} now.`),
      preview.excluded > 0 ? h("p", {}, `Left out: ${preview.excluded} whose payload the job store did not keep as submitted (redacted or too large); they cannot be retried.`) : null,
      preview.sample.length > 0 ? h("p", { class: "muted" }, "For example: ", preview.sample.slice(0, 5).join(", ")) : null,
      action === "cancel" ? h("label", {}, "Reason (recorded in the audit log)", h("input", { name: "reason", required: true, maxlength: 500 })) : null,
    ],
    confirmLabel: `${verb} ${preview.count}`,
    danger: action === "cancel",
  });
  if (!data) return;
  const reason = String(data.get("reason") ?? "") || undefined;
  const result = await app.run(`${verb} ${preview.count} jobs`, () => api.bulk(action, filter, preview.count, reason));
  if (result) {
    const failed = result.failed.length > 0 ? ` ${result.failed.length} failed (${result.failed[0]!.id}: ${result.failed[0]!.error.message}${result.failed.length > 1 ? ", …" : ""}).` : "";
    app.toast(`${verb}: ${result.done.length} done.${failed}`, result.failed.length > 0 ? "error" : "ok");
  }
  refresh();
}

/** The jobs list. */
export const jobsView: View = async (app, root, { query }) => {
  const filter = queryToFilter(query);
  const results = h("div", { class: "results" });
  const summary = h("p", { class: "summary", role: "status" });
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const jobs = new Map<string, { job: ConsoleJobSummary; row: HTMLTableRowElement }>();
  let tbody: HTMLTableSectionElement | undefined;
  let cursor: string | undefined;

  const addRows = (page: ConsoleJobSummary[], at: "start" | "end") => {
    if (!tbody) {
      tbody = h("tbody", {});
      replace(
        results,
        h(
          "table",
          { class: "grid jobs" },
          h("caption", { class: "visually-hidden" }, `Jobs: ${describeFilter(filter)}`),
          tableHead(columns),
          tbody,
        ),
      );
    }
    const rows = page.filter((job) => !jobs.has(job.id)).map((job) => {
      catchUp(job, app.live.recentJobEvents(job.id, job.updatedAt));
      const row = tableRow(columns, job, job.id);
      jobs.set(job.id, { job, row });
      return row;
    });
    if (at === "start") tbody.prepend(...rows);
    else tbody.append(...rows);
  };

  const count = () => {
    summary.textContent = `Showing ${jobs.size} job${jobs.size === 1 ? "" : "s"}${cursor ? " (more below)" : ""}: ${describeFilter(filter)}.`;
  };
  const load = async (fresh: boolean) => {
    const page = await api.jobs(filter, fresh ? undefined : cursor);
    if (fresh) {
      jobs.clear();
      tbody = undefined;
      replace(results);
    }
    cursor = page.nextCursor;
    if (page.jobs.length > 0) addRows(page.jobs, "end");
    else if (fresh) replace(results, h("p", { class: "empty" }, `No jobs: ${describeFilter(filter)}.`));
    more.hidden = cursor === undefined;
    count();
  };
  const refresh = debounce(() => void load(true).catch(() => {}), 300);
  // A job the list does not show may now match the filter: the newest page is fetched again (the
  // server applies the filter) and its new rows go on top, keeping what the list shows (and any
  // pages loaded below) in place.
  const fetchNewest = debounce(() => {
    void api.jobs(filter).then(
      (page) => {
        addRows(page.jobs, "start");
        count();
      },
      () => {},
    );
  }, 300);
  more.addEventListener("click", () => {
    void load(false).catch((error: unknown) => app.toast(`Loading more failed: ${error instanceof Error ? error.message : String(error)}`, "error"));
  });

  const canBulk = app.can("bulk");
  replace(
    root,
    h("div", { class: "title-row" }, h("h1", {}, "Jobs"), app.can("submit") ? h("a", { href: "#/jobs/new", class: "button primary" }, "Submit a job") : app.actionButton("submit", "Submit a job", () => {})),
    h("details", { class: "filter-box", open: !isEmptyFilter(filter) || undefined }, h("summary", {}, "Filter and search"), filterForm(filter), savedFilters(app, filter)),
    h(
      "div",
      { class: "bulk", role: "group", "aria-label": "Bulk actions on the jobs matching this filter" },
      app.actionButton("bulk", "Cancel all matching…", () => void bulk(app, "cancel", filter, refresh), { class: "action danger" }),
      app.actionButton("bulk", "Retry all matching…", () => void bulk(app, "retry", filter, refresh)),
      canBulk ? null : h("span", { class: "muted" }, "Bulk actions are disabled (read-only)."),
    ),
    summary,
    results,
    more,
  );
  await load(true);

  const offJob = app.live.on("job", (event) => {
    const known = jobs.get(event.jobId);
    if (!known) {
      // A job this list does not show may now match its filter (new, or in a new state).
      if (event.kind === "state" || event.kind === "result") fetchNewest();
      return;
    }
    if (applyJobEvent(known.job, event)) {
      const row = tableRow(columns, known.job, known.job.id);
      known.row.replaceWith(row);
      known.row = row;
    }
  });
  const offResync = app.live.on("resync", refresh);
  return () => {
    offJob();
    offResync();
    refresh.cancel();
    fetchNewest.cancel();
  };
};
