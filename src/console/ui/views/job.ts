/**
 * One job: its state, payload (as the server's redaction left it), every attempt with its worker
 * and error, live progress and the log as it streams, its trace id; cancel, retry, redrive.
 */
import { api, ApiError } from "../api.ts";
import type { ConsoleJobPage, ConsoleLogLine } from "../../api-types.ts";
import type { App } from "../app.ts";
import { definitions, h, replace, table } from "../dom.ts";
import { badge, duration, json, pairs, progressBar, time } from "../format.ts";
import { applyJobEvent, catchUp, FINAL_STATES } from "../job-events.ts";
import { debounce } from "../live.ts";
import type { View } from "../main.ts";

function logLine(line: ConsoleLogLine): HTMLLIElement {
  return h(
    "li",
    { class: line.stream === "stderr" ? "stderr" : undefined },
    h("span", { class: "log-meta" }, `#${line.attempt}${line.stream === "stderr" ? " err" : ""} `),
    line.line,
  );
}

function actions(app: App, detail: ConsoleJobPage, reload: () => void): HTMLElement {
  const job = detail.job;
  const buttons = h("div", { class: "buttons", role: "group", "aria-label": "Actions on this job" });
  if (!FINAL_STATES.has(job.state)) {
    buttons.append(
      app.actionButton(
        "cancel",
        "Cancel job…",
        async () => {
          const data = await app.confirm({
            title: "Cancel this job?",
            body: [
              h("p", {}, `Job ${job.id} (${job.type}) is ${job.state}. A running handler gets its abort signal on its worker.`),
              h("label", {}, "Reason (recorded in the audit log)", h("input", { name: "reason", required: true, maxlength: 500 })),
            ],
            confirmLabel: "Cancel job",
            danger: true,
          });
          if (!data) return;
          await app.run("Cancel", () => api.cancel(job.id, String(data.get("reason") ?? "")));
          reload();
        },
        { class: "action danger" },
      ),
    );
  } else if (job.deadLetter) {
    buttons.append(app.actionButton("redrive", "Redrive from dead letters", () => void app.run("Redrive", () => api.redrive([job.id])).then(reload)));
  } else if ((job.state === "failed" || job.state === "cancelled") && (job.payloadRedacted || job.payloadOmitted)) {
    // The record does not hold the job's own payload: the server would refuse (409), so say why here.
    buttons.append(h("p", { class: "muted", "data-testid": "no-retry" }, "No retry: the job store kept only a ", job.payloadOmitted ? "note of its (too large) payload" : "redacted copy of its payload", "."));
  } else if (job.state === "failed" || job.state === "cancelled") {
    buttons.append(
      app.actionButton("retry", "Retry as a new job", async () => {
        const result = await app.run("Retry", () => api.retry(job.id));
        if (result?.newId) location.hash = `#/jobs/${encodeURIComponent(result.newId)}`;
        else reload();
      }),
    );
  }
  return buttons;
}

function render(app: App, root: HTMLElement, detail: ConsoleJobPage, reload: () => void): { progress: HTMLElement; state: HTMLElement } {
  const job = detail.job;
  const progress = h("div", { class: "job-progress" }, progressBar(job.progress?.progress, job.progress?.message));
  const state = h("span", {}, badge(job.state));
  const outcome: HTMLElement[] = [];
  if (job.error) outcome.push(h("div", { class: "callout error" }, h("h2", {}, "Error"), h("p", { class: "mono" }, job.error.code), h("pre", {}, job.error.message)));
  if (job.cancel) outcome.push(h("div", { class: "callout" }, h("h2", {}, "Cancelled"), h("p", {}, job.cancel.reason, job.cancel.message ? `: ${job.cancel.message}` : "")));
  if (job.deadLetter) outcome.push(h("div", { class: "callout error" }, h("h2", {}, "In the dead-letter queue"), h("p", {}, job.deadLetter.reason, " (", time(job.deadLetter.at), ")")));
  if (job.reason && job.state === "unschedulable") outcome.push(h("div", { class: "callout" }, h("h2", {}, "Waiting for a worker"), h("p", {}, job.reason)));
  if (job.state === "completed") outcome.push(h("section", { "aria-labelledby": "result" }, h("h2", { id: "result" }, "Result"), h("pre", { class: "data" }, json(job.result))));

  replace(
    root,
    h("div", { class: "title-row" }, h("h1", {}, "Job ", h("span", { class: "mono break" }, job.id)), actions(app, detail, reload)),
    definitions([
      ["State", state],
      ["Type", job.type],
      ["Progress", progress],
      ["Attempt", `${job.attempt} of ${job.maxAttempts}${job.redrives ? `, redriven ${job.redrives}×` : ""}`],
      ["Worker", job.workerId ? h("a", { href: `#/workers/${encodeURIComponent(job.workerId)}` }, job.workerId) : "—"],
      ["Trace id", job.traceId ? h("span", { class: "mono break" }, job.traceId) : "—"],
      ["Created", time(job.createdAt)],
      ["Finished", job.finishedAt ? time(job.finishedAt) : undefined],
      ["Timeout", job.timeoutMs !== undefined ? duration(job.timeoutMs) : undefined],
      ["Idempotency key", job.idempotencyKey],
      ["Metadata", pairs(job.metadata)],
      ["Labels", job.labels && Object.keys(job.labels).length > 0 ? pairs(job.labels) : undefined],
    ]),
    outcome,
    h(
      "section",
      { "aria-labelledby": "payload" },
      h("h2", { id: "payload" }, "Payload"),
      job.payloadOmitted ? h("p", { class: "muted" }, "Too large to keep in the job store.") : h("pre", { class: "data", "data-testid": "payload" }, json(job.payload)),
      job.payloadRedacted ? h("p", { class: "muted" }, "As redacted by the job store when the job was submitted.") : null,
    ),
    h(
      "section",
      { "aria-labelledby": "attempts" },
      h("h2", { id: "attempts" }, "Attempts"),
      table({
        caption: "Every attempt, oldest first",
        captionHidden: true,
        columns: [
          { label: "Attempt", cell: (a) => (a.round > 0 ? `${a.number} (round ${a.round + 1})` : String(a.number)) },
          { label: "Worker", cell: (a) => (a.workerId ? h("a", { href: `#/workers/${encodeURIComponent(a.workerId)}` }, a.workerId) : "—") },
          { label: "Started", cell: (a) => time(a.startedAt) },
          { label: "Took", cell: (a) => (a.startedAt !== undefined && a.endedAt !== undefined ? duration(a.endedAt - a.startedAt) : a.endedAt === undefined ? "running" : "—") },
          { label: "Outcome", cell: (a) => (a.outcome ? badge(a.outcome) : "—") },
          { label: "Error", cell: (a) => (a.error ? `${a.error.code}: ${a.error.message}` : "") },
        ],
        rows: detail.attempts,
        empty: "No attempt started yet.",
      }),
    ),
  );
  return { progress, state };
}

/** A job's page, following the job live. */
export const jobView: View = async (app, root, { id }) => {
  const jobId = id ?? "";
  const body = h("div", {});
  const log = h("ol", { class: "log", "aria-label": "Log lines" });
  const logSection = h("section", { "aria-labelledby": "log" }, h("h2", { id: "log" }, "Log"), log);
  replace(root, body, logSection);

  let detail: ConsoleJobPage;
  const fetchDetail = async () => {
    const fetched = await api.job(jobId);
    catchUp(fetched.job, app.live.recentJobEvents(jobId, fetched.job.updatedAt));
    return fetched;
  };
  try {
    detail = await fetchDetail();
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      replace(root, h("h1", {}, "Job not found"), h("p", {}, `No job has the id ${jobId} (or its record was removed).`), h("p", {}, h("a", { href: "#/jobs" }, "All jobs")));
      return;
    }
    throw error;
  }
  let parts = render(app, body, detail, () => reload());
  const showLog = (lines: ConsoleLogLine[]) => replace(log, lines.length === 0 ? h("li", { class: "muted empty-log" }, "No log lines yet.") : lines.map(logLine));
  showLog(detail.logs ?? []);
  let shownLines = detail.logs?.length ?? 0;

  const reload = debounce(() => {
    void fetchDetail().then(
      (next) => {
        detail = next;
        parts = render(app, body, detail, () => reload());
        // The server's log may hold lines the stream brought before this page opened.
        if ((next.logs?.length ?? 0) > shownLines) {
          showLog(next.logs);
          shownLines = next.logs.length;
        }
      },
      () => {},
    );
  }, 250);

  const offJob = app.live.on("job", (event) => {
    if (event.jobId !== jobId) return;
    if (event.kind === "log" && typeof event.line === "string") {
      log.querySelector(".empty-log")?.remove();
      log.append(logLine({ at: event.at, attempt: event.attempt, line: event.line, stream: event.stream }));
      shownLines++;
      return;
    }
    if (!applyJobEvent(detail.job, event)) return;
    if (event.kind === "progress") replace(parts.progress, progressBar(detail.job.progress?.progress, detail.job.progress?.message));
    else reload();
  });
  const offResync = app.live.on("resync", reload);
  return () => {
    offJob();
    offResync();
    reload.cancel();
  };
};
