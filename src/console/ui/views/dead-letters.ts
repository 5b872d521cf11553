/** Dead letters: why each job is there and its history; redrive one, the selected, or all. */
import { api } from "../api.ts";
import type { ConsoleDeadLetter } from "../api-types.ts";
import type { App } from "../app.ts";
import { h, replace, table } from "../dom.ts";
import { jobLink, time } from "../format.ts";
import { debounce } from "../live.ts";
import type { View } from "../main.ts";

function history(letter: ConsoleDeadLetter): HTMLElement | string {
  const attempts = letter.attempts ?? [];
  if (attempts.length === 0) return letter.redrives > 0 ? `redriven ${letter.redrives}×` : "—";
  return h(
    "ol",
    { class: "plain history" },
    attempts.map((a) =>
      h("li", {}, `#${a.number}${a.round > 0 ? ` (round ${a.round + 1})` : ""} ${a.outcome ?? "running"}${a.workerId ? ` on ${a.workerId}` : ""}${a.error ? `: ${a.error.message}` : ""}`),
    ),
  );
}

async function redrive(app: App, ids: string[], after: () => void): Promise<void> {
  if (ids.length === 0) return;
  const result = await app.run(`Redrive ${ids.length} job${ids.length === 1 ? "" : "s"}`, () => api.redrive(ids));
  if (result) app.toast(`Redriven: ${result.redriven.length}${result.missing.length > 0 ? `; no longer in the dead-letter queue: ${result.missing.length}` : ""}.`);
  after();
}

/** The dead-letter queue. */
export const deadLettersView: View = async (app, root) => {
  const body = h("div", {});
  replace(root, h("h1", {}, "Dead letters"), body);
  const render = async () => {
    const { deadLetters } = await api.deadLetters();
    const selected = new Set<string>();
    const redriveSelected = app.actionButton("redrive", "Redrive selected", () => void redrive(app, [...selected], () => void render()));
    const sync = () => {
      if (app.can("redrive")) redriveSelected.disabled = selected.size === 0;
    };
    sync();
    replace(
      body,
      h("p", { class: "summary" }, `${deadLetters.length} job${deadLetters.length === 1 ? "" : "s"} in the dead-letter queue.`),
      deadLetters.length > 0
        ? h(
            "div",
            { class: "buttons", role: "group", "aria-label": "Redrive" },
            redriveSelected,
            app.actionButton("redrive", `Redrive all ${deadLetters.length}`, () => void redrive(app, deadLetters.map((d) => d.jobId), () => void render())),
          )
        : null,
      table({
        caption: "Jobs in the dead-letter queue, newest first",
        captionHidden: true,
        columns: [
          {
            label: "Select",
            cell: (d) => {
              const box = h("input", { type: "checkbox", "aria-label": `Select job ${d.jobId}`, disabled: !app.can("redrive") });
              box.addEventListener("change", () => {
                if (box.checked) selected.add(d.jobId);
                else selected.delete(d.jobId);
                sync();
              });
              return box;
            },
          },
          { label: "Job", cell: (d) => jobLink(d.jobId) },
          { label: "Type", cell: (d) => d.type },
          { label: "Reason", cell: (d) => d.reason },
          { label: "Dead-lettered", cell: (d) => time(d.deadLetteredAt) },
          { label: "History", cell: history },
          { label: "Actions", cell: (d) => app.actionButton("redrive", "Redrive", () => void redrive(app, [d.jobId], () => void render()), { "aria-label": `Redrive job ${d.jobId}` }) },
        ],
        rows: deadLetters,
        rowKey: (d) => d.jobId,
        empty: "The dead-letter queue is empty.",
      }),
    );
  };
  await render();
  const again = debounce(() => void render().catch(() => {}), 400);
  const offs = [
    app.live.on("job", (event) => {
      if (event.kind === "result" || (event.kind === "state" && event.state === "queued")) again();
    }),
    app.live.on("resync", again),
  ];
  return () => {
    for (const off of offs) off();
    again.cancel();
  };
};
