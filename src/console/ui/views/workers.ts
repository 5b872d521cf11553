/** Workers: state with its reason, labels, slots, running jobs, health history; drain and undrain. */
import { api, ApiError } from "../api.ts";
import type { ConsoleWorker } from "../../api-types.ts";
import type { App } from "../app.ts";
import { definitions, h, replace, table } from "../dom.ts";
import { badge, jobLink, pairs, time } from "../format.ts";
import { debounce } from "../live.ts";
import type { View } from "../main.ts";

function drainButton(app: App, worker: ConsoleWorker, after: () => void): HTMLButtonElement | null {
  if (worker.state === "removed") return null;
  const draining = worker.state === "draining";
  return draining
    ? app.actionButton("undrain", "Undrain", () => void app.run(`Undrain ${worker.id}`, () => api.undrain(worker.id)).then(after), { "aria-label": `Undrain worker ${worker.id}` })
    : app.actionButton("drain", "Drain", () => void app.run(`Drain ${worker.id}`, () => api.drain(worker.id)).then(after), { "aria-label": `Drain worker ${worker.id}` });
}

function slots(worker: ConsoleWorker): string {
  return `${worker.slots.busy} busy of ${worker.slots.total}`;
}

function running(worker: ConsoleWorker): HTMLElement | string {
  return worker.running.length === 0 ? "—" : h("ul", { class: "plain" }, worker.running.map((id) => h("li", {}, jobLink(id))));
}

/** Re-renders on every `worker` event and on job starts and ends (slots change), coalesced. */
function follow(app: App, render: () => Promise<void>): () => void {
  const again = debounce(() => void render().catch(() => {}), 250);
  const offs = [
    app.live.on("worker", again),
    app.live.on("job", (event) => {
      if (event.kind === "result" || (event.kind === "state" && (event.state === "running" || event.state === "retrying"))) again();
    }),
    app.live.on("resync", again),
  ];
  return () => {
    for (const off of offs) off();
    again.cancel();
  };
}

/** All workers. */
export const workersView: View = async (app, root) => {
  const body = h("div", {});
  replace(root, h("h1", {}, "Workers"), body);
  const render = async () => {
    const { workers } = await api.workers();
    const healthy = workers.filter((w) => w.state === "idle" || w.state === "busy").length;
    replace(
      body,
      h("p", { class: "summary" }, `${healthy} of ${workers.length} healthy; ${workers.reduce((s, w) => s + w.slots.busy, 0)} of ${workers.reduce((s, w) => s + w.slots.total, 0)} slots busy.`),
      table({
        caption: "Workers",
        captionHidden: true,
        columns: [
          { label: "Worker", cell: (w) => h("a", { href: `#/workers/${encodeURIComponent(w.id)}`, class: "mono" }, w.id) },
          { label: "State", cell: (w) => [badge(w.state), w.reason ? h("span", { class: "reason" }, w.reason) : null] },
          { label: "Slots", cell: slots },
          { label: "Running", cell: running },
          { label: "Labels", cell: (w) => pairs(w.labels) },
          { label: "Actions", cell: (w) => drainButton(app, w, () => void render()) ?? "" },
        ],
        rows: workers,
        rowKey: (w) => w.id,
        empty: "No worker is known: no orchestrator reports its pool to this console.",
      }),
    );
  };
  await render();
  return follow(app, render);
};

/** One worker with its health history. */
export const workerView: View = async (app, root, { id }) => {
  const workerId = id ?? "";
  const render = async () => {
    let worker: ConsoleWorker;
    try {
      worker = await api.worker(workerId);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        replace(root, h("h1", {}, "Worker not found"), h("p", {}, `No orchestrator reports a worker ${workerId}.`), h("p", {}, h("a", { href: "#/workers" }, "All workers")));
        return;
      }
      throw error;
    }
    const button = drainButton(app, worker, () => void render());
    replace(
      root,
      h("div", { class: "title-row" }, h("h1", {}, "Worker ", h("span", { class: "mono break" }, worker.id)), button ? h("div", { class: "buttons" }, button) : null),
      definitions([
        ["State", badge(worker.state)],
        ["Reason", worker.reason],
        ["Slots", slots(worker)],
        ["Labels", pairs(worker.labels)],
        ["Job types", worker.jobTypes && worker.jobTypes.length > 0 ? worker.jobTypes.join(", ") : "any"],
        [
          "Orchestrators",
          worker.orchestrators && worker.orchestrators.length > 0
            ? h("ul", { class: "plain" }, worker.orchestrators.map((o) => h("li", {}, h("span", { class: "mono" }, o.id), ` ${o.state}, ${o.busy} busy${o.reason ? `: ${o.reason}` : ""}`)))
            : undefined,
        ],
        ["Last report", worker.lastSeenAt === undefined ? undefined : time(worker.lastSeenAt)],
        ["Running", running(worker)],
      ]),
      h(
        "section",
        { "aria-labelledby": "history" },
        h("h2", { id: "history" }, "Health history"),
        table({
          caption: "State changes, newest first",
          captionHidden: true,
          columns: [
            { label: "When", cell: (e) => time(e.at) },
            { label: "Change", cell: (e) => [badge(e.from), " → ", badge(e.to)] },
            { label: "Reason", cell: (e) => e.reason ?? "" },
            { label: "Seen by", cell: (e) => (e.orchestratorId ? h("span", { class: "mono" }, e.orchestratorId) : "") },
          ],
          rows: [...(worker.history ?? [])].sort((a, b) => b.at - a.at),
          empty: "No state change recorded yet.",
        }),
      ),
    );
  };
  await render();
  return follow(app, render);
};
